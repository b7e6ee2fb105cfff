"""A fake event loop and fake transports for unit tests of the edge (src/lastwill/edge): no sockets.

The Server runs with the real BrokerCore; only the loop and the sockets are fakes. ``Edge`` builds
the two around a ``Server``; ``Peer`` is one client connection: it hands bytes to the edge's
protocol exactly as the event loop does (``get_buffer`` / ``buffer_updated``), and decodes what the
edge wrote to its transport with the codec.

Time is a FakeClock: ``loop.time()`` reads it, and ``FakeLoop.advance`` moves it from timer to timer,
running what falls due (the core's timers, the half-close linger) on the way.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from lastwill.clock import FakeClock
from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Publish, Will
from lastwill.config import Config
from lastwill.edge.budget import ReadBudget
from lastwill.edge.server import Server
from lastwill.edge.tcp import MqttProtocol


class Handle:
    """What call_soon / call_at / call_later return: cancellable, like asyncio's handles."""

    def __init__(self, when: float, callback, args: tuple):
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The part of an asyncio loop the edge calls: time, call_soon, call_at, call_later.

    ``run_once`` is one loop iteration as asyncio runs it: the timers due now join the ready queue,
    then the callbacks that were ready when the iteration began run (those they schedule wait for
    the next iteration). Nothing runs unless a test says so."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.ready: deque[Handle] = deque()
        self.timers: list[tuple[float, int, Handle]] = []
        self._seq = itertools.count()
        self.iterations = 0

    def time(self) -> float:
        return self.clock.now

    def call_soon(self, callback, *args) -> Handle:
        handle = Handle(self.clock.now, callback, args)
        self.ready.append(handle)
        return handle

    def call_at(self, when: float, callback, *args) -> Handle:
        handle = Handle(when, callback, args)
        heapq.heappush(self.timers, (when, next(self._seq), handle))
        return handle

    def call_later(self, delay: float, callback, *args) -> Handle:
        return self.call_at(self.clock.now + delay, callback, *args)

    def run_once(self) -> None:
        self.iterations += 1
        while self.timers and self.timers[0][0] <= self.clock.now:
            _, _, handle = heapq.heappop(self.timers)
            self.ready.append(handle)
        for _ in range(len(self.ready)):
            handle = self.ready.popleft()
            if not handle.cancelled:
                handle.callback(*handle.args)

    def run(self, limit: int = 1000) -> None:
        """Iterate until nothing is ready (timers in the future stay pending)."""
        for _ in range(limit):
            if not self.ready and not self._due():
                return
            self.run_once()
        raise AssertionError(f"the loop was still busy after {limit} iterations")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: every timer due meanwhile runs at its own time, in order."""
        end = self.clock.now + seconds
        self.run()
        while self.timers and self.timers[0][0] <= end:
            when = self.timers[0][0]
            if when > self.clock.now:
                self.clock.set(when)
            self.run()
        self.clock.set(end)
        self.run()

    def _due(self) -> bool:
        return bool(self.timers) and self.timers[0][0] <= self.clock.now


class FakeTransport:
    """Records what the edge does to a connection; ``calls`` in order, also into the Edge's ``events``.

    close() and abort() report the end to the protocol (connection_lost) on the next loop iteration,
    once, like asyncio's transports. ``unsent`` is what get_write_buffer_size() reports;
    ``half_close`` is what can_write_eof() answers (asyncio's TLS transport answers False)."""

    def __init__(self, loop: FakeLoop, name: str, events: list, port: int):
        self.loop, self.name, self.events, self.port = loop, name, events, port
        self.protocol = None
        self.calls: list[str] = []
        self.written = bytearray()
        self.unsent = 0
        self.half_close = True
        self.closing = False
        self.eof_written = False
        self.lost = False

    def _record(self, call: str) -> None:
        self.calls.append(call)
        self.events.append((self.name, call))

    def write(self, data: bytes) -> None:
        assert not self.eof_written, f"{self.name}: write after write_eof"
        self._record("write")
        self.written += data

    def write_eof(self) -> None:
        self._record("write_eof")
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return self.half_close

    def close(self) -> None:
        self._record("close")
        self._end()

    def abort(self) -> None:
        self._record("abort")
        self._end()

    def _end(self) -> None:
        self.closing = True
        if not self.lost:
            self.lost = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self._record("pause_reading")

    def resume_reading(self) -> None:
        self._record("resume_reading")

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", self.port), "sockname": ("127.0.0.1", 1883)}.get(name, default)


class Peer:
    """One client connection to the edge: its protocol (the edge's MqttProtocol) and fake transport."""

    def __init__(self, edge: Edge, name: str, port: int):
        self.edge = edge
        self.name = name
        self.transport = FakeTransport(edge.loop, name, edge.events, port)
        self.protocol = MqttProtocol(edge.server)
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)
        self._decoder: Decoder | None = None
        self._decoded = 0
        self.received: list = []

    # -- what the client sends -------------------------------------------------------------------
    def read_size(self) -> int:
        """How many bytes the next read may hand over (the protocol's buffer)."""
        return len(self.protocol.get_buffer(-1))

    def read(self, data: bytes) -> bool:
        """One read of ``data``, as the loop does it; True if it filled the buffer (a full read)."""
        buf = self.protocol.get_buffer(-1)
        assert 0 < len(data) <= len(buf), f"{len(data)} bytes do not fit one read of {len(buf)}"
        buf[:len(data)] = data
        self.protocol.buffer_updated(len(data))
        return len(data) == len(buf)

    def send(self, data: bytes) -> None:
        """``data`` in as many reads as it takes, each as large as the buffer allows."""
        while data:
            n = min(len(data), self.read_size())
            self.read(data[:n])
            data = data[n:]

    def connect(self, client_id: str, level: int = 4, will: Will | None = None, **fields) -> None:
        self._decoder = Decoder(server_side=False, protocol_level=level)
        self.send(encode(Connect(client_id=client_id, protocol_level=level, will=will, **fields), level))

    def packet(self, packet) -> None:
        self.send(encode(packet, self._decoder.protocol_level))

    def eof(self) -> None:
        """The client half-closes: what the loop does when the socket reads EOF."""
        if not self.protocol.eof_received():
            self.transport.close()

    # -- what the edge wrote to it ---------------------------------------------------------------
    def packets(self) -> list:
        """Every packet written to this connection so far, decoded."""
        new = bytes(self.transport.written[self._decoded:])
        self._decoded = len(self.transport.written)
        if new:
            self.received += self._decoder.feed(new)
        return self.received

    def kinds(self) -> list[str]:
        return [type(p).__name__ for p in self.packets()]

    def publishes(self) -> list[Publish]:
        return [p for p in self.packets() if isinstance(p, Publish)]


class Edge:
    """A Server with the real BrokerCore on a FakeLoop. ``budget``: the ReadBudget's seconds per turn
    (0: every full read is deferred, and each turn serves exactly one waiting connection)."""

    def __init__(self, config: Config | None = None, budget: float | None = None, work_clock=None):
        self.clock = FakeClock()
        self.loop = FakeLoop(self.clock)
        kw = {} if budget is None else {"turn_budget": budget}
        if work_clock is not None:
            kw["work_clock"] = work_clock
        self.server = Server(config or Config(), **kw)
        self.server.loop = self.loop  # what Server.start() sets (it also opens the listeners)
        self.events: list[tuple[str, str]] = []  # (peer, transport call), every peer, in order
        self._ports = itertools.count(40000)

    @property
    def reads(self) -> ReadBudget:
        return self.server.reads

    def peer(self, name: str) -> Peer:
        return Peer(self, name, next(self._ports))

    def connected(self, name: str, level: int = 4, will: Will | None = None, **fields) -> Peer:
        """A peer whose CONNECT was accepted (the loop has run: its CONNACK is written)."""
        p = self.peer(name)
        p.connect(name, level, will=will, **fields)
        self.loop.run()
        assert p.kinds() == ["Connack"] and p.received[0].reason_code == 0, p.received
        return p


def publish_stream(topic: str, count: int, size: int, level: int = 4) -> bytes:
    """``count`` QoS 0 PUBLISHes to ``topic``, payload i = the number i (8 bytes) padded to ``size``."""
    return b"".join(encode(Publish(topic, i.to_bytes(8, "big").ljust(size, b"."), 0, False, False, None), level)
                    for i in range(count))


def sequence(publishes: list[Publish]) -> list[int]:
    """The numbers publish_stream put in the payloads, in the order they arrived."""
    return [int.from_bytes(p.payload[:8], "big") for p in publishes]


def _publish_of(nbytes: int, topic: str, level: int) -> bytes | None:
    """A QoS 0 PUBLISH of exactly ``nbytes`` (None where no payload length gives that size)."""
    empty = len(encode(Publish(topic, b"", 0, False, False, None), level))
    for payload_len in range(max(0, nbytes - empty - 3), max(0, nbytes - empty) + 1):
        pkt = encode(Publish(topic, b"f" * payload_len, 0, False, False, None), level)
        if len(pkt) == nbytes:
            return pkt
    return None


def filler(nbytes: int, topic: str = "filler", level: int = 4) -> bytes:
    """QoS 0 PUBLISHes to ``topic`` (nobody subscribes to it) totalling exactly ``nbytes`` (>= 12)."""
    out = []
    while nbytes > 2048:
        out.append(_publish_of(1000, topic, level))
        nbytes -= 1000
    last = _publish_of(nbytes, topic, level)
    if last is None:  # a size the Remaining Length's encoding skips: two packets instead
        out += [_publish_of(nbytes - 20, topic, level), _publish_of(20, topic, level)]
    else:
        out.append(last)
    return b"".join(out)
