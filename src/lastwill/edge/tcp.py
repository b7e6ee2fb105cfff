"""One TCP connection: an asyncio (buffered) protocol that feeds bytes to the core. No coroutine per read.

ReadBudget bounds the read work of one event-loop turn, so that a flood on some connections does not
delay timers (wills), CONNECTs, PINGREQs and writes on the others."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

from .tls import cert_username

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

log = logging.getLogger("lastwill")

WRITE_HIGH_WATER = 1024 * 1024
# A connection that keeps sending while this much (plus max_packet_size) waits unsent to it is closed:
# a slow subscriber's deliveries stop at WRITE_HIGH_WATER (the core queues them), so only a client
# that does not read the answers to its own requests (PINGRESP, PUBACK, ...) gets here; without this
# the broker would buffer them without bound (docs/security.md "Slow subscribers")
UNSENT_HARD_LIMIT = 8 * WRITE_HIGH_WATER
# At most this much is read from one socket per read, into one buffer shared by every connection
# (copied out at once). libuv repeats the read up to 32 times per readiness while the buffer comes
# back full, so this alone does not bound a loop turn: ReadBudget does.
READ_CHUNK = 32 * 1024
_read_buffer = memoryview(bytearray(READ_CHUNK))
# Seconds of read processing per event-loop turn, all connections together (ReadBudget). libuv
# reads a readable socket up to 32 times per callback (32 x READ_CHUNK = 1 MiB): without a bound,
# 50 publishers flooding made one turn process up to 8 MB and last 0.2-0.6 s, and every timer
# (wills), PINGREQ, CONNECT and will delivery waited for the end of the turn (docs/benchmarks.md).
# 2 ms rather than 4: 1,000 keep-alive wills due at once under the fan-in flood came p99 20.6-22.8 ms
# late instead of 31-44 ms (3 runs each), and fan-in/fan-out throughput did not drop (2 runs each).
TURN_BUDGET = 0.002
# The smallest read buffer a connection is given: a connection whose bytes are expensive to process
# (a PUBLISH with many subscribers) gets a buffer sized so that one read takes at most half the
# budget to process, down to this (ReadBudget.received).
MIN_READ = 2048
# Bytes read but not yet processed, all connections together, past which a full read is processed
# at once whatever the budget (memory stays bounded when thousands of connections flood at once).
DEFER_LIMIT = 4 * 1024 * 1024


class ReadBudget:
    """Bounded work per event-loop turn, round-robin over the connections that have more to read.

    A read that fills the whole buffer means the socket has more. Once this turn has spent
    ``budget`` seconds, such a read is kept unprocessed (deferred) and its connection is paused
    (uv_read_stop, which also ends libuv's read loop for it) and queued, oldest first. At the start
    of each turn (the end of Server._flush, after the writes) the queue is served in order: deferred
    bytes are processed and the connection resumed, as long as the budget lasts, at least one
    connection per turn. A read that does not fill the buffer (a CONNECT, a PINGREQ, a client that is
    not flooding) is processed at once: it is what must not wait behind bulk traffic. Nothing is
    dropped or reordered: a connection's bytes are processed in the order they were read (bytes
    read while older ones wait go behind them), and the rest waits in its socket, where TCP flow
    control slows the client down, as a slower broker would.
    """

    __slots__ = ("server", "budget", "turn_started", "waiting", "chunk_cost", "held", "pauses", "deferred_bytes")

    def __init__(self, server: Server, budget: float = TURN_BUDGET) -> None:
        self.server = server
        self.budget = budget
        self.turn_started = 0.0  # perf_counter() when this turn's reads began (the end of Server._flush)
        self.waiting: deque = deque()  # paused protocols (MqttProtocol, WebSocketProtocol), oldest first
        self.chunk_cost = budget / 4  # seconds to process one full read buffer (moving average)
        self.held: set[int] = set()  # paused for a password check (edge/security.py), which resumes them
        self.pauses = 0  # connections paused for the budget, ever
        self.deferred_bytes = 0  # read and not yet processed, all connections

    def received(self, proto, data: bytes, full: bool) -> None:
        """``proto`` read ``data``; ``full``: it filled the read buffer (its socket may have more)."""
        deferred = proto.deferred
        if deferred is not None:  # older bytes of this connection wait: these go behind them
            deferred.append(data)
            self.deferred_bytes += len(data)
            self._pause(proto)
            return
        if not full:
            proto.data_received(data)
            return
        started = perf_counter()
        if not self.server.flush_scheduled:  # the first read since the loop was idle: a turn starts
            self.turn_started = started
        if started - self.turn_started >= self.budget and self.deferred_bytes < DEFER_LIMIT:
            proto.deferred = [data]  # this turn's budget is spent: processed at the connection's next turn
            self.deferred_bytes += len(data)
            self._pause(proto)
            return
        proto.data_received(data)
        ended = perf_counter()
        self._measured(proto, len(data), ended - started)
        if ended - self.turn_started >= self.budget:
            self._pause(proto)

    def _measured(self, proto, nbytes: int, cost: float) -> None:
        """A full read of ``nbytes`` took ``cost`` seconds to process: size the connection's next
        reads so that one takes at most half the budget (a flooding publisher with many subscribers
        gets small reads; one with few keeps READ_CHUNK)."""
        self.chunk_cost += (cost - self.chunk_cost) * 0.125
        if cost > 0:
            want = int(nbytes * self.budget / 2 / cost)
            size = READ_CHUNK if want >= READ_CHUNK else max(MIN_READ, want & ~1023)
            if size != len(proto.view):
                proto.resize(size)

    def _pause(self, proto) -> None:
        proto.transport.pause_reading()  # (a no-op when paused already, or closing)
        if not proto.throttled:
            proto.throttled = True
            self.waiting.append(proto)
            self.pauses += 1
            self.server.run(())  # a turn comes back for it (Server._flush calls next_turn)

    def process_deferred(self, proto) -> None:
        """Process the bytes ``proto`` read and has not processed yet (its turn, or it is closing)."""
        chunks = proto.deferred
        if chunks is None:
            return
        proto.deferred = None
        for data in chunks:
            self.deferred_bytes -= len(data)
            started = perf_counter()
            proto.data_received(data)
            self._measured(proto, len(data), perf_counter() - started)

    def next_turn(self) -> None:
        """A turn starts: serve the longest-waiting connections, as many as the budget fits."""
        waiting = self.waiting
        start = perf_counter()
        if waiting:
            n = max(1, int(self.budget / self.chunk_cost)) if self.chunk_cost > 0 else len(waiting)
            while waiting and n > 0:
                proto = waiting.popleft()
                proto.throttled = False
                self.process_deferred(proto)
                transport = proto.transport
                if not transport.is_closing() and not (proto.conn_id and proto.conn_id in self.held):
                    transport.resume_reading()
                n -= 1
                if perf_counter() - start >= self.budget:
                    break
        self.turn_started = start


class BudgetedProtocol(asyncio.BufferedProtocol):
    """What MqttProtocol and WebSocketProtocol share: reads into the shared buffer, handed to the
    server's ReadBudget, and the report of a connection's end to the core."""

    __slots__ = ("throttled", "deferred", "view")

    def __init__(self) -> None:
        self.throttled = False  # paused by ReadBudget, queued for its next turn
        self.deferred: list[bytes] | None = None  # read, not yet processed (ReadBudget)
        self.view = _read_buffer  # what the next read may fill (ReadBudget sizes it)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        view = self.view
        self.server.reads.received(self, bytes(view[:nbytes]), nbytes == len(view))

    def resize(self, size: int) -> None:
        self.view = _read_buffer if size >= READ_CHUNK else _read_buffer[:size]

    def report_lost(self, exc: Exception | None) -> None:
        """Tell the core the connection ended, with the cause recorded for it (or ``exc``)."""
        server = self.server
        server.transports.pop(self.conn_id, None)
        cause = server.lost_causes.pop(self.conn_id, None)
        if cause is None:
            cause = f"{type(exc).__name__}: {exc}" if exc is not None else "EOF"
        try:
            actions = server.core.connection_lost(self.conn_id, cause, server.loop.time())
        except Exception:
            log.exception("internal error handling the end of connection %s", self.conn_id)
            actions = []
        server.run(actions)


class MqttProtocol(BudgetedProtocol):
    __slots__ = ("server", "transport", "conn_id", "tls")

    def __init__(self, server: Server, tls: bool = False):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.tls = tls  # a tls_listen connection: called once the TLS handshake is done
        super().__init__()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        cert_user = None
        if self.tls:
            accepted, cert_user = cert_username(self.server, transport)
            if not accepted:  # a certificate without a CN when tls_cert_cn_as_username is on
                transport.abort()
                return
        # a subscriber may have this much unsent before it counts as slow (see core: Conn.paused)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        server = self.server
        self.conn_id = server.core.new_conn_id()
        server.transports[self.conn_id] = transport
        peer = transport.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        local = transport.get_extra_info("sockname")
        sockport = local[1] if isinstance(local, tuple) and len(local) >= 2 else 0
        server.run(server.core.open(self.conn_id, server.loop.time(), peer_text, sockport, cert_username=cert_user))

    def data_received(self, data: bytes) -> None:
        server = self.server
        unsent = self.transport.get_write_buffer_size()
        if unsent > UNSENT_HARD_LIMIT and unsent > UNSENT_HARD_LIMIT + server.config.max_packet_size:
            not_reading(server, self.conn_id, self.transport, unsent)
            return
        try:
            actions = server.core.data_received(self.conn_id, data, server.loop.time())
        except Exception:  # a bug in the core must cost one connection, never the broker
            log.exception("internal error handling data from connection %s; closing it", self.conn_id)
            server.lost_causes[self.conn_id] = "internal error in the broker"
            self.transport.close()
            return
        server.run(actions)

    def eof_received(self) -> bool:
        # a half-close ends the MQTT connection: returning False closes our side too, and
        # connection_lost follows with the cause recorded here
        self.server.lost_causes.setdefault(self.conn_id, "EOF (peer closed its side)")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deferred is not None:  # what it sent before it went (a DISCONNECT, say) counts first
            self.server.reads.process_deferred(self)
        self.report_lost(exc)

    def pause_writing(self) -> None:
        self.server.core.writing_paused(self.conn_id)

    def resume_writing(self) -> None:
        server = self.server
        server.run(server.core.writing_resumed(self.conn_id, server.loop.time()))


def not_reading(server: Server, conn_id: int, transport, unsent: int) -> None:
    """Close a connection that keeps sending but does not read: its unsent bytes are dropped (abort)."""
    conn = server.core.conns.get(conn_id)
    who = conn.client_id if conn is not None and conn.client_id else f"<conn {conn_id}>"
    hits = server.core.limit_hits
    hits["unsent_bytes"] = hits.get("unsent_bytes", 0) + 1
    log.warning("client_id=%s from %s closed: it keeps sending but does not read (%d bytes unsent to it)",
                who, conn.peer if conn is not None else "?", unsent)
    server.lost_causes[conn_id] = f"not reading its socket ({unsent} bytes unsent)"
    transport.abort()
