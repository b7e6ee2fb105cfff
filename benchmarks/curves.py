#!/usr/bin/env python3
"""Scaling curves: broker memory and time per item as the work grows, with PNG plots.

    .venv/bin/python benchmarks/curves.py [--quick] [--families a,b] [--brokers a,b]
                                          [--out FILE] [--plots-dir DIR] [--from-json FILE]

Four families of work, each at several sizes; for every family, size and broker a fresh broker
is started (benchmarks/run.py's BrokerProcess: pinned to CPU 0, a free 127.0.0.1 port, its own
working directory; mosquitto with run.py's generated config), this process drives it from CPU 1
(one asyncio loop, uvloop, its own minimal MQTT encoder), and the broker is stopped:

- ``connections``: N clients (MQTT 3.1.1, clean session, keep-alive 60, a will) connect and stay
  connected. Broker RSS per connection, connect time per connection.
- ``pending_wills``: N MQTT 5 clients (Session Expiry 600 s, Will Delay Interval 300 s) connect and
  drop their TCP connection (RST), in batches, so that N wills are pending in the broker. RSS per
  pending will; then whether the broker stays responsive: a fresh client's CONNECT -> CONNACK time
  and a publish -> delivery round trip. An observer checks that no will fired early.
- ``retained``: N retained QoS 0 messages (64-byte payload, topics r/<i // 1000>/<i>) pipelined by
  one publisher. RSS per retained message, store time per message; then the latency of a subscribe
  to one exact topic (its retained message back) and to the wildcard subtree r/0/+ (1,000 retained
  messages at every size).
- ``subscriptions``: 1,000 clients hold N filters between them (exact, '+' and '#' mixed, 100 per
  SUBSCRIBE packet), plus 5 filters that match the probe topic. RSS per subscription, subscribe
  time per subscription; then the publish -> delivery latency (p50/p99) of probe messages, at a
  dedicated subscriber.

"Before" RSS is read once the broker is idle with the family's fixed clients connected, "after"
once it is idle again (its CPU time has stopped moving), from /proc/PID/status (VmRSS). Every
measurement has a time limit; a broker that fails or times out at one size is not run at the
larger sizes of that family. Results go to benchmarks/results/curves-<UTC time>.json (gitignored),
one PNG per family to docs/img/ (``--plots-dir``), and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (benchmarks/run.py: brokers, machine facts)
from loadgen import wire  # noqa: E402  (benchmarks/loadgen/wire.py: its minimal MQTT encoder)
from loadgen.wire import packet, utf8  # noqa: E402

HOST = "127.0.0.1"
# client sockets are spread over these source addresses, so that the ephemeral ports of one
# address (~28k) never run out, whatever TIME_WAIT an earlier run left behind
SOURCE_ADDRS = [f"127.0.0.{i}" for i in range(2, 18)]
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
LINGER_RST = struct.pack("ii", 1, 0)  # close() sends RST: no TIME_WAIT, and the broker sees a dropped connection
CLK_TCK = os.sysconf("SC_CLK_TCK")
BROKERS = ("mosquitto", "lastwill", "lastwill-memory")
SHORT = {"mosquitto": "m", "lastwill": "l", "lastwill-memory": "lm"}
FD_RESERVE = 100  # descriptors kept free below RLIMIT_NOFILE (the broker's listener and store, the driver's own)


# ---------------------------------------------------------------------------------------------
# minimal MQTT encoding (client -> server)
# ---------------------------------------------------------------------------------------------

def connect_v4(client_id: str, keep_alive: int = 60, will: tuple[str, bytes] | None = None) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, optional QoS 0 will."""
    return wire.connect_packet(client_id, 4, keep_alive, True, None if will is None else (*will, 0))


def connect_v5(client_id: str, keep_alive: int, session_expiry: int, will: tuple[str, bytes],
               will_delay: int) -> bytes:
    """MQTT 5 CONNECT, Clean Start, Session Expiry Interval, QoS 0 will with a Will Delay Interval."""
    return wire.connect_packet(client_id, 5, keep_alive, True, (*will, 0),
                               props=wire.prop_u32(wire.SESSION_EXPIRY_INTERVAL, session_expiry),
                               will_props=wire.prop_u32(wire.WILL_DELAY_INTERVAL, will_delay))


def subscribe_v4(pid: int, filters: list[str], qos: int = 0) -> bytes:
    return packet(0x82, pid.to_bytes(2, "big") + b"".join(utf8(f) + bytes((qos,)) for f in filters))


def unsubscribe_v4(pid: int, filters: list[str]) -> bytes:
    return packet(0xA2, pid.to_bytes(2, "big") + b"".join(utf8(f) for f in filters))


def publish_v4(topic: str, payload: bytes, retain: bool = False) -> bytes:
    return packet(0x31 if retain else 0x30, utf8(topic) + payload)


PINGREQ = b"\xc0\x00"
PAYLOAD = b"x" * 64


# ---------------------------------------------------------------------------------------------
# the driver's connections
# ---------------------------------------------------------------------------------------------

class Conn(asyncio.Protocol):
    """One client connection: walks incoming packets by fixed header. ``expect(ptype)`` returns a
    future for the next packet of that type (its body); PUBLISHes are counted, and ``pub_done``
    resolves (with the arrival time) once ``pub_target`` have arrived."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.closed = False
        self.waiters: dict[int, list[asyncio.Future]] = {}
        self.pub_count = 0
        self.pub_target = 0
        self.pub_done: asyncio.Future | None = None
        self.arrivals: dict[bytes, float] | None = None  # topic -> first arrival (perf_counter), if set
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.writable.set()
        for futs in self.waiters.values():
            for f in futs:
                if not f.done():
                    f.set_exception(ConnectionError(f"connection lost ({exc})"))
                    f.exception()  # retrieved: no "never retrieved" noise if nobody awaits it
        if self.pub_done is not None and not self.pub_done.done():
            self.pub_done.set_exception(ConnectionError(f"connection lost ({exc})"))
            self.pub_done.exception()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def expect(self, ptype: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(ptype, []).append(fut)
        return fut

    def watch_publishes(self, target: int) -> asyncio.Future:
        self.pub_count = 0
        self.pub_target = target
        self.pub_done = asyncio.get_running_loop().create_future()
        return self.pub_done

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf)
        i = 0
        pubs = 0
        while n - i >= 2:
            rl, mult, h = 0, 1, i + 1
            while True:
                if h >= n:
                    rl = -1
                    break
                b = buf[h]
                h += 1
                rl += (b & 127) * mult
                if b < 128:
                    break
                mult <<= 7
            if rl < 0 or h + rl > n:
                break
            ptype = buf[i] >> 4
            if ptype == 3:
                pubs += 1
                if self.arrivals is not None:
                    topic = bytes(buf[h + 2:h + 2 + ((buf[h] << 8) | buf[h + 1])])
                    self.arrivals.setdefault(topic, time.perf_counter())
            else:
                futs = self.waiters.get(ptype)
                while futs:
                    f = futs.pop(0)
                    if not f.done():
                        f.set_result(bytes(buf[h:h + rl]))
                        break
            i = h + rl
        self.buf = buf[i:] if i < n else b""
        if pubs:
            self.pub_count += pubs
            if self.pub_target and self.pub_count >= self.pub_target and self.pub_done is not None \
                    and not self.pub_done.done():
                self.pub_done.set_result(time.perf_counter())

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # SO_LINGER 0 on the socket: an RST


class Driver:
    """Opens client connections to one broker and closes them all at the end."""

    def __init__(self, port: int, pid: int):
        self.port, self.pid = port, pid
        self.conns: list[Conn] = []
        self.n = 0

    async def open(self) -> Conn:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((SOURCE_ADDRS[self.n % len(SOURCE_ADDRS)], 0))
            self.n += 1
            await loop.sock_connect(sock, (HOST, self.port))
            _, proto = await loop.create_connection(Conn, sock=sock)
        except BaseException:
            sock.close()
            raise
        self.conns.append(proto)
        return proto

    async def connect(self, pkt: bytes, timeout: float = 30.0) -> Conn:
        c = await self.open()
        fut = c.expect(2)
        c.transport.write(pkt)
        body = await asyncio.wait_for(fut, timeout)
        if body[1] != 0:  # CONNACK return code (3.1.1) / reason code (5)
            raise RuntimeError(f"CONNACK refused: code {body[1]:#x}")
        return c

    async def connect_many(self, n: int, make_packet, concurrency: int = 64) -> list[Conn]:
        out: list[Conn | None] = [None] * n
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                out[i] = await self.connect(make_packet(i))
        await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
        return out  # type: ignore[return-value]

    async def subscribe(self, c: Conn, filters: list[str], pid: int = 1, timeout: float = 30.0) -> None:
        fut = c.expect(9)
        c.transport.write(subscribe_v4(pid, filters))
        codes = await asyncio.wait_for(fut, timeout)
        if any(x >= 0x80 for x in codes[2:]):
            raise RuntimeError(f"SUBSCRIBE refused: {codes[2:].hex()}")

    def close_all(self) -> None:
        for c in self.conns:
            c.abort()
        self.conns.clear()


# ---------------------------------------------------------------------------------------------
# broker-side readings
# ---------------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def settle(pid: int, max_s: float = 60.0) -> float:
    """Wait until the broker is idle: two 0.25 s windows in a row with at most one clock tick of
    CPU time. Returns the seconds waited."""
    t0 = time.monotonic()
    last = cpu_s(pid)
    quiet = 0
    while time.monotonic() - t0 < max_s:
        await asyncio.sleep(0.25)
        now = cpu_s(pid)
        quiet = quiet + 1 if now - last <= 1.0 / CLK_TCK + 1e-9 else 0
        last = now
        if quiet >= 2:
            break
    return round(time.monotonic() - t0, 2)


def cores_busy() -> tuple[int, int]:
    """(busy jiffies, all jiffies) of CPUs 0 and 1 together, from /proc/stat."""
    busy = total = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(("cpu0 ", "cpu1 ")):
                v = [int(x) for x in line.split()[1:9]]
                total += sum(v)
                busy += sum(v) - v[3] - v[4]  # minus idle and iowait
    except (OSError, ValueError):
        pass
    return busy, total


class Phase:
    """Wall time over one phase, the CPU of the broker and of this driver, and what the two cores
    spent on anything else (other engineers' processes on this shared machine), in % of one core."""

    def __init__(self, pid: int):
        self.pid = pid
        self.t0, self.b0, self.d0, self.c0 = time.perf_counter(), cpu_s(pid), own_cpu_s(), cores_busy()

    def end(self) -> dict:
        dt_ = time.perf_counter() - self.t0
        broker = 100 * (cpu_s(self.pid) - self.b0) / dt_
        driver = 100 * (own_cpu_s() - self.d0) / dt_
        busy, total = cores_busy()
        both = 200 * (busy - self.c0[0]) / max(1, total - self.c0[1])  # the two cores, 200 = both busy
        if dt_ < 0.2:  # a few clock ticks (1/CLK_TCK s each): the percentages would be noise
            return {"s": dt_, "broker_cpu_pct": None, "driver_cpu_pct": None, "other_cpu_pct": None}
        return {"s": dt_, "broker_cpu_pct": round(broker, 1), "driver_cpu_pct": round(driver, 1),
                "other_cpu_pct": round(max(0.0, both - broker - driver), 1)}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))  # nearest rank
    return s[k]


async def round_trips(pub: Conn, sub: Conn, topic: str, count: int, warmup: int = 20,
                      timeout: float = 10.0) -> list[float]:
    """Publish (QoS 0) on ``pub`` one at a time, each once the previous arrived at ``sub``: ms each."""
    pkt = publish_v4(topic, PAYLOAD)
    out = []
    for k in range(warmup + count):
        done = sub.watch_publishes(1)
        t0 = time.perf_counter()
        pub.transport.write(pkt)
        t1 = await asyncio.wait_for(done, timeout)
        if k >= warmup:
            out.append(1000 * (t1 - t0))
    return out


def summary_ms(values: list[float], prefix: str) -> dict:
    return {f"{prefix}_p50_ms": round(pct(values, 50), 3), f"{prefix}_p99_ms": round(pct(values, 99), 3),
            f"{prefix}_max_ms": round(max(values), 3)}


# ---------------------------------------------------------------------------------------------
# the families
# ---------------------------------------------------------------------------------------------

async def fam_connections(d: Driver, n: int) -> dict:
    await settle(d.pid)
    before = rss_kib(d.pid)
    ph = Phase(d.pid)
    await d.connect_many(n, lambda i: connect_v4(f"cv-{i}", 60, (f"cv/will/{i}", b"gone")))
    p = ph.end()
    settled = await settle(d.pid)
    after = rss_kib(d.pid)
    # still all there (no connection dropped by the broker)
    alive = sum(1 for c in d.conns if not c.closed)
    return {"rss_before_kib": before, "rss_after_kib": after, "rss_per_item_kib": (after - before) / n,
            "us_per_item": 1e6 * p["s"] / n, "per_s": n / p["s"], "connected_at_end": alive,
            "phase_s": round(p["s"], 3), "broker_cpu_pct": p["broker_cpu_pct"],
            "driver_cpu_pct": p["driver_cpu_pct"], "other_cpu_pct": p["other_cpu_pct"], "settle_s": settled}


async def fam_pending_wills(d: Driver, n: int, batch: int = 5000) -> dict:
    obs = await d.connect(connect_v4("pw-observer", 0))
    await d.subscribe(obs, ["pw/#"])
    obs.watch_publishes(0)
    await settle(d.pid)
    before = rss_kib(d.pid)
    ph = Phase(d.pid)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        conns = await d.connect_many(m, lambda i, s=start: connect_v5(
            f"pw-{s + i}", 60, session_expiry=600, will=(f"pw/{s + i}", b"gone"), will_delay=300))
        for c in conns:
            c.abort()  # RST: a dropped connection, no DISCONNECT: the will is now pending (delay 300 s)
        gone = {id(c) for c in conns}
        d.conns = [c for c in d.conns if id(c) not in gone]
    p = ph.end()
    settled = await settle(d.pid)
    after = rss_kib(d.pid)
    # responsiveness with all of them pending
    connect_ms = []
    for k in range(50):
        t0 = time.perf_counter()
        c = await d.connect(connect_v4(f"pw-fresh-{k}", 60))
        connect_ms.append(1000 * (time.perf_counter() - t0))
        c.abort()
    sub = await d.connect(connect_v4("pw-rt-sub", 60))
    await d.subscribe(sub, ["rt/x"])
    pub = await d.connect(connect_v4("pw-rt-pub", 60))
    rtt = await round_trips(pub, sub, "rt/x", 200)
    punct = await delayed_wills(d, 1000, 2)
    return {"rss_before_kib": before, "rss_after_kib": after, "rss_per_item_kib": (after - before) / n,
            "us_per_item": 1e6 * p["s"] / n, "per_s": n / p["s"], "wills_fired_early": obs.pub_count,
            **summary_ms(connect_ms, "fresh_connect"), **summary_ms(rtt, "roundtrip"), **punct,
            "phase_s": round(p["s"], 3), "broker_cpu_pct": p["broker_cpu_pct"],
            "driver_cpu_pct": p["driver_cpu_pct"], "other_cpu_pct": p["other_cpu_pct"], "settle_s": settled}


async def delayed_wills(d: Driver, n: int, delay: int, grace: float = 10.0) -> dict:
    """``n`` more MQTT 5 clients with a Will Delay Interval of ``delay`` s drop at once (RST, all in one
    loop turn); an observer records each will's arrival. The delay past the deadline is measured from
    when the RST was sent, so it includes the loopback hop (an upper bound)."""
    obs = await d.connect(connect_v4("pd-observer", 0))
    await d.subscribe(obs, ["pd/#"])
    obs.arrivals = {}
    conns = await d.connect_many(n, lambda i: connect_v5(f"pd-{i}", 60, session_expiry=600,
                                                         will=(f"pd/{i}", b"gone"), will_delay=delay))
    dropped = []
    for c in conns:
        c.abort()
        dropped.append(time.perf_counter())
    give_up = time.perf_counter() + delay + grace
    while len(obs.arrivals) < n and time.perf_counter() < give_up:
        await asyncio.sleep(0.01)
    late = sorted(1000 * (obs.arrivals[f"pd/{i}".encode()] - (dropped[i] + delay))
                  for i in range(n) if f"pd/{i}".encode() in obs.arrivals)
    out = {"delayed_wills": n, "delayed_wills_received": len(late)}
    if late:
        out.update({"delayed_will_late_p50_ms": round(pct(late, 50), 1),
                    "delayed_will_late_p99_ms": round(pct(late, 99), 1),
                    "delayed_will_late_max_ms": round(late[-1], 1),
                    "delayed_will_early_min_ms": round(late[0], 1)})
    return out


def retained_topic(i: int) -> str:
    return f"r/{i // 1000}/{i}"


async def fam_retained(d: Driver, n: int) -> dict:
    pub = await d.connect(connect_v4("rt-pub", 0))
    sub = await d.connect(connect_v4("rt-sub", 0))
    per_blob = 1000
    blobs = [b"".join(publish_v4(retained_topic(i), PAYLOAD, retain=True) for i in range(s, min(n, s + per_blob)))
             for s in range(0, n, per_blob)]
    await settle(d.pid)
    before = rss_kib(d.pid)
    ph = Phase(d.pid)
    for blob in blobs:
        if not pub.writable.is_set():
            await pub.writable.wait()
        if pub.closed:
            raise ConnectionError("the broker closed the publisher")
        pub.transport.write(blob)
    pong = pub.expect(13)
    pub.transport.write(PINGREQ)  # answered after every PUBLISH before it was read
    await pong
    p = ph.end()
    del blobs
    settled = await settle(d.pid)
    after = rss_kib(d.pid)
    # a subscribe to one exact topic: its retained message back (a different topic each time)
    exact_ms = []
    for k in range(10):
        done = sub.watch_publishes(1)
        suback = sub.expect(9)
        t0 = time.perf_counter()
        sub.transport.write(subscribe_v4(1, [retained_topic(7 + 37 * k)]))
        t1 = await asyncio.wait_for(done, 60)
        await suback
        exact_ms.append(1000 * (t1 - t0))
    # a subscribe to the subtree r/0/+ (1,000 retained messages at every size), unsubscribed between
    wild_ms = []
    for _ in range(5):
        done = sub.watch_publishes(1000)
        suback = sub.expect(9)
        t0 = time.perf_counter()
        sub.transport.write(subscribe_v4(2, ["r/0/+"]))
        t1 = await asyncio.wait_for(done, 60)
        await suback
        wild_ms.append(1000 * (t1 - t0))
        unsuback = sub.expect(11)
        sub.transport.write(unsubscribe_v4(3, ["r/0/+"]))
        await asyncio.wait_for(unsuback, 30)
    return {"rss_before_kib": before, "rss_after_kib": after, "rss_per_item_kib": (after - before) / n,
            "us_per_item": 1e6 * p["s"] / n, "per_s": n / p["s"],
            "exact_sub_p50_ms": round(statistics.median(exact_ms), 3), "exact_sub_max_ms": round(max(exact_ms), 3),
            "wild_sub_p50_ms": round(statistics.median(wild_ms), 3), "wild_sub_max_ms": round(max(wild_ms), 3),
            "phase_s": round(p["s"], 3), "broker_cpu_pct": p["broker_cpu_pct"],
            "driver_cpu_pct": p["driver_cpu_pct"], "other_cpu_pct": p["other_cpu_pct"], "settle_s": settled}


PROBE_TOPIC = "probe/lat"
PROBE_MATCHES = ["probe/lat", "probe/+", "probe/#", "+/lat", "#"]  # held by subscriber clients 0..4


def bulk_filter(c: int, j: int) -> str:
    """Filter j of client c: exact, '+' in the middle, '#' at the end, '+' first, in turn."""
    kind = (c + j) % 4
    if kind == 0:
        return f"s/{c}/{j}/t"
    if kind == 1:
        return f"s/{c}/+/t{j}"
    if kind == 2:
        return f"s/{c}/{j}/#"
    return f"+/{c}/{j}/t"


async def fam_subscriptions(d: Driver, n: int, clients: int = 1000, per_packet: int = 100) -> dict:
    clients = min(clients, n)
    subs = await d.connect_many(clients, lambda c: connect_v4(f"sv-{c}", 0))
    probe_sub = await d.connect(connect_v4("sv-probe-sub", 0))
    await d.subscribe(probe_sub, [PROBE_TOPIC])
    probe_pub = await d.connect(connect_v4("sv-probe-pub", 0))
    per_client = [n // clients + (1 if c < n % clients else 0) for c in range(clients)]
    packets: list[list[bytes]] = []
    for c in range(clients):
        filters = [bulk_filter(c, j) for j in range(per_client[c])]
        if c < len(PROBE_MATCHES):
            filters.append(PROBE_MATCHES[c])
        packets.append([subscribe_v4(1 + k // per_packet, filters[k:k + per_packet])
                        for k in range(0, len(filters), per_packet)])
    total = n + min(clients, len(PROBE_MATCHES))
    await settle(d.pid)
    before = rss_kib(d.pid)
    ph = Phase(d.pid)

    async def subscribe_all(c: Conn, pkts: list[bytes]) -> None:
        futs = [c.expect(9) for _ in pkts]
        c.transport.write(b"".join(pkts))
        for f in futs:
            codes = await asyncio.wait_for(f, 120)
            if any(x >= 0x80 for x in codes[2:]):
                raise RuntimeError(f"SUBSCRIBE refused: {codes[2:].hex()}")
    await asyncio.gather(*(subscribe_all(c, pk) for c, pk in zip(subs, packets, strict=True)))
    p = ph.end()
    settled = await settle(d.pid)
    after = rss_kib(d.pid)
    lat = await round_trips(probe_pub, probe_sub, PROBE_TOPIC, 500, warmup=50)
    delivered = [subs[c].pub_count for c in range(min(clients, len(PROBE_MATCHES)))]
    return {"rss_before_kib": before, "rss_after_kib": after, "rss_per_item_kib": (after - before) / total,
            "us_per_item": 1e6 * p["s"] / total, "per_s": total / p["s"], "subscriptions": total,
            **summary_ms(lat, "delivery"), "probe_copies_at_matching_clients": delivered,
            "phase_s": round(p["s"], 3), "broker_cpu_pct": p["broker_cpu_pct"],
            "driver_cpu_pct": p["driver_cpu_pct"], "other_cpu_pct": p["other_cpu_pct"], "settle_s": settled}


class Family:
    """``columns``: (key, label, unit) for the table, the first being memory; ``panels``: one plot
    panel each, (keys, title, unit): the first key drawn solid, a second one dashed."""

    def __init__(self, name, fn, sizes, quick_sizes, timeout, item, columns, panels):
        self.name, self.fn, self.sizes, self.quick_sizes = name, fn, sizes, quick_sizes
        self.timeout, self.item, self.columns, self.panels = timeout, item, columns, panels


MEM = ("rss_per_item_kib",)
FAMILIES = {f.name: f for f in [
    Family("connections", fam_connections, [1000, 2000, 5000, 10000, 20000], [1000, 5000], 90, "connection",
           [("rss_per_item_kib", "RSS per connection", "KiB"),
            ("us_per_item", "connect time per connection (64 in parallel)", "µs")],
           [(MEM, "broker RSS per connection", "KiB"),
            (("us_per_item",), "connect time per connection (64 in parallel)", "µs")]),
    Family("pending_wills", fam_pending_wills, [1000, 10000, 50000, 100000], [1000, 10000], 300, "pending will",
           [("rss_per_item_kib", "RSS per pending will", "KiB"),
            ("us_per_item", "connect + drop time per client", "µs"),
            ("fresh_connect_p50_ms", "fresh CONNECT -> CONNACK, median of 50", "ms"),
            ("roundtrip_p50_ms", "publish -> delivery p50 (200)", "ms"),
            ("roundtrip_p99_ms", "publish -> delivery p99 (200)", "ms"),
            ("wills_fired_early", "wills published early", ""),
            ("delayed_will_late_p99_ms", "then 1,000 wills with a 2 s delay dropped at once: lateness p99", "ms"),
            ("delayed_wills_received", "of them received", "")],
           [(MEM, "broker RSS per pending will", "KiB"),
            (("us_per_item",), "connect + drop time per client", "µs"),
            (("fresh_connect_p50_ms",), "fresh CONNECT -> CONNACK (median of 50)", "ms"),
            (("roundtrip_p50_ms", "roundtrip_p99_ms"), "publish -> delivery, p50 solid, p99 dashed", "ms"),
            (("delayed_will_late_p50_ms", "delayed_will_late_p99_ms"),
             "1,000 wills due at once: late by, p50 / p99", "ms")]),
    Family("retained", fam_retained, [1000, 10000, 100000, 1000000], [1000, 10000], 300, "retained message",
           [("rss_per_item_kib", "RSS per retained message", "KiB"),
            ("us_per_item", "store time per message (pipelined)", "µs"),
            ("exact_sub_p50_ms", "SUBSCRIBE one exact topic -> its retained message, median of 10", "ms"),
            ("wild_sub_p50_ms", "SUBSCRIBE r/0/+ -> its 1,000 retained messages, median of 5", "ms")],
           [(MEM, "broker RSS per retained message", "KiB"),
            (("us_per_item",), "store time per message (pipelined)", "µs"),
            (("exact_sub_p50_ms",), "SUBSCRIBE exact topic -> retained msg", "ms"),
            (("wild_sub_p50_ms",), "SUBSCRIBE r/0/+ -> 1,000 retained msgs", "ms")]),
    Family("subscriptions", fam_subscriptions, [1000, 10000, 100000], [1000, 10000], 180, "subscription",
           [("rss_per_item_kib", "RSS per subscription", "KiB"),
            ("us_per_item", "subscribe time per filter (100 per SUBSCRIBE)", "µs"),
            ("delivery_p50_ms", "publish -> delivery p50 (500)", "ms"),
            ("delivery_p99_ms", "publish -> delivery p99 (500)", "ms")],
           [(MEM, "broker RSS per subscription", "KiB"),
            (("us_per_item",), "subscribe time per filter (100 per SUBSCRIBE)", "µs"),
            (("delivery_p50_ms", "delivery_p99_ms"), "publish -> delivery, p50 solid, p99 dashed", "ms")]),
]}


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------

def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_loop(coro):
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def measure(fam: Family, size: int, kind: str, args, workdir: Path) -> dict:
    rec = {"family": fam.name, "size": size, "broker": kind, "load_before": bench.loadavg()}
    t0 = time.monotonic()
    try:
        broker = bench.BrokerProcess(kind, workdir)
    except RuntimeError as e:
        rec["failed"] = str(e)
        return rec
    watch = bench.RssWatch(broker, args.rss_limit_mb * 1024)
    watch.start()
    driver = Driver(broker.port, broker.pid)

    async def go():
        try:
            return await asyncio.wait_for(fam.fn(driver, size), fam.timeout * args.timeout_scale)
        finally:
            driver.close_all()
    try:
        rec.update(run_loop(go()))
    except asyncio.TimeoutError:
        rec["failed"] = f"timed out after {fam.timeout * args.timeout_scale:.3g} s"
    except Exception as e:  # recorded, not hidden
        rec["failed"] = f"{type(e).__name__}: {e}"
    except BaseException:  # Ctrl-C: the broker (its own session) must not outlive us
        broker.stop()
        raise
    watch.done.set()
    watch.join()
    rec["broker_alive_at_end"] = broker.proc.poll() is None
    rec["broker_killed_for_rss"] = broker.killed_for_rss
    stop = broker.stop()
    rec["broker_peak_rss_kib"] = broker.peak_rss_kb
    rec["data_dir_bytes"] = stop.get("data_dir_bytes")
    rec["broker_exit_code"] = stop.get("exit_code")
    problems = [line for line in broker.log_text().splitlines()
                if any(w in line for w in ("ERROR", "Error", "Traceback", "CRITICAL"))]
    rec["broker_log_problems"] = problems[:10]
    if broker.killed_for_rss and "failed" not in rec:
        rec["failed"] = f"killed above --rss-limit-mb {args.rss_limit_mb}"
    rec["elapsed_s"] = round(time.monotonic() - t0, 2)
    rec["load_after"] = bench.loadavg()
    shutil.rmtree(broker.dir, ignore_errors=True)
    return rec


def fmt(v, key: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if key.endswith("_ms"):
            return f"{v:,.2f}"
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def tables(meta: dict, records: list[dict]) -> str:
    brokers = meta["brokers"]
    short = " / ".join(SHORT.get(b, b) for b in brokers)
    out = []
    for name in meta["families"]:
        fam = FAMILIES[name]
        recs = [r for r in records if r["family"] == name]
        sizes = sorted({r["size"] for r in recs})
        out.append(f"**{name}** (per {fam.item}; cells: {short})\n")
        head = ("| size | " + " | ".join(f"{label}{', ' + unit if unit else ''}" for _, label, unit in fam.columns)
                + " | CPU % broker:driver:other, timed phase |")
        out.append(head)
        out.append("|" + "---:|" * (2 + len(fam.columns)))
        for size in sizes:
            row = {b: next((r for r in recs if r["size"] == size and r["broker"] == b), None) for b in brokers}
            cells = []
            for key, _, _ in fam.columns:
                cells.append(" / ".join("—" if r is None else "failed" if "failed" in r else fmt(r.get(key), key)
                                        for r in row.values()))
            cells.append(" / ".join("—" if r is None or "failed" in r or r.get("broker_cpu_pct") is None
                                    or r.get("phase_s", 0) < 0.2 else
                                    f"{r['broker_cpu_pct']:.0f}:{r['driver_cpu_pct']:.0f}:{r.get('other_cpu_pct', 0):.0f}"
                                    for r in row.values()))
            out.append(f"| {size:,} | " + " | ".join(cells) + " |")
        failed = [r for r in recs if "failed" in r]
        for r in failed:
            out.append(f"\n{r['broker']} at {r['size']:,}: {r['failed']}")
        out.append("")
    return "\n".join(out)


def env_lines(meta: dict) -> str:
    m = meta["machine"]
    return "\n".join([
        f"- date: {m['date_utc']} (run took {meta['elapsed_s']:.0f} s{', --quick' if meta.get('quick') else ''})",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}; "
        f"RLIMIT_NOFILE {meta['nofile']}",
        f"- software: Python {m['python']}, uvloop {m['uvloop']}, {m['mosquitto']}, "
        f"lastwill {m['lastwill']} at {m['git_commit']}",
        "- brokers: " + ", ".join(f"{SHORT.get(b, b)} = {b}" for b in meta["brokers"])
        + " (lastwill = its defaults: durable SQLite in a fresh working directory, fsync batch; "
          "lastwill-memory = --memory; mosquitto = run.py's MOSQUITTO_CONF)",
        "- pinning: broker on CPU 0, driver (this process) on CPU 1",
        f"- load average (1/5/15 min) before: {meta['load_before']}, after: {meta['load_after']}",
    ])


def plot(meta: dict, records: list[dict], plots_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    styles = {"mosquitto": ("tab:gray", "s"), "lastwill": ("tab:blue", "o"), "lastwill-memory": ("tab:orange", "^")}
    for name in meta["families"]:
        fam = FAMILIES[name]
        recs = [r for r in records if r["family"] == name and "failed" not in r]
        if not recs:
            continue
        k = len(fam.panels)
        cols = min(3, k)
        rows = -(-k // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows + 0.4), squeeze=False)
        flat = [ax for row in axes for ax in row]
        for ax in flat[k:]:
            ax.set_visible(False)
        for ax, (keys, label, unit) in zip(flat[:k], fam.panels, strict=True):
            top = []
            for b in meta["brokers"]:
                color, marker = styles.get(b, (None, "x"))
                for n, key in enumerate(keys):
                    pts = sorted((r["size"], r[key]) for r in recs if r["broker"] == b and r.get(key) is not None)
                    if not pts:
                        continue
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, color=color,
                            linestyle="-" if n == 0 else "--", label=b if n == 0 else None)
                    top += [y for _, y in pts]
            ax.set_xscale("log")
            positive = [y for y in top if y > 0]
            if positive and max(positive) / min(positive) > 50:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0, top=max(top) * 1.15 if top and max(top) > 0 else 1)
            ax.set_xlabel(f"{fam.item}s (log)")
            ax.set_ylabel(unit)
            ax.set_title(label, fontsize=9, wrap=True)
            ax.grid(True, which="both", alpha=0.3)
        flat[0].legend(fontsize=8)
        m = meta["machine"]
        fig.suptitle(f"{name}: per {fam.item}, as the count grows ({m['date_utc'][:16]} UTC, "
                     f"{m['cpu_model'] or '?'}, load {meta['load_before']})", fontsize=10)
        fig.tight_layout()
        path = plots_dir / f"curves-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the two smallest sizes of each family (~2 min)")
    p.add_argument("--families", help=f"comma-separated, from: {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--brokers", default=",".join(BROKERS),
                   help=f"comma-separated, from: mosquitto, {', '.join(bench.LASTWILL_VARIANTS)} "
                        f"(default {','.join(BROKERS)})")
    p.add_argument("--sizes", help="override the sizes of every chosen family, e.g. 1000,5000")
    p.add_argument("--out", help="JSON file (default benchmarks/results/curves-<UTC time>.json)")
    p.add_argument("--plots-dir", default=str(bench.ROOT / "docs" / "img"), help="where the PNGs go")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--from-json", metavar="FILE", help="re-plot and re-print an earlier run's JSON")
    p.add_argument("--rss-limit-mb", type=int, default=6144, help="kill a broker above this RSS (0 = never)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every per-size time limit")
    p.add_argument("--mosquitto-nodelay", action="store_true",
                   help="add 'set_tcp_nodelay true' to mosquitto's config (its default, false, leaves Nagle's "
                        "algorithm on, which delays a second small write ~40 ms behind a delayed ACK)")
    args = p.parse_args(argv)
    if args.mosquitto_nodelay:
        bench.MOSQUITTO_CONF += "set_tcp_nodelay true\n"

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        meta, records = saved["meta"], saved["records"]
        print(env_lines(meta) + "\n\n" + tables(meta, records))
        if not args.no_plots:
            for path in plot(meta, records, Path(args.plots_dir)):
                print(f"plot: {path}")
        return 0

    families = [f.strip() for f in (args.families or ",".join(FAMILIES)).split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown famil(ies) {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    bad = [b for b in brokers if b != "mosquitto" and b not in bench.LASTWILL_VARIANTS]
    if bad or not brokers:
        p.error(f"--brokers: unknown {', '.join(bad)}")
    for tool in ("taskset",) + (("mosquitto",) if "mosquitto" in brokers else ()):
        if not shutil.which(tool):
            p.error(f"{tool} not found (apt-get install util-linux mosquitto)")
    if (os.cpu_count() or 1) < 2:
        p.error("needs 2 CPUs (broker on CPU 0, driver on CPU 1)")
    try:  # the driver stays off the broker's core
        os.sched_setaffinity(0, {int(bench.LOADGEN_CPU)})
    except OSError:
        pass
    nofile = raise_nofile()  # the brokers inherit it
    max_conns = nofile - FD_RESERVE

    meta = {"machine": bench.machine_facts(), "load_before": bench.loadavg(), "quick": args.quick,
            "families": families, "brokers": brokers, "nofile": nofile,
            "mosquitto_conf": bench.MOSQUITTO_CONF.format(port="PORT"), "sizes": {}}
    for name in families:
        fam = FAMILIES[name]
        sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
                 else fam.quick_sizes if args.quick else fam.sizes)
        if name == "connections":  # held open: one descriptor each, in the broker and in the driver
            clipped = [min(s, max_conns) for s in sizes]
            if clipped != sizes:
                print(f"connections: sizes {sizes} clipped to {clipped} (RLIMIT_NOFILE {nofile} here)", flush=True)
            sizes = clipped
        meta["sizes"][name] = sizes
    print(f"{meta['machine']['date_utc']}  load {meta['load_before']}  families {', '.join(families)}  "
          f"brokers {', '.join(brokers)}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="lastwill-curves-"))
    records = []
    t0 = time.monotonic()
    try:
        for name in families:
            fam = FAMILIES[name]
            given_up: set[str] = set()
            for size in meta["sizes"][name]:
                for kind in brokers:
                    if kind in given_up:
                        continue
                    r = measure(fam, size, kind, args, workdir)
                    records.append(r)
                    if "failed" in r:
                        given_up.add(kind)
                        print(f"  {name:14s} {size:>8,} {kind:16s} FAILED: {r['failed']}", flush=True)
                        continue
                    extra = "  ".join(f"{k}={fmt(r.get(k), k)}" for k, _, _ in fam.columns[1:])
                    print(f"  {name:14s} {size:>8,} {kind:16s} rss/item {r['rss_per_item_kib']:7.2f} KiB  {extra}"
                          f"  ({r['elapsed_s']:.0f} s, "
                          + (f"broker cpu {r['broker_cpu_pct']}%, driver cpu {r['driver_cpu_pct']}%, other "
                             f"{r['other_cpu_pct']}%, " if r["broker_cpu_pct"] is not None else "")
                          + f"load {r['load_after']})"
                          + (f"  [{len(r['broker_log_problems'])} broker log problem line(s)]"
                             if r["broker_log_problems"] else ""), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    meta["load_after"] = bench.loadavg()
    bench.RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else bench.RESULTS / (
        "curves-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print()
    print(env_lines(meta))
    print()
    print(tables(meta, records))
    print(f"JSON: {out}")
    if not args.no_plots:
        for path in plot(meta, records, Path(args.plots_dir)):
            print(f"plot: {path}")
    return 1 if any("failed" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
