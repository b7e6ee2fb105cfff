"""The load generator's connections: one asyncio Protocol per client, walking incoming packets by
fixed header only, with the counters shared by all connections of a scenario (State); how to
connect, subscribe and close them."""

from __future__ import annotations

import asyncio
import time

from .stats import mark
from .wire import DISCONNECT, PID2, STAMP, payload_at, publish_qos1_parts, subscribe_packet

HOST = "127.0.0.1"


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
