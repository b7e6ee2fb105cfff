#!/usr/bin/env python3
"""MQTT load generator for the lastwill-vs-mosquitto benchmark: one process, one core, uvloop.

It speaks just enough MQTT (3.1.1 by default, 5.0 with ``--mqtt 5``) to drive a broker hard:
packets are pre-encoded once (QoS 0 PUBLISHes are written as a blob of many packets per write),
and incoming packets are counted by walking the fixed header and Remaining Length only; nothing
is decoded except what a scenario needs (the packet id of a QoS 1 PUBLISH to ack it, the topic
of a will). It does not import lastwill, so it measures both brokers the same way.

One scenario per run; the result is one JSON object on stdout::

    python benchmarks/loadgen.py fanin_qos0 --port 1883 --duration 3 --warmup 1 [--broker-pid PID]

Scenarios (see benchmarks/README.md): fanin_qos0, fanout_qos0, fanin_qos1, fanin_qos1_persistent,
latency_qos1, connect_rate, connect_hold, will_punctuality, will_under_load, delayed_will,
wills_drop_qos1. Throughput is counted at the subscriber(s) over ``--duration`` seconds that
start after ``--warmup`` seconds of traffic. The process's own CPU use over the same window
(getrusage) is reported as ``loadgen_cpu_pct`` (100 = one core busy: the load generator may be
the bottleneck), and with ``--broker-pid`` the broker's CPU use from /proc as ``broker_cpu_pct``.

Every scenario stops by itself: traffic runs for warmup + duration and the whole run has a hard
timeout. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# minimal MQTT encoding (client -> server packets only)
# ---------------------------------------------------------------------------------------------

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PID2 = [i.to_bytes(2, "big") for i in range(65536)]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect_packet(client_id: str, level: int, keep_alive: int = 60, clean: bool = True,
                   will: tuple[str, bytes, int] | None = None, props: bytes = b"",
                   will_props: bytes = b"") -> bytes:
    """CONNECT; ``clean`` is Clean Session (3.1.1) / Clean Start (5). ``props`` and ``will_props``
    are MQTT 5 property bytes (see ``prop_u32``), ignored at level 4."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
    vh = utf8("MQTT") + bytes((level, flags)) + keep_alive.to_bytes(2, "big")
    if level == 5:
        vh += varint(len(props)) + props  # CONNECT properties
    pl = utf8(client_id)
    if will is not None:
        if level == 5:
            pl += varint(len(will_props)) + will_props  # will properties
        pl += utf8(will[0]) + utf8(will[1])
    return packet(0x10, vh + pl)


SESSION_EXPIRY_INTERVAL = 0x11  # MQTT 5 property ids (four-byte integers)
WILL_DELAY_INTERVAL = 0x18


def prop_u32(prop_id: int, value: int) -> bytes:
    return bytes((prop_id,)) + value.to_bytes(4, "big")


def payload_at(first: int, buf: bytes, h: int, level: int) -> int:
    """Offset of the payload of the PUBLISH whose variable header starts at ``h``: after the topic,
    the packet id (QoS > 0) and, in MQTT 5, the properties (a Variable Byte Integer length)."""
    p = h + 2 + ((buf[h] << 8) | buf[h + 1])
    if first & 0x06:
        p += 2
    if level == 5:
        n, mult = 0, 1
        while True:
            b = buf[p]
            p += 1
            n += (b & 127) * mult
            if b < 128:
                break
            mult <<= 7
        p += n
    return p


def subscribe_packet(pid: int, topic_filter: str, qos: int, level: int) -> bytes:
    return packet(0x82, PID2[pid] + (b"\x00" if level == 5 else b"") + utf8(topic_filter) + bytes((qos,)))


def publish_qos0(topic: str, payload: bytes, level: int) -> bytes:
    return packet(0x30, utf8(topic) + (b"\x00" if level == 5 else b"") + payload)


def publish_qos1_parts(topic: str, payload: bytes, level: int) -> tuple[bytes, bytes]:
    """(fixed header + topic, properties + payload): the packet id goes between them."""
    tail = (b"\x00" if level == 5 else b"") + payload
    rl = 2 + len(topic.encode()) + 2 + len(tail)
    return b"\x32" + varint(rl) + utf8(topic), tail


# ---------------------------------------------------------------------------------------------
# shared counters and wake-ups
# ---------------------------------------------------------------------------------------------

class State:
    """Counters shared by all connections of one scenario, plus the pump's wake-up event.

    ``backlog`` is end-to-end: deliveries the publishers have written that the subscribers have
    not received yet (sent * fanout - delivered). When ``cap`` is set the pump stops writing
    above it and a subscriber wakes the pump once the backlog has drained to ``cap // 2``.
    """

    def __init__(self, fanout: int = 1, cap: int = 0):
        self.sent = 0
        self.delivered = 0
        self.reads = 0  # data_received calls, all connections
        self.fanout = fanout
        self.cap = cap
        self.low = cap // 2
        self.waiting = False
        self.cap_waits = 0
        self.wake = asyncio.Event()
        self.stop = False
        self.errors: list[str] = []

    def backlog(self) -> int:
        return self.sent * self.fanout - self.delivered


class Client(asyncio.Protocol):
    """A connection that walks incoming packets by fixed header. Subclasses handle PUBLISH/PUBACK."""

    def __init__(self, state: State, name: str = ""):
        self.state = state
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.paused = False
        self.closed = False
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future = loop.create_future()
        self.suback: asyncio.Future = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    def connection_lost(self, exc) -> None:
        self.closed = True
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.name}: connection lost ({exc})"))
                fut.exception()  # retrieved: no "never retrieved" noise if nobody awaits it
        if not self.state.stop:
            self.state.errors.append(f"{self.name}: connection lost during the run ({exc})")
        self.state.wake.set()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.state.wake.set()

    def data_received(self, data: bytes) -> None:
        self.state.reads += 1
        buf = self.buf + data if self.buf else data
        n = len(buf)
        i = 0
        pubs = 0
        while n - i >= 2:
            b = buf[i + 1]
            if b < 128:
                h = i + 2
                end = h + b
            else:
                rl = b & 127
                mult = 128
                h = i + 2
                while True:
                    if h >= n:
                        end = n + 1  # incomplete length
                        break
                    b = buf[h]
                    h += 1
                    rl += (b & 127) * mult
                    if b < 128:
                        end = h + rl
                        break
                    mult <<= 7
            if end > n:
                break
            first = buf[i]
            if first >> 4 == 3:
                pubs += 1
                self.on_publish(first, buf, h, end)
            else:
                self.on_packet(first >> 4, buf, h, end)
            i = end
        self.buf = buf[i:] if i < n else b""
        if pubs:
            self.on_publishes(pubs)

    def on_publish(self, first: int, buf: bytes, h: int, end: int) -> None:
        pass

    def on_publishes(self, count: int) -> None:
        st = self.state
        st.delivered += count
        if st.waiting and st.sent * st.fanout - st.delivered <= st.low:
            st.waiting = False
            st.wake.set()

    def on_packet(self, ptype: int, buf: bytes, h: int, end: int) -> None:
        if ptype == 2:  # CONNACK: flags, return/reason code
            if not self.connack.done():
                self.connack.set_result(buf[h + 1])
        elif ptype == 9:  # SUBACK
            if not self.suback.done():
                self.suback.set_result(buf[end - 1])
        elif ptype == 14:  # DISCONNECT from the server (MQTT 5)
            self.state.errors.append(f"{self.name}: server sent DISCONNECT {buf[h:end].hex()}")


class Qos1Subscriber(Client):
    """Acks every QoS 1 PUBLISH (PUBACKs of one read are written in one write)."""

    def __init__(self, state: State, name: str = ""):
        super().__init__(state, name)
        self.acks: list[bytes] = []

    def on_publish(self, first: int, buf: bytes, h: int, end: int) -> None:
        if first & 0x06:
            p = h + 2 + ((buf[h] << 8) | buf[h + 1])
            self.acks.append(b"\x40\x02" + buf[p:p + 2])

    def on_publishes(self, count: int) -> None:
        if self.acks:
            self.transport.write(b"".join(self.acks))
            self.acks.clear()
        super().on_publishes(count)


class Qos1Publisher(Client):
    """Keeps up to ``window`` QoS 1 PUBLISHes unacknowledged; a PUBACK gives one credit back."""

    def __init__(self, state: State, name: str, topic: str, payload: bytes, level: int, window: int):
        super().__init__(state, name)
        self.head, self.tail = publish_qos1_parts(topic, payload, level)
        self.credit = window
        self.next_pid = 1
        self.acked = 0

    def on_packet(self, ptype: int, buf: bytes, h: int, end: int) -> None:
        if ptype == 4:  # PUBACK
            self.credit += 1
            self.acked += 1
            self.state.wake.set()
        else:
            super().on_packet(ptype, buf, h, end)

    def build(self, count: int) -> bytes:
        head, tail = self.head, self.tail
        pid = self.next_pid
        parts = []
        for _ in range(count):
            parts.append(head + PID2[pid] + tail)
            pid = pid + 1 if pid < 65535 else 1
        self.next_pid = pid
        return b"".join(parts)


class WillObserver(Client):
    """Records the arrival time of each will, by the client index in its topic."""

    def __init__(self, state: State, name: str, prefix: bytes):
        super().__init__(state, name)
        self.prefix = prefix
        self.arrivals: dict[int, float] = {}
        self.strays = 0

    def on_publish(self, first: int, buf: bytes, h: int, end: int) -> None:
        now = time.monotonic()
        tl = (buf[h] << 8) | buf[h + 1]
        topic = bytes(buf[h + 2:h + 2 + tl])
        if topic.startswith(self.prefix) and topic[len(self.prefix):].isdigit():
            idx = int(topic[len(self.prefix):])
            if idx not in self.arrivals:
                self.arrivals[idx] = now
                return
        self.strays += 1


class Qos1WillObserver(WillObserver):
    """A WillObserver subscribed at QoS 1 that acks every PUBLISH (PUBACKs of one read in one write)."""

    def __init__(self, state: State, name: str, prefix: bytes):
        super().__init__(state, name, prefix)
        self.acks: list[bytes] = []

    def on_publish(self, first: int, buf: bytes, h: int, end: int) -> None:
        super().on_publish(first, buf, h, end)
        if first & 0x06:
            p = h + 2 + ((buf[h] << 8) | buf[h + 1])
            self.acks.append(b"\x40\x02" + buf[p:p + 2])

    def on_publishes(self, count: int) -> None:
        if self.acks:
            self.transport.write(b"".join(self.acks))
            self.acks.clear()
        super().on_publishes(count)


# what latency_qos1 and fanin_qos1_persistent put at the start of each payload:
# send time (time.perf_counter_ns of this process), publisher index, sequence number
STAMP = struct.Struct(">QII")


def mark(bits: bytearray, i: int) -> bool:
    """Set byte ``i`` of a growable 0/1 map; False if it was already set."""
    if i >= len(bits):
        bits.extend(bytes(max(i + 1 - len(bits), len(bits), 4096)))
    if bits[i]:
        return False
    bits[i] = 1
    return True


def count_missing(want: bytearray, have: bytearray) -> int:
    """How many indexes are set in ``want`` and not in ``have`` (both 0/1 byte maps)."""
    a = int.from_bytes(want, "little")
    b = int.from_bytes(have[:len(want)], "little")
    return (a & ~b).bit_count()


class SeqPublisher(Qos1Publisher):
    """A QoS 1 publisher whose payloads carry STAMP (send time, ``index``, sequence), padded to
    ``payload_len`` bytes. It remembers the sequence sent under each packet id, so that a PUBACK
    marks that sequence as acknowledged by the broker (``acked_seqs``)."""

    def __init__(self, state: State, name: str, topic: str, payload_len: int, level: int, window: int,
                 index: int):
        plen = max(payload_len, STAMP.size)
        super().__init__(state, name, topic, bytes(plen), level, window)
        self.prop = b"\x00" if level == 5 else b""
        self.pad = b"s" * (plen - STAMP.size)
        self.index = index
        self.seq = 0  # next sequence number
        self.pid_seq = [0] * 65536
        self.acked_seqs = bytearray()

    def build(self, count: int) -> bytes:
        head, prop, pad, idx, pid_seq = self.head, self.prop, self.pad, self.index, self.pid_seq
        pid, seq = self.next_pid, self.seq
        now = time.perf_counter_ns()
        parts = []
        for _ in range(count):
            parts.append(head + PID2[pid] + prop + STAMP.pack(now, idx, seq) + pad)
            pid_seq[pid] = seq
            seq += 1
            pid = pid + 1 if pid < 65535 else 1
        self.next_pid, self.seq = pid, seq
        return b"".join(parts)

    def on_packet(self, ptype: int, buf: bytes, h: int, end: int) -> None:
        if ptype == 4:  # PUBACK: which sequence did the broker take responsibility for
            mark(self.acked_seqs, self.pid_seq[(buf[h] << 8) | buf[h + 1]])
        super().on_packet(ptype, buf, h, end)


class StampedSubscriber(Qos1Subscriber):
    """A QoS 1 subscriber (acks every PUBLISH) that reads STAMP from each payload: counts each
    (publisher, sequence) once (``unique``; again: ``dups``) and, with ``record_latency``, keeps
    (sequence, arrival - send time in ns). The arrival time is taken once per read, when the event
    loop hands the bytes over."""

    def __init__(self, state: State, name: str, level: int, n_pubs: int):
        super().__init__(state, name)
        self.level = level
        self.seen = [bytearray() for _ in range(n_pubs)]
        self.unique = 0
        self.dups = 0
        self.bad = 0
        self.record_latency = False
        # (sequence, arrival - send time in ns, kernel receive time - send time in ns or None)
        self.latency: list[tuple[int, int, int | None]] = []
        self.now_ns = 0
        self.kernel_ns: int | None = None  # set by a KernelStampedTransport before each read

    def data_received(self, data: bytes) -> None:
        self.now_ns = time.perf_counter_ns()
        super().data_received(data)

    def on_publish(self, first: int, buf: bytes, h: int, end: int) -> None:
        super().on_publish(first, buf, h, end)  # the PUBACK
        p = payload_at(first, buf, h, self.level)
        if end - p < STAMP.size:
            self.bad += 1
            return
        sent_ns, idx, seq = STAMP.unpack_from(buf, p)
        if idx >= len(self.seen):
            self.bad += 1
        elif mark(self.seen[idx], seq):
            self.unique += 1
            if self.record_latency:
                k = self.kernel_ns
                self.latency.append((seq, self.now_ns - sent_ns, None if k is None else k - sent_ns))
        else:
            self.dups += 1


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the control message has the same type
TIMESPEC = struct.Struct("@qq")


class KernelStampedTransport:
    """Just enough of a transport over a plain non-blocking socket read with recvmsg, so that each
    read comes with the time the kernel received the data (SO_TIMESTAMPNS, CLOCK_REALTIME): the
    protocol's ``kernel_ns`` is set (converted to the time.perf_counter_ns clock) before each
    ``data_received``. latency_qos1's subscriber uses it to tell the broker's and the loopback's
    share of the latency from the load generator's own wake-up delay."""

    def __init__(self, sock: socket.socket, proto: Client):
        self.sock, self.proto = sock, proto
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.short_writes = 0
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.loop.add_reader(sock.fileno(), self._readable)
        proto.connection_made(self)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        # PUBACKs and small control packets: the socket buffer always has room for them
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self.short_writes += 1
            self.loop.create_task(self.loop.sock_sendall(self.sock, data[n:]))

    def _readable(self) -> None:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(262144, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._lost(e)
                return
            if not data:
                self._lost(None)
                return
            kernel_ns = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= TIMESPEC.size:
                    sec, nsec = TIMESPEC.unpack_from(cdata)
                    kernel_ns = sec * 1_000_000_000 + nsec - time.time_ns() + time.perf_counter_ns()
            self.proto.kernel_ns = kernel_ns
            self.proto.data_received(data)

    def _lost(self, exc) -> None:
        if not self.closing:
            self.close()
            self.proto.connection_lost(exc)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    abort = close


async def connect_kernel_stamped(port: int, factory, connect_bytes: bytes, timeout: float = 10.0) -> Client:
    """``connect`` with a KernelStampedTransport instead of the event loop's transport."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
    proto = factory()
    KernelStampedTransport(sock, proto)
    proto.transport.write(connect_bytes)
    rc = await asyncio.wait_for(proto.connack, timeout)
    if rc != 0:
        raise RuntimeError(f"{proto.name}: CONNACK refused with code {rc}")
    return proto


class Echo(asyncio.Protocol):
    """latency_qos1's loopback floor: writes back what it reads."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoTimer(asyncio.Protocol):
    """Reads back fixed-size records that start with STAMP; keeps the round-trip times in ns."""

    def __init__(self, size: int):
        self.size = size
        self.buf = b""
        self.rtts: list[int] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self.buf + data
        k = 0
        while len(buf) - k >= self.size:
            self.rtts.append(now - STAMP.unpack_from(buf, k)[0])
            k += self.size
        self.buf = buf[k:]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def cores_busy() -> dict[str, tuple[int, int]]:
    """{"cpu0": (busy jiffies, all jiffies), ...} from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals[:8]]
                    idle = v[3] + v[4]  # idle + iowait
                    out[name] = (sum(v) - idle, sum(v))
    except OSError:
        pass
    return out


def rss_kb(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_delay_ns(pid: int | str | None) -> int | None:
    """Time the process's threads spent runnable but waiting for a CPU (the run queue), in ns:
    the second field of /proc/PID/task/*/schedstat. None where schedstats are not available."""
    if not pid:
        return None
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        return None
    return total


class Window:
    """Snapshots at the start and the end of the measuring window."""

    def __init__(self, broker_pid: int | None):
        self.broker_pid = broker_pid

    def snap(self, count: int, sent: int = 0) -> dict:
        return {"t": time.monotonic(), "count": count, "sent": sent, "cpu": cpu_self(),
                "broker_cpu": cpu_of(self.broker_pid), "cores": cores_busy(),
                "runq": run_delay_ns("self"), "broker_runq": run_delay_ns(self.broker_pid)}

    @staticmethod
    def summary(a: dict, b: dict) -> dict:
        dt = b["t"] - a["t"]
        out = {
            "window_s": round(dt, 3),
            "count": b["count"] - a["count"],
            "rate": (b["count"] - a["count"]) / dt,
            "sent_rate": (b["sent"] - a["sent"]) / dt,
            "loadgen_cpu_pct": round(100 * (b["cpu"] - a["cpu"]) / dt, 1),
            "broker_cpu_pct": None,
        }
        if a["broker_cpu"] is not None and b["broker_cpu"] is not None:
            out["broker_cpu_pct"] = round(100 * (b["broker_cpu"] - a["broker_cpu"]) / dt, 1)
        # how long each process waited for a CPU over the window (others' processes on its core)
        for name, key in (("loadgen", "runq"), ("broker", "broker_runq")):
            if a.get(key) is not None and b.get(key) is not None:
                out[f"{name}_runq_wait_pct"] = round(100 * (b[key] - a[key]) / 1e9 / dt, 2)
        # how busy each core was over the window, whoever used it (other engineers' tests too)
        for cpu, (busy0, total0) in a["cores"].items():
            if cpu in b["cores"]:
                busy1, total1 = b["cores"][cpu]
                out[f"{cpu}_busy_pct"] = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
        return out


async def connect(port: int, factory, connect_bytes: bytes, timeout: float = 10.0) -> Client:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(factory, HOST, port)
    proto.transport.write(connect_bytes)
    rc = await asyncio.wait_for(proto.connack, timeout)
    if rc != 0:
        raise RuntimeError(f"{proto.name}: CONNACK refused with code {rc}")
    return proto


async def subscribe(client: Client, topic_filter: str, qos: int, level: int, timeout: float = 10.0) -> None:
    client.transport.write(subscribe_packet(1, topic_filter, qos, level))
    granted = await asyncio.wait_for(client.suback, timeout)
    if granted >= 0x80:
        raise RuntimeError(f"{client.name}: SUBSCRIBE {topic_filter!r} refused with code {granted:#x}")


async def connect_many(port: int, items: list[tuple], batch: int = 50) -> list[Client]:
    """Connect (factory, connect_bytes) pairs, ``batch`` at a time."""
    out: list[Client] = []
    for k in range(0, len(items), batch):
        out += await asyncio.gather(*(connect(port, f, c) for f, c in items[k:k + batch]))
    return out


def close_all(clients: list[Client]) -> None:
    for c in clients:
        if c.transport is not None and not c.closed:
            try:
                c.transport.write(DISCONNECT)
            except Exception:
                pass
            c.transport.close()


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def raise_fd_limit() -> int:
    """Soft descriptor limit up to the hard one (thousands of sockets); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


async def read_connack(loop, sock: socket.socket) -> int:
    """Read one CONNACK from a raw socket; its return code (3.1.1) / reason code (5)."""
    got = b""
    while True:
        chunk = await loop.sock_recv(sock, 512)
        if not chunk:
            raise ConnectionError("EOF before CONNACK")
        got += chunk
        if len(got) >= 2:  # fixed header, Remaining Length (a Variable Byte Integer)
            rl, mult, h = 0, 1, 1
            while h < len(got):
                b = got[h]
                h += 1
                rl += (b & 127) * mult
                if b < 128:
                    break
                mult <<= 7
            else:
                continue
            if len(got) >= h + rl:
                if got[0] >> 4 != 2:
                    raise ConnectionError(f"expected CONNACK, got packet type {got[0] >> 4}")
                return got[h + 1]


async def open_raw(port: int, pkt: bytes, source: str | None, timeout: float) -> tuple[socket.socket, int]:
    """A plain non-blocking socket (no transport: nothing reads it after the CONNACK, and closing it
    closes the descriptor at once, so a drop time is exact). -> (socket, CONNACK code)"""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if source:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
        await loop.sock_sendall(sock, pkt)
        rc = await asyncio.wait_for(read_connack(loop, sock), timeout)
    except BaseException:
        sock.close()
        raise
    return sock, rc


async def open_many(args, packets: list[bytes]) -> tuple[list[socket.socket | None], list[str], int, float]:
    """Open one raw connection per CONNECT packet, ``--concurrency`` in flight, client sockets spread
    over ``--source-addrs`` source addresses. -> (sockets, None where it failed; errors; refused;
    seconds until the last CONNACK)"""
    socks: list[socket.socket | None] = [None] * len(packets)
    errors: list[str] = []
    refused = 0
    nxt = 0

    async def worker() -> None:
        nonlocal nxt, refused
        while nxt < len(packets):
            i = nxt
            nxt += 1
            src = f"127.0.0.{2 + i % args.source_addrs}" if args.source_addrs else None
            try:
                sock, rc = await open_raw(args.port, packets[i], src, args.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                errors.append(f"client {i}: {type(e).__name__}: {e}")
                continue
            if rc != 0:
                refused += 1
                sock.close()
            else:
                socks[i] = sock

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, len(packets)))))
    return socks, errors, refused, time.monotonic() - t0


def drop_all(socks: list[socket.socket | None], how: str) -> list[float | None]:
    """Close every socket without DISCONNECT, in one go: ``rst`` = SO_LINGER 0 (an abortive close,
    the peer gets a reset), ``fin`` = a plain close. -> the monotonic time of each close."""
    linger0 = struct.pack("ii", 1, 0)
    times: list[float | None] = []
    for s in socks:
        if s is None:
            times.append(None)
            continue
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        s.close()
        times.append(time.monotonic())
    return times


def disconnect_all(socks: list[socket.socket | None]) -> None:
    """Normal end: DISCONNECT (no will is published), then close."""
    for s in socks:
        if s is not None:
            try:
                s.send(DISCONNECT)
            except OSError:
                pass
            s.close()


# ---------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------

async def pump_qos1(st: State, pubs: list[Qos1Publisher]) -> None:
    """Spend each publisher's credits (window minus unacknowledged), within the end-to-end cap."""
    while not st.stop:
        progressed = False
        for p in pubs:
            if p.credit and not p.paused and not p.closed:
                n = p.credit
                if st.cap:
                    room = st.cap - (st.sent - st.delivered)
                    if room <= 0:
                        st.waiting = True
                        st.cap_waits += 1
                        break
                    n = min(n, room)
                p.transport.write(p.build(n))
                p.credit -= n
                st.sent += n
                progressed = True
        if progressed:
            await asyncio.sleep(0)
        else:
            st.wake.clear()
            await st.wake.wait()


async def measure(st: State, args, count=lambda st: st.delivered) -> dict:
    w = Window(args.broker_pid)
    await asyncio.sleep(args.warmup)
    a = w.snap(count(st), st.sent)
    reads0 = st.reads
    await asyncio.sleep(args.duration)
    b = w.snap(count(st), st.sent)
    out = w.summary(a, b)
    # how the broker's output arrives: packets per read on the load generator's side
    out["loadgen_reads"] = st.reads - reads0
    out["broker_rss_kb_end"] = rss_kb(args.broker_pid)
    out["backlog_end"] = st.backlog()
    out["cap_waits"] = st.cap_waits
    return out


async def start_qos0(args, st: State, n_pubs: int, n_subs: int, topic_of, topic_filter: str):
    """Connect and subscribe ``n_subs``, connect ``n_pubs`` and start the pump. -> (clients, task)"""
    level = args.mqtt
    payload = os.urandom(args.payload // 2).hex().encode()[:args.payload].ljust(args.payload, b"x")
    subs = await connect_many(args.port, [
        (lambda i=i: Client(st, f"sub{i}"), connect_packet(f"bench-sub-{i}", level)) for i in range(n_subs)])
    for s in subs:
        await subscribe(s, topic_filter, 0, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: Client(st, f"pub{i}"), connect_packet(f"bench-pub-{i}", level)) for i in range(n_pubs)])
    blobs = [publish_qos0(topic_of(i), payload, level) * args.batch for i in range(n_pubs)]
    return pubs + subs, asyncio.ensure_future(pump_qos0(st, pubs, blobs, args.batch))


async def stop_traffic(st: State, clients: list[Client], task: asyncio.Future) -> None:
    st.stop = True
    st.wake.set()
    await task
    close_all(clients)


async def throughput_qos0(args, n_pubs: int, n_subs: int, topic_of, topic_filter: str) -> dict:
    st = State(fanout=n_subs, cap=args.backlog)
    clients, task = await start_qos0(args, st, n_pubs, n_subs, topic_of, topic_filter)
    try:
        out = await measure(st, args)
    finally:
        await stop_traffic(st, clients, task)
    out.update(unit="msg/s", publishers=n_pubs, subscribers=n_subs, payload_bytes=args.payload,
               batch=args.batch, backlog_cap=args.backlog, errors=st.errors[:10])
    return out


async def pump_qos0(st: State, pubs: list[Client], blobs: list[bytes], per_blob: int) -> None:
    """Each turn, write one pre-encoded blob of ``per_blob`` PUBLISHes to every publisher whose
    socket is not paused (write buffer over 256 KiB), unless the end-to-end backlog is over the cap."""
    pairs = list(zip(pubs, blobs, strict=True))
    while not st.stop:
        if st.cap and st.sent * st.fanout - st.delivered > st.cap:
            st.waiting = True
            st.cap_waits += 1
            st.wake.clear()
            await st.wake.wait()
            continue
        wrote = 0
        for p, blob in pairs:
            if not p.paused and not p.closed:
                p.transport.write(blob)
                wrote += 1
        if wrote:
            st.sent += wrote * per_blob
            await asyncio.sleep(0)
        else:
            st.wake.clear()
            await st.wake.wait()


async def fanin_qos0(args) -> dict:
    return await throughput_qos0(args, args.publishers or 50, 1,
                                 lambda i: f"bench/fanin/{i}", "bench/fanin/+")


async def fanout_qos0(args) -> dict:
    return await throughput_qos0(args, 1, args.subscribers or 100, lambda i: "bench/fanout", "bench/fanout")


async def fanin_qos1(args) -> dict:
    level = args.mqtt
    n_pubs = args.publishers or 10
    st = State(fanout=1, cap=args.backlog)
    payload = b"p" * args.payload
    sub = await connect(args.port, lambda: Qos1Subscriber(st, "sub"), connect_packet("bench-q1-sub", level))
    await subscribe(sub, "bench/q1/+", 1, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: Qos1Publisher(st, f"pub{i}", f"bench/q1/{i}", payload, level, args.window),
         connect_packet(f"bench-q1-pub-{i}", level)) for i in range(n_pubs)])
    task = asyncio.ensure_future(pump_qos1(st, pubs))
    try:
        out = await measure(st, args)
    finally:
        st.stop = True
        st.wake.set()
        await task
        close_all(pubs + [sub])
    out.update(unit="msg/s", publishers=n_pubs, subscribers=1, payload_bytes=args.payload,
               window=args.window, backlog_cap=args.backlog,
               acked_by_broker=sum(p.acked for p in pubs), errors=st.errors[:10])
    return out


async def connect_rate(args) -> dict:
    """``--concurrency`` workers, each in a loop: new socket, CONNECT with a will, wait for CONNACK,
    DISCONNECT (normal: no will is published), close. Counts CONNACKs."""
    loop = asyncio.get_running_loop()
    level = args.mqtt
    st = State()
    refused = 0

    async def worker(w: int) -> None:
        nonlocal refused
        seq = 0
        while not st.stop:
            seq += 1
            cid = f"bench-c{w}-{seq}"
            pkt = connect_packet(cid, level, keep_alive=60, will=(f"bench/conn-will/{cid}", b"gone", 0))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                if args.source_addrs:
                    # spread over 127.0.0.2.. so that the client ports left in TIME_WAIT (the client
                    # closes first) never run out: 28k ephemeral ports per source address
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((f"127.0.0.{2 + (w + seq) % args.source_addrs}", 0))
                await loop.sock_connect(sock, (HOST, args.port))
                await loop.sock_sendall(sock, pkt)
                got = b""
                while len(got) < 4:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 64), 10)
                    if not chunk:
                        raise ConnectionError("EOF before CONNACK")
                    got += chunk
                if got[0] >> 4 != 2 or got[3] != 0:
                    refused += 1
                else:
                    st.delivered += 1
                await loop.sock_sendall(sock, DISCONNECT)
            except (OSError, asyncio.TimeoutError) as e:
                if not st.stop:
                    st.errors.append(f"worker {w}: {type(e).__name__}: {e}")
                    await asyncio.sleep(0.01)
            finally:
                sock.close()

    tasks = [asyncio.ensure_future(worker(w)) for w in range(args.concurrency)]
    try:
        out = await measure(st, args)
    finally:
        st.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    out.pop("backlog_end")
    out.pop("cap_waits")
    out.update(unit="connects/s", concurrency=args.concurrency, refused=refused,
               error_count=len(st.errors), errors=st.errors[:10])
    return out


async def will_punctuality(args) -> dict:
    """``--clients`` clients connect with keep-alive 1 s and a will (pinging every 0.5 s while the
    others connect), then all send one PINGREQ in the same loop turn and go silent. The broker
    must publish each will once 1.5 s have passed since it last heard from the client
    [MQTT-3.1.2-24]; the deadline is taken from when that last PINGREQ was written (so the
    measured delay includes the loopback hop: it is an upper bound). A client the broker drops
    while it was still pinging is counted in ``closed_before_silence``, not in the delays."""
    level = args.mqtt
    n = args.clients
    st = State()
    prefix = "bench/will/"
    obs = await connect(args.port, lambda: WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-will-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 0, level)
    w = Window(args.broker_pid)
    silent = False

    async def pinger(c: Client) -> None:
        while True:
            await asyncio.sleep(0.5)
            if silent or c.closed:
                return
            c.transport.write(PINGREQ)

    async def connect_and_keep(i: int) -> tuple[Client, asyncio.Future]:
        c = await connect(args.port, lambda: Client(st, f"will{i}"),
                          connect_packet(f"bench-will-{i}", level, keep_alive=1, will=(f"{prefix}{i}", b"gone", 0)),
                          timeout=args.connect_timeout)
        return c, asyncio.ensure_future(pinger(c))

    t_connect = time.monotonic()
    pairs = await asyncio.gather(*(connect_and_keep(i) for i in range(n)))
    connect_s = time.monotonic() - t_connect
    silent = True
    clients = [c for c, _ in pairs]
    for _, task in pairs:
        task.cancel()
    a = w.snap(0)
    sent_at: list[float | None] = []
    for c in clients:
        if c.closed:  # the broker dropped it although it kept pinging
            sent_at.append(None)
            continue
        c.transport.write(PINGREQ)
        sent_at.append(time.monotonic())
    gone_early = sum(1 for t in sent_at if t is None)
    deadline_last = max((t for t in sent_at if t is not None), default=time.monotonic()) + 1.5
    give_up = deadline_last + args.will_timeout
    while len(obs.arrivals) < n and time.monotonic() < give_up:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # strays / duplicates
    b = w.snap(len(obs.arrivals))
    st.stop = True
    close_all(clients + [obs])
    delays = sorted(1000 * (t - (sent_at[i] + 1.5)) for i, t in obs.arrivals.items() if sent_at[i] is not None)

    def pct(p: float) -> float | None:
        if not delays:
            return None
        k = min(len(delays) - 1, max(0, round(p / 100 * len(delays) + 0.5) - 1))  # nearest rank
        return round(delays[k], 1)

    summary = Window.summary(a, b)
    return {
        "unit": "ms", "clients": n, "wills_received": len(delays), "strays": obs.strays,
        "wills_of_dropped_clients": len(obs.arrivals) - len(delays),
        "delay_ms_min": round(delays[0], 1) if delays else None,
        "delay_ms_p50": pct(50), "delay_ms_p99": pct(99),
        "delay_ms_max": round(delays[-1], 1) if delays else None,
        "connect_all_s": round(connect_s, 3), "closed_before_silence": gone_early, "waited_s": summary["window_s"],
        "loadgen_cpu_pct": summary["loadgen_cpu_pct"], "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "errors": [e for e in st.errors if "connection lost" not in e][:10],
    }


async def will_under_load(args) -> dict:
    """will_punctuality while the QoS 0 fan-in (50 -> 1, capped backlog) runs in the background."""
    st = State(fanout=1, cap=args.backlog)
    clients, task = await start_qos0(args, st, 50, 1, lambda i: f"bench/fanin/{i}", "bench/fanin/+")
    try:
        await asyncio.sleep(args.warmup)
        t0, d0 = time.monotonic(), st.delivered
        out = await will_punctuality(args)
        out["background_rate"] = (st.delivered - d0) / (time.monotonic() - t0)
        out["background_errors"] = st.errors[:10]
    finally:
        await stop_traffic(st, clients, task)
    return out


async def paced(st: State, rate: float, send) -> dict:
    """Call ``send()`` ``rate`` times a second on a fixed schedule until ``st.stop``: each message is
    written on its own at its due time (the event loop's timers have millisecond resolution; a
    message is never sent early, and one that is due late is sent at once: ``late_wakeups`` counts
    the wake-ups that found more than one due)."""
    interval = 1e9 / rate
    t0 = time.perf_counter_ns()
    k = 0
    max_burst = 0
    late = 0
    wakeups = 0
    while not st.stop:
        due = int((time.perf_counter_ns() - t0) / interval) + 1
        n = due - k
        if n > 0:
            for _ in range(n):
                send()
            k = due
            wakeups += 1
            if n > 1:
                late += 1
                max_burst = max(max_burst, n)
        await asyncio.sleep(max(0.0, (t0 + k * interval - time.perf_counter_ns()) / 1e9))
    return {"sent": k, "wakeups": wakeups, "late_wakeups": late, "max_burst": max(1, max_burst)}


def ms_stats(prefix: str, values_ms: list[float], digits: int = 3) -> dict:
    v = sorted(values_ms)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)
    return {f"{prefix}_p50": r(percentile(v, 50)), f"{prefix}_p99": r(percentile(v, 99)),
            f"{prefix}_max": r(v[-1]) if v else None, f"{prefix}_min": r(v[0]) if v else None}


async def loopback_floor(args, seconds: float) -> dict:
    """latency_qos1's baseline: the same pacing and record size through an echo server inside this
    process (two loopback hops, both ends on this event loop, no broker)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    size = max(args.payload, STAMP.size)
    pad = bytes(size - STAMP.size)
    _, timer = await loop.create_connection(lambda: EchoTimer(size), HOST, port)
    st = State()
    seq = 0

    def send() -> None:
        nonlocal seq
        timer.transport.write(STAMP.pack(time.perf_counter_ns(), 0, seq) + pad)
        seq += 1

    task = asyncio.ensure_future(paced(st, args.rate, send))
    await asyncio.sleep(seconds)
    st.stop = True
    await task
    await asyncio.sleep(0.05)
    timer.transport.close()
    server.close()
    skip = len(timer.rtts) // 10  # the first tenth: warm-up
    return {**ms_stats("floor_ms", [x / 1e6 for x in timer.rtts[skip:]]), "floor_samples": len(timer.rtts) - skip}


async def latency_qos1(args) -> dict:
    """One QoS 1 publisher paced at ``--rate`` msg/s (default 1,000; each message written on its
    own at its due time) -> one QoS 1 subscriber that acks every message. Each payload carries its
    send time (time.perf_counter_ns of this process: publisher and subscriber share the clock);
    latency = arrival at the subscriber (when the event loop hands over the read) - send time, and
    ``lat_kernel_ms``: the kernel's receive time of the subscriber's read (SO_TIMESTAMPNS) - send
    time, which leaves out the load generator's own wake-up delay. Over the messages sent in the
    window (after the warm-up): p50 / p99 / max, and lost = sent in the window, not delivered within
    ``--drain`` s after it. Then, with ``--floor`` > 0, the same pacing
    through an echo socket inside this process (no broker): what the load generator and the
    loopback alone cost."""
    level = args.mqtt
    st = State()
    sub = await connect_kernel_stamped(args.port, lambda: StampedSubscriber(st, "sub", level, 1),
                                       connect_packet("bench-lat-sub", level))
    sub.record_latency = True
    await subscribe(sub, "bench/lat", 1, level)
    pub = await connect(args.port, lambda: SeqPublisher(st, "pub", "bench/lat", args.payload, level, 65535, 0),
                        connect_packet("bench-lat-pub", level))
    task = asyncio.ensure_future(paced(st, args.rate, lambda: pub.transport.write(pub.build(1))))
    w = Window(args.broker_pid)
    try:
        await asyncio.sleep(args.warmup)
        seq_a = pub.seq
        a = w.snap(sub.unique, seq_a)
        await asyncio.sleep(args.duration)
        seq_b = pub.seq
        b = w.snap(sub.unique, seq_b)
    finally:
        st.stop = True
        pacing = await task
    give_up = time.monotonic() + args.drain
    seen = sub.seen[0]
    while time.monotonic() < give_up and sum(seen[seq_a:seq_b]) < seq_b - seq_a:
        await asyncio.sleep(0.01)
    delivered = sum(seen[seq_a:seq_b])
    if args.latency_trace:  # every message: sequence, latency, latency to the kernel's receive time (ms)
        with open(args.latency_trace, "w") as f:
            f.write(f"# window: sequences {seq_a}..{seq_b - 1}; {args.rate:g} msg/s\n")
            f.writelines(f"{seq} {ns / 1e6:.3f} {'' if kns is None else f'{kns / 1e6:.3f}'}\n"
                         for seq, ns, kns in sub.latency)
    lat = [ns / 1e6 for seq, ns, _ in sub.latency if seq_a <= seq < seq_b]
    lat_kernel = [kns / 1e6 for seq, _, kns in sub.latency if seq_a <= seq < seq_b and kns is not None]
    close_all([pub, sub])
    summary = Window.summary(a, b)
    out = {
        "unit": "ms", "rate_target": args.rate, "sent_rate": round(summary["sent_rate"], 1),
        "sent_in_window": seq_b - seq_a, "delivered_in_window": delivered, "lost": seq_b - seq_a - delivered,
        **ms_stats("lat_ms", lat), "samples": len(lat), **ms_stats("lat_kernel_ms", lat_kernel),
        "kernel_samples": len(lat_kernel), "duplicates": sub.dups, "short_writes": sub.transport.short_writes,
        "acked_by_broker": pub.acked, "payload_bytes": max(args.payload, STAMP.size),
        "pacing": pacing, "window_s": summary["window_s"],
        "loadgen_cpu_pct": summary["loadgen_cpu_pct"], "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "errors": [e for e in st.errors if "connection lost" not in e][:10],
    }
    if args.floor > 0:
        out.update(await loopback_floor(args, args.floor))
    return out


async def fanin_qos1_persistent(args) -> dict:
    """fanin_qos1 with a persistent subscriber: it connects with Clean Session 0 (MQTT 5: Clean
    Start 0 and Session Expiry Interval 3600) and subscribes at QoS 1 before the publishers start,
    so a broker that keeps sessions durable must store each message before its PUBACK. Each payload
    carries (publisher, sequence); the rate counts unique (publisher, sequence) deliveries. After
    the window the publishers stop and the subscriber drains (until everything sent has arrived,
    or nothing new arrived for ``--drain-idle`` s, at most ``--drain-max`` s); lost = acknowledged by
    the broker to its publisher (PUBACK) but never delivered."""
    level = args.mqtt
    n_pubs = args.publishers or 10
    st = State(fanout=1, cap=args.backlog)
    props = prop_u32(SESSION_EXPIRY_INTERVAL, 3600) if level == 5 else b""
    # a clean connection first discards whatever session an earlier run left on this broker
    # [MQTT-3.1.2-6], so that no message queued for it then is counted now
    old = await connect(args.port, lambda: Client(State(), "sub-clean"), connect_packet("bench-q1p-sub", level))
    close_all([old])
    await asyncio.sleep(0.05)
    sub = await connect(args.port, lambda: StampedSubscriber(st, "sub", level, n_pubs),
                        connect_packet("bench-q1p-sub", level, clean=False, props=props))
    await subscribe(sub, "bench/q1p/+", 1, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: SeqPublisher(st, f"pub{i}", f"bench/q1p/{i}", args.payload, level, args.window, i),
         connect_packet(f"bench-q1p-pub-{i}", level)) for i in range(n_pubs)])
    task = asyncio.ensure_future(pump_qos1(st, pubs))
    try:
        out = await measure(st, args, count=lambda st: sub.unique)
    finally:
        st.stop = True
        st.wake.set()
        await task
    t0 = time.monotonic()
    sent = sum(p.seq for p in pubs)
    last, last_change = None, t0
    while sub.unique < sent and time.monotonic() - t0 < args.drain_max:
        now = (sub.unique, sum(p.acked for p in pubs))
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > args.drain_idle:
            break
        await asyncio.sleep(0.02)
    drain_s = time.monotonic() - t0
    acked = sum(p.acked for p in pubs)
    lost = sum(count_missing(p.acked_seqs, sub.seen[i]) for i, p in enumerate(pubs))
    close_all(pubs + [sub])
    out.update(unit="msg/s", publishers=n_pubs, subscribers=1, payload_bytes=max(args.payload, STAMP.size),
               window=args.window, backlog_cap=args.backlog, sent=sent, acked_by_broker=acked,
               delivered_unique=sub.unique, duplicates=sub.dups, lost=lost, unacked_at_end=sent - acked,
               drain_s=round(drain_s, 2), bad_payloads=sub.bad, errors=st.errors[:10])
    return out


async def connect_hold(args) -> dict:
    """``--clients`` connections (default 5,000), each a CONNECT with a will (keep-alive 60, clean
    session), ``--concurrency`` in flight, spread over ``--source-addrs`` source addresses, all kept
    open. connects/s = connected / time until the last CONNACK. The broker's VmRSS is read before,
    right after the last CONNACK and after ``--hold`` s more: KiB per idle connection =
    (after the hold - before) / connected. Ends with DISCONNECT on every connection (no wills)."""
    level = args.mqtt
    n = args.clients
    fd_limit = raise_fd_limit()
    await asyncio.sleep(0.2)
    rss0 = rss_kb(args.broker_pid)
    packets = [connect_packet(f"bench-hold-{i}", level, keep_alive=60, will=(f"bench/hold-will/{i}", b"gone", 0))
               for i in range(n)]
    w = Window(args.broker_pid)
    a = w.snap(0)
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        b = w.snap(connected)
        rss1 = rss_kb(args.broker_pid)
        await asyncio.sleep(args.hold)
        rss2 = rss_kb(args.broker_pid)
    finally:
        disconnect_all(socks)
    summary = Window.summary(a, b)
    per = (rss2 - rss0) / connected if connected and rss0 and rss2 else None
    return {
        "unit": "connects/s", "clients": n, "connected": connected, "refused": refused,
        "rate": connected / took if took else None, "connect_all_s": round(took, 3),
        "rss_before_kb": rss0, "rss_connected_kb": rss1, "rss_held_kb": rss2,
        "rss_before_mib": round(rss0 / 1024, 1) if rss0 else None,
        "rss_held_mib": round(rss2 / 1024, 1) if rss2 else None,
        "kib_per_conn": round(per, 2) if per is not None else None, "hold_s": args.hold,
        "concurrency": args.concurrency, "source_addrs": args.source_addrs, "fd_limit": fd_limit,
        "window_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "error_count": len(errors), "errors": errors[:10],
    }


async def wait_arrivals(obs: WillObserver, want: int, give_up: float, quiet: float, t_start: float) -> None:
    """Until ``want`` wills arrived, or none for ``quiet`` s (once ``quiet`` s have passed since
    ``t_start``), or ``give_up`` (monotonic)."""
    got, last_change = 0, t_start
    while len(obs.arrivals) < want:
        now = time.monotonic()
        if now >= give_up:
            break
        if len(obs.arrivals) != got:
            got, last_change = len(obs.arrivals), now
        elif now - last_change > quiet and now - t_start > quiet:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # strays / duplicates


async def wills_drop_qos1(args) -> dict:
    """An observer subscribes to ``bench/w5k/+`` at QoS 1 and acks every PUBLISH; ``--clients``
    clients (default 5,000) connect, each with a QoS 1 will on its own topic ``bench/w5k/<i>``
    (keep-alive 60, clean session); after ``--settle`` s all their sockets are closed in one loop,
    without DISCONNECT (``--drop rst``: SO_LINGER 0, the broker reads a connection reset;
    ``fin``: a plain close, the broker reads EOF). Reports wills received, and the arrival times
    after the drop began (p50 / p99 / last). Waits until all have arrived, or none arrived for
    ``--quiet`` s, at most ``--will-timeout`` s."""
    level = args.mqtt
    n = args.clients
    raise_fd_limit()
    st = State()
    prefix = "bench/w5k/"
    obs = await connect(args.port, lambda: Qos1WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-w5k-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 1, level)
    packets = [connect_packet(f"bench-w5k-{i}", level, keep_alive=60, will=(f"{prefix}{i}", b"gone", 1))
               for i in range(n)]
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        await asyncio.sleep(args.settle)
        early = len(obs.arrivals)  # wills before the drop: none expected
        w = Window(args.broker_pid)
        a = w.snap(0)
        t_drop = time.monotonic()
        times = drop_all(socks, args.drop)
        socks = []
        drop_s = max((t for t in times if t is not None), default=t_drop) - t_drop
        await wait_arrivals(obs, connected, t_drop + args.will_timeout, args.quiet, t_drop)
        b = w.snap(len(obs.arrivals))
    finally:
        disconnect_all(socks)
        st.stop = True
        close_all([obs])
    arrivals = [1000 * (t - t_drop) for i, t in obs.arrivals.items() if times[i] is not None]
    if args.latency_trace:  # every client: index, its close, its will's arrival (ms after the drop began)
        with open(args.latency_trace, "w") as f:
            f.writelines(f"{i} {'' if t is None else f'{1000 * (t - t_drop):.3f}'} "
                         f"{f'{1000 * (obs.arrivals[i] - t_drop):.3f}' if i in obs.arrivals else ''}\n"
                         for i, t in enumerate(times))
    summary = Window.summary(a, b)
    stats = ms_stats("arrival_ms", arrivals, 1)
    return {
        "unit": "ms", "clients": n, "connected": connected, "refused": refused, "connect_all_s": round(took, 3),
        "drop": args.drop, "drop_s": round(drop_s, 4), "wills_received": len(arrivals),
        "wills_before_drop": early, "strays": obs.strays, **stats, "last_ms": stats["arrival_ms_max"],
        "waited_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "error_count": len(errors), "errors": (errors + [e for e in st.errors if "connection lost" not in e])[:10],
    }


async def delayed_will(args) -> dict:
    """MQTT 5 (whatever ``--mqtt`` says): an observer subscribes to ``bench/dwill/+``; ``--clients``
    clients (default 1,000) connect with Session Expiry Interval ``--session-expiry`` (60) and a
    will with Will Delay Interval ``--will-delay`` (2 s) (keep-alive 60); after ``--settle`` s all
    sockets are closed in one loop without DISCONNECT (``--drop``). The broker must publish each
    will once the will delay has passed (or the session has expired, if sooner) [MQTT-3.1.3-9];
    delay = arrival at the observer - (that socket's close time + will delay)."""
    level = 5
    n = args.clients
    raise_fd_limit()
    st = State()
    prefix = "bench/dwill/"
    obs = await connect(args.port, lambda: WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-dwill-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 0, level)
    props = prop_u32(SESSION_EXPIRY_INTERVAL, args.session_expiry)
    will_props = prop_u32(WILL_DELAY_INTERVAL, args.will_delay)
    packets = [connect_packet(f"bench-dwill-{i}", level, keep_alive=60, will=(f"{prefix}{i}", b"gone", 0),
                              props=props, will_props=will_props) for i in range(n)]
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        await asyncio.sleep(args.settle)
        early_before_drop = len(obs.arrivals)
        w = Window(args.broker_pid)
        a = w.snap(0)
        t_drop = time.monotonic()
        times = drop_all(socks, args.drop)
        socks = []
        last_close = max((t for t in times if t is not None), default=t_drop)
        await wait_arrivals(obs, connected, last_close + args.will_delay + args.will_timeout,
                            args.will_delay + args.quiet, t_drop)
        b = w.snap(len(obs.arrivals))
    finally:
        disconnect_all(socks)
        st.stop = True
        close_all([obs])
    delays = [1000 * (t - (times[i] + args.will_delay)) for i, t in obs.arrivals.items() if times[i] is not None]
    summary = Window.summary(a, b)
    return {
        "unit": "ms", "mqtt": 5, "clients": n, "connected": connected, "refused": refused,
        "connect_all_s": round(took, 3), "will_delay_s": args.will_delay, "session_expiry_s": args.session_expiry,
        "drop": args.drop, "drop_s": round(last_close - t_drop, 4), "wills_received": len(delays),
        "wills_before_drop": early_before_drop, "strays": obs.strays,
        **ms_stats("delay_ms", delays, 1),
        "waited_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "error_count": len(errors), "errors": (errors + [e for e in st.errors if "connection lost" not in e])[:10],
    }


SCENARIOS = {
    "will_under_load": will_under_load,
    "fanin_qos0": fanin_qos0,
    "fanout_qos0": fanout_qos0,
    "fanin_qos1": fanin_qos1,
    "connect_rate": connect_rate,
    "will_punctuality": will_punctuality,
    "latency_qos1": latency_qos1,
    "fanin_qos1_persistent": fanin_qos1_persistent,
    "connect_hold": connect_hold,
    "wills_drop_qos1": wills_drop_qos1,
    "delayed_will": delayed_will,
}
# --clients when not given
DEFAULT_CLIENTS = {"connect_hold": 5000, "wills_drop_qos1": 5000, "delayed_will": 1000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=3.0, help="measuring window, seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="traffic before the window, seconds")
    p.add_argument("--mqtt", type=int, choices=(4, 5), default=4, help="protocol level: 4 = 3.1.1, 5 = 5.0")
    p.add_argument("--broker-pid", type=int, help="read the broker's CPU time from /proc")
    p.add_argument("--payload", type=int, default=64, help="payload bytes")
    p.add_argument("--batch", type=int, default=100, help="QoS 0 PUBLISHes per write")
    p.add_argument("--backlog", type=int, default=100_000,
                   help="end-to-end cap on published-but-not-delivered messages (0 = open loop)")
    p.add_argument("--publishers", type=int, default=0, help="default: 50 (fanin_qos0), 10 (fanin_qos1)")
    p.add_argument("--subscribers", type=int, default=0, help="default: 100 (fanout_qos0)")
    p.add_argument("--window", type=int, default=100, help="QoS 1 in-flight messages per publisher")
    p.add_argument("--concurrency", type=int, default=32, help="connect_rate: parallel connectors")
    p.add_argument("--source-addrs", type=int, default=32,
                   help="connect_rate: spread client sockets over 127.0.0.2..(N+1); 0 = no bind")
    p.add_argument("--clients", type=int, default=None,
                   help="clients: will_punctuality 200, connect_hold 5000, wills_drop_qos1 5000, delayed_will 1000")
    p.add_argument("--connect-timeout", type=float, default=30.0,
                   help="will scenarios, connect_hold: how long a client waits for its TCP connect and its CONNACK")
    p.add_argument("--will-timeout", type=float, default=4.0,
                   help="will scenarios: wait at most this long past the last deadline (wills_drop_qos1: the drop)")
    p.add_argument("--rate", type=float, default=1000.0, help="latency_qos1: messages per second")
    p.add_argument("--drain", type=float, default=1.0,
                   help="latency_qos1: wait this long after the window for the window's messages")
    p.add_argument("--latency-trace", metavar="FILE", help="latency_qos1: write every message's latency to FILE; "
                   "wills_drop_qos1: every client's close and will arrival time")
    p.add_argument("--floor", type=float, default=1.0,
                   help="latency_qos1: seconds of the loopback-only baseline after the window (0 = none)")
    p.add_argument("--drain-idle", type=float, default=2.0,
                   help="fanin_qos1_persistent: stop draining after this long without a new delivery")
    p.add_argument("--drain-max", type=float, default=15.0, help="fanin_qos1_persistent: drain at most this long")
    p.add_argument("--hold", type=float, default=1.0, help="connect_hold: keep the connections open this long")
    p.add_argument("--settle", type=float, default=0.5,
                   help="wills_drop_qos1, delayed_will: pause between the last CONNACK and the drop")
    p.add_argument("--drop", choices=("rst", "fin"), default="rst",
                   help="wills_drop_qos1, delayed_will: close with SO_LINGER 0 (reset) or a plain close (FIN)")
    p.add_argument("--quiet", type=float, default=2.0,
                   help="wills_drop_qos1, delayed_will: stop waiting after this long without a new will")
    p.add_argument("--will-delay", type=int, default=2, help="delayed_will: Will Delay Interval, s")
    p.add_argument("--session-expiry", type=int, default=60, help="delayed_will: Session Expiry Interval, s")
    args = p.parse_args(argv)
    if args.clients is None:
        args.clients = DEFAULT_CLIENTS.get(args.scenario, 200)
    return args


async def amain(args) -> dict:
    limit = (args.warmup + args.duration + args.will_timeout + args.will_delay + args.drain + args.floor
             + args.drain_max + args.hold + 60)
    result = await asyncio.wait_for(SCENARIOS[args.scenario](args), limit)
    result["scenario"] = args.scenario
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        run = uvloop.run
        loop_name = "uvloop " + uvloop.__version__
    except ImportError:  # pragma: no cover
        run = asyncio.run
        loop_name = "asyncio"
    try:
        result = run(amain(args))
    except Exception as e:  # report, don't hide: the runner records it
        result = {"scenario": args.scenario, "failed": f"{type(e).__name__}: {e}"}
    result["loop"] = loop_name
    result.setdefault("mqtt", args.mqtt)  # delayed_will is MQTT 5 whatever --mqtt says
    print(json.dumps(result))
    return 0 if "failed" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
