"""A socket fuzzer for a running broker: mutated MQTT sessions from several connections at once,
while well-behaved paho-mqtt clients keep publishing QoS 1 and check that they lose nothing.

Used by ``tests/integration/test_socket_fuzz.py`` (a bounded run in CI) and by
``scripts/fuzz_sockets.py`` (long runs: ``--duration``). One campaign:

* a ``lastwill serve`` process (``ServeProcess``), its log in a file;
* good clients (paho-mqtt 5.0): ``GOOD_PUBLISHERS`` QoS 1 publishers on ``good/<n>`` and one QoS 1
  subscriber on ``good/#``: every message the broker acknowledged must reach the subscriber;
* an observer (paho) on ``fuzzwill/#`` (QoS 1) and ``#`` (QoS 0), recording every will marker;
* ``connections`` fuzz workers (asyncio, raw sockets), each looping until the deadline: build a
  valid session from a seeded RNG (CONNECT of MQTT 3.1, 3.1.1 or 5.0, often with a will whose
  payload is a marker naming the connection, then SUBSCRIBE, PUBLISH of every QoS, acks, PINGREQ,
  UNSUBSCRIBE, AUTH, DISCONNECT...), encode it with lastwill's codec, mutate most of them (bit flips,
  byte changes, insertions, deletions, truncation, duplicated or swapped pieces, random fixed headers
  with random Remaining Lengths), send it split at random points with random pauses, read what comes
  back, and end the connection (FIN, RST, or waiting for the broker to close it).

Checked at the end:

* no good message lost (every acknowledged QoS 1 message received by the good subscriber);
* wills: a will marker is published at most once, and only for a connection that received
  CONNACK 0x00 [MQTT-3.1.2-7] (connections whose outcome the fuzzer could not see, because it reset
  them before reading a CONNACK, are left out); an unmutated session with a will and no DISCONNECT
  whose CONNECT was accepted has its will published exactly once [MQTT-3.1.2-8];
* what the broker sent to an unmutated session decodes at its protocol level;
* the broker never logged a traceback or an error, is still running, accepts a new connection at
  once, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Auth,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from lastwill.codec.primitives import encode_varint
from lastwill.errors import MqttError
from tests.integration.serve import ServeProcess

GOOD_PUBLISHERS = 2
WILL_PREFIX = b"fuzzwill:"


def will_marker(uid: int) -> bytes:
    """A will payload naming connection ``uid``, with a checksum: a mutated one is not mistaken."""
    body = str(uid).encode()
    return WILL_PREFIX + body + b":" + format(zlib.crc32(b"lastwill" + body), "08x").encode()


def parse_marker(payload: bytes) -> int | None:
    if not payload.startswith(WILL_PREFIX):
        return None
    parts = payload[len(WILL_PREFIX):].split(b":")
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    uid = int(parts[0])
    return uid if will_marker(uid) == payload else None


# ---- sessions and mutations ----------------------------------------------------------------------

FILTERS = ["fuzz/#", "fuzz/+/x", "fuzz/a", "$share/g/fuzz/#", "fuzz/+/+/+/+", "+/x", "#", "fuzz/\u00e9/#"]
TOPICS = ["fuzz/a", "fuzz/b/x", "fuzz/c/d/e", "fuzz/\u00e9/t", "fuzz/long/" + "l" * 300]


@dataclass
class Session:
    uid: int
    level: int
    packets: list
    will: bool
    has_disconnect: bool
    raw: bytes = b""
    mutated: bool = False
    ops: list[str] = field(default_factory=list)


def make_session(rng: random.Random, uid: int) -> Session:
    level = rng.choice([3, 4, 5, 5])
    v5 = level == 5
    with_will = rng.random() < 0.6
    client_id = rng.choice([f"fz-{uid}", f"fz-{uid}", f"fz-shared-{rng.randrange(3)}", ""])
    clean = client_id == "" or rng.random() < 0.8
    props = {}
    if v5:
        props["session_expiry_interval"] = rng.choice([0, 0, 0, 5])
        if rng.random() < 0.3:
            props["receive_maximum"] = rng.randint(1, 5)
        if rng.random() < 0.2:
            props["maximum_packet_size"] = rng.randint(40, 3000)
        if rng.random() < 0.3:
            props["topic_alias_maximum"] = rng.randint(0, 4)
    will = Will(f"fuzzwill/{uid}", will_marker(uid), rng.randint(0, 2), False, {}) if with_will else None
    packets: list = [Connect(client_id=client_id, clean_start=clean, keep_alive=rng.choice([0, 5, 60]),
                             protocol_level=level, protocol_name="MQIsdp" if level == 3 else "MQTT",
                             will=will, properties=props)]
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        pid = rng.randint(1, 12)
        if kind < 0.35:
            qos = rng.randint(0, 2)
            pprops = {}
            topic = rng.choice(TOPICS)
            if v5 and rng.random() < 0.3:
                pprops["topic_alias"] = rng.randint(1, 4)
                if rng.random() < 0.3:
                    topic = ""
            if v5 and rng.random() < 0.2:
                pprops["message_expiry_interval"] = rng.randint(1, 60)
            if v5 and rng.random() < 0.1:
                pprops["user_property"] = [("k", "v" * rng.randint(0, 50))]
            packets.append(Publish(topic, rng.randbytes(rng.choice([0, 10, 100, 1500])), qos,
                                   rng.random() < 0.05, False, pid if qos else None, pprops))
        elif kind < 0.5:
            subs = [Subscription(rng.choice(FILTERS), rng.randint(0, 2),
                                 *((rng.random() < 0.2, rng.random() < 0.2, rng.randint(0, 2)) if v5 else ()))
                    for _ in range(rng.randint(1, 3))]
            if v5:  # No Local on a shared subscription is a protocol error: keep it valid
                subs = [Subscription(s.topic_filter, s.qos, False, s.retain_as_published, s.retain_handling)
                        if s.topic_filter.startswith("$share/") else s for s in subs]
            packets.append(Subscribe(pid, subs, {"subscription_identifier": rng.randint(1, 9)}
                                     if v5 and rng.random() < 0.3 else {}))
        elif kind < 0.6:
            packets.append(Unsubscribe(pid, [rng.choice(FILTERS)]))
        elif kind < 0.8:
            packets.append(rng.choice([Puback, Pubrec, Pubrel, Pubcomp])(pid))
        elif kind < 0.95:
            packets.append(Pingreq())
        elif v5:
            packets.append(Auth(0x18, {"authentication_method": "x"}))
    has_disconnect = rng.random() < 0.3
    if has_disconnect:
        packets.append(Disconnect(rng.choice([0x00, 0x04, 0x80]) if v5 else 0))
    s = Session(uid, level, packets, with_will, has_disconnect)
    s.raw = b"".join(encode(p, level) for p in packets)
    return s


def mutate(rng: random.Random, session: Session) -> None:
    """Mutate ``session.raw`` in place (most sessions): a few random operations."""
    if rng.random() < 0.15:
        return
    buf = bytearray(session.raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.choice(["flip", "flip", "set", "insert", "delete", "truncate", "dup", "swap", "header", "length"])
        n = len(buf)
        pos = rng.randrange(n) if n else 0
        if op == "flip" and n:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "set" and n:
            buf[pos] = rng.randrange(256)
        elif op == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == "delete" and n:
            del buf[pos:pos + rng.randint(1, 8)]
        elif op == "truncate":
            del buf[pos:]
        elif op == "dup" and n:
            end = min(n, pos + rng.randint(1, 64))
            buf[end:end] = buf[pos:end]
        elif op == "swap" and n > 4:
            a, b = sorted(rng.sample(range(n), 2))
            buf[a:b] = buf[a:b][::-1]
        elif op == "header":  # a random packet at a random place
            first = rng.randrange(256)
            length = rng.choice([0, 1, 2, 127, 128, 16383, 16384, 2_000_000, 268_435_455])
            body = rng.randbytes(min(length, rng.randint(0, 64)))
            buf[pos:pos] = bytes((first,)) + encode_varint(length) + body
        elif op == "length" and n > 1:  # a malformed or huge Remaining Length on the first packet
            buf[1:2] = rng.choice([b"\xff\xff\xff\xff\x01", b"\xff\xff\xff\x7f", b"\x80\x00", b"\x00", b"\xff"])
        session.ops.append(op)
    session.raw = bytes(buf)
    session.mutated = bool(session.ops)


# ---- the fuzz workers ---------------------------------------------------------------------------


@dataclass
class Outcome:
    uid: int
    session: Session
    connack: int | None = None  # the CONNACK's return/reason code, if one was read
    saw_eof: bool = False  # the broker closed (we read to the end)
    reset: bool = False  # the connection was reset while we read
    reset_first: bool = False  # the outcome is unknown: no CONNACK read, and we (half-)closed first or were reset
    closed_first: bool = False  # we half-closed or closed before the broker closed
    sent_bytes: int = 0
    received: bytes = b""


@dataclass
class Stats:
    connections: int = 0
    sessions_mutated: int = 0
    packets: int = 0
    bytes_sent: int = 0
    chunks: int = 0
    accepted: int = 0
    closed_by_broker: int = 0
    ops: dict[str, int] = field(default_factory=dict)


def connack_code(data: bytes) -> int | None:
    """The CONNACK's code if ``data`` starts with one (same offset in 3.1.1 and 5.0)."""
    if len(data) >= 4 and data[0] == 0x20:
        return data[3]
    return None


async def run_session(port: int, rng: random.Random, session: Session, stats: Stats) -> Outcome:
    out = Outcome(session.uid, session)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        out.reset_first = True
        return out
    stats.connections += 1
    received = bytearray()

    async def read_all() -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    out.saw_eof = True
                    return
                received.extend(data)
                if out.connack is None:
                    out.connack = connack_code(bytes(received))
        except (OSError, asyncio.IncompleteReadError):
            # reset: what the broker sent last (a CONNACK?) may be lost with it; the outcome is unknown
            # unless a CONNACK was read already
            out.reset = True

    reading = asyncio.ensure_future(read_all())
    raw = session.raw
    i = 0
    try:
        while i < len(raw) and not out.saw_eof and not out.reset:
            n = rng.choice([1, 2, 7, 64, 512, 4096, len(raw)])
            chunk = raw[i:i + n]
            writer.write(chunk)
            i += n
            out.sent_bytes += len(chunk)
            stats.chunks += 1
            if rng.random() < 0.2:
                await writer.drain()
                await asyncio.sleep(rng.choice([0, 0.001, 0.005, 0.02]))
        await writer.drain()
        end = rng.random()
        if end < 0.35:  # wait for the broker's verdict (it closes on an error or a DISCONNECT)
            await asyncio.wait_for(asyncio.shield(reading), rng.choice([0.05, 0.2, 0.5]))
        elif end < 0.7:  # half-close: the broker ends the connection, we read to the end
            out.closed_first = not out.saw_eof  # the broker ends the connection at once: a CONNACK
            writer.write_eof()                  # of this turn may not be written any more
            await asyncio.wait_for(asyncio.shield(reading), 2)
        else:
            await asyncio.sleep(rng.choice([0, 0.01, 0.05]))
    except (asyncio.TimeoutError, OSError, RuntimeError):
        pass
    if not out.saw_eof and not out.reset:
        out.closed_first = True
        sock = writer.get_extra_info("socket")
        if rng.random() < 0.5 and sock is not None:  # RST
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            writer.transport.abort()
        else:
            writer.close()
        # the outcome is known only if a CONNACK was read (or the broker had closed)
        try:
            await asyncio.wait_for(asyncio.shield(reading), 0.2)
        except (asyncio.TimeoutError, OSError):
            pass
    out.reset_first = out.connack is None and (out.closed_first or out.reset or not out.saw_eof)
    reading.cancel()
    try:
        writer.close()
    except RuntimeError:
        pass
    out.received = bytes(received)
    stats.bytes_sent += out.sent_bytes
    if out.connack == 0:
        stats.accepted += 1
    if (out.saw_eof or out.reset) and not out.closed_first:
        stats.closed_by_broker += 1
    return out


async def fuzz_workers(port: int, seed: int, connections: int, deadline: float, stats: Stats,
                       outcomes: list[Outcome]) -> None:
    uids = iter(range(1, 10**9))

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < deadline:
            session = make_session(rng, next(uids))
            mutate(rng, session)
            stats.packets += len(session.packets)
            if session.mutated:
                stats.sessions_mutated += 1
            for op in session.ops:
                stats.ops[op] = stats.ops.get(op, 0) + 1
            out = await run_session(port, rng, session, stats)
            session.packets = []  # what the checks need is kept, not every session's packets
            if session.mutated:
                session.raw = session.raw[:100]
                out.received = b""
            outcomes.append(out)

    await asyncio.gather(*(worker(n) for n in range(connections)))


# ---- the well-behaved clients ----------------------------------------------------------------------


class GoodClients:
    def __init__(self, port: int):
        self.acked: set[bytes] = set()
        self.received: set[bytes] = set()
        self.failed_acks = 0
        self.wills: list[bytes] = []
        self.latency_max = 0.0
        # (MQTTMessageInfo, payload) of every PUBLISH; never hold a lock of ours around publish():
        # paho calls on_publish holding its own lock (a lock-order deadlock otherwise)
        self._infos: list = []
        self._fail_lock = threading.Lock()
        self.sub = self._client("good-sub")
        ready = threading.Event()
        self.sub.on_subscribe = lambda *a: ready.set()
        self.sub.on_message = self._on_good
        self.sub.connect("127.0.0.1", port, keepalive=30)
        self.sub.subscribe("good/#", 1)
        self.sub.loop_start()
        assert ready.wait(10), "good subscriber: no SUBACK"
        self.observer = self._client("will-observer")
        ready2 = threading.Event()
        self.observer.on_subscribe = lambda *a: ready2.set()
        self.observer.on_message = self._on_any
        self.observer.connect("127.0.0.1", port, keepalive=30)
        self.observer.subscribe([("fuzzwill/#", 1), ("#", 0)])
        self.observer.loop_start()
        assert ready2.wait(10), "observer: no SUBACK"
        self.pubs = []
        for n in range(GOOD_PUBLISHERS):
            p = self._client(f"good-pub-{n}")
            p.on_publish = self._on_publish
            p.connect("127.0.0.1", port, keepalive=30)
            p.loop_start()
            self.pubs.append(p)
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _client(client_id: str) -> mqtt.Client:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def _on_good(self, client, userdata, m) -> None:
        self.received.add(m.payload)
        sent_at = float(m.payload.split(b"@")[1])
        self.latency_max = max(self.latency_max, time.monotonic() - sent_at)

    def _on_any(self, client, userdata, m) -> None:
        if m.payload.startswith(WILL_PREFIX):
            self.wills.append(m.payload)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            with self._fail_lock:
                self.failed_acks += 1

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for n, p in enumerate(self.pubs):
                payload = f"{n}-{i}@{time.monotonic()}".encode()
                self._infos.append((p.publish(f"good/{n}", payload, 1), payload))
                self.published += 1
            i += 1
            time.sleep(0.005)

    def stop(self, settle: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(5)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            self.acked = {payload for info, payload in self._infos if info.is_published()}
            if len(self.acked) == len(self._infos) and self.acked <= self.received:
                break
            time.sleep(0.1)

    def close(self) -> None:
        for c in (*self.pubs, self.sub, self.observer):
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:  # noqa: BLE001 - best effort at the end
                pass


# ---- a campaign --------------------------------------------------------------------------------------


@dataclass
class Report:
    duration: float
    seed: int
    connections: int
    stats: Stats
    good_published: int
    good_acked: int
    good_lost: int
    good_latency_max: float
    wills_seen: int
    wills_expected: int
    errors: list[str]
    rss_start_kib: int
    rss_end_kib: int
    broker_metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.stats
        ops = ", ".join(f"{k} {v}" for k, v in sorted(s.ops.items()))
        return (f"socket fuzz: seed {self.seed}, {self.duration:.0f} s, {self.connections} fuzzing connections at a "
                f"time: {s.connections} connections, {s.packets} packets generated ({s.sessions_mutated} sessions "
                f"mutated; ops: {ops}), {s.chunks} writes, {s.bytes_sent / 1e6:.1f} MB sent; {s.accepted} CONNECTs "
                f"accepted, {s.closed_by_broker} connections closed by the broker; good clients: "
                f"{self.good_published} QoS 1 published, {self.good_acked} acknowledged, {self.good_lost} lost, "
                f"max latency {self.good_latency_max * 1000:.0f} ms; wills: {self.wills_seen} markers seen, "
                f"{self.wills_expected} required and present; broker RSS {self.rss_start_kib / 1024:.0f} -> "
                f"{self.rss_end_kib / 1024:.0f} MiB ({self._state()}); {len(self.errors)} error(s)")

    def _state(self) -> str:
        m = self.broker_metrics
        hits = ", ".join(f"{k.split(chr(34))[1]} {v:.0f}" for k, v in sorted(m.items())
                         if k.startswith("lastwill_limit_hits_total") and v)
        return (f"at the end: {m.get('lastwill_sessions', 0):.0f} sessions, "
                f"{m.get('lastwill_messages_queued', 0):.0f} messages queued for them, "
                f"{m.get('lastwill_retained_messages', 0):.0f} retained messages, "
                f"{m.get('lastwill_messages_received_total', 0):.0f} PUBLISH received; limits hit: {hits or 'none'}")


def run_campaign(workdir: Path, duration: float, seed: int = 1, connections: int = 8,
                 broker_args: tuple[str, ...] = ()) -> Report:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = ServeProcess(workdir / "broker.log", "--log-level", "warning", *broker_args, admin=True).start()
    errors: list[str] = []
    good = None
    try:
        good = GoodClients(broker.port)
        rss_start = broker.rss_kib()
        stats = Stats()
        outcomes: list[Outcome] = []
        deadline = time.monotonic() + duration
        asyncio_log = logging.getLogger("asyncio")
        level = asyncio_log.level
        asyncio_log.setLevel(logging.ERROR)  # "socket.send() raised exception": writing to a reset socket
        try:
            asyncio.run(fuzz_workers(broker.port, seed, connections, deadline, stats, outcomes))
        finally:
            asyncio_log.setLevel(level)
        time.sleep(1.0)  # the last wills
        good.stop()
        rss_end = broker.rss_kib()

        # the broker is alive and answers at once
        if broker.proc.poll() is not None:
            errors.append(f"the broker exited with {broker.proc.returncode}")
        else:
            try:
                t0 = time.monotonic()
                with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
                    s.sendall(encode(Connect(client_id="after-fuzz", protocol_level=4), 4))
                    s.settimeout(5)
                    if connack_code(s.recv(4)) != 0:
                        errors.append("a new connection after the fuzzing was not accepted")
                if time.monotonic() - t0 > 2:
                    errors.append(f"the broker took {time.monotonic() - t0:.1f}s to accept a new connection")
            except OSError as e:
                errors.append(f"cannot connect after the fuzzing: {e}")

        lost = good.acked - good.received
        if lost:
            errors.append(f"{len(lost)} acknowledged QoS 1 message(s) never delivered, e.g. {sorted(lost)[:3]}")
        if not good.acked:
            errors.append("the good publishers got no acknowledgement at all")
        if good.failed_acks:
            errors.append(f"{good.failed_acks} good PUBLISH(es) refused")
        if len(good.acked) < good.published:
            errors.append(f"{good.published - len(good.acked)} of {good.published} good PUBLISH(es) never "
                          f"acknowledged")

        # wills
        by_uid = {o.uid: o for o in outcomes}
        counts: dict[int, int] = {}
        for payload in good.wills:
            uid = parse_marker(payload)
            if uid is not None:
                counts[uid] = counts.get(uid, 0) + 1
        for uid, n in counts.items():
            o = by_uid.get(uid)
            if n > 1:
                errors.append(f"will of connection {uid} published {n} times")
            if o is None:
                errors.append(f"will of unknown connection {uid}")
            elif o.connack != 0 and not o.reset_first:
                errors.append(f"will of connection {uid} published but its CONNECT was not accepted "
                              f"(CONNACK {o.connack}, mutations {o.session.ops}, eof {o.saw_eof}, reset {o.reset}, "
                              f"received {o.received[:16]!r}, sent {o.sent_bytes} of {o.session.raw[:80]!r})"
                              f" [MQTT-3.1.2-7]")
        expected = [o for o in outcomes if not o.session.mutated and o.session.will and o.connack == 0
                    and not o.session.has_disconnect]
        missing = [o.uid for o in expected if counts.get(o.uid, 0) != 1]
        if missing:
            errors.append(f"{len(missing)} will(s) of unmutated sessions without DISCONNECT not published "
                          f"exactly once: {missing[:5]} [MQTT-3.1.2-8]")

        # what the broker sent to unmutated sessions decodes at their level
        for o in outcomes:
            if o.session.mutated or not o.received:
                continue
            try:
                Decoder(server_side=False, protocol_level=o.session.level).feed(o.received)
            except MqttError as e:
                errors.append(f"connection {o.uid}: the broker sent what a client cannot decode: {e}")

        report = Report(duration, seed, connections, stats, good.published, len(good.acked), len(lost),
                        good.latency_max, sum(counts.values()), len(expected), errors, rss_start, rss_end,
                        broker.metrics())
        good.close()
        good = None
        rc = broker.stop()
        if rc != 0:
            errors.append(f"the broker exited with {rc} after SIGTERM")
        errors += [f"broker log: {line}" for line in broker.problems()[:20]]
        return report
    finally:
        if good is not None:
            good.close()
        broker.kill()
