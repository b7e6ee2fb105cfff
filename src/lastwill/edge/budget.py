"""Bounded read work per event-loop turn, round-robin over the connections that have more to read, so
that a flood on some connections does not delay timers (wills), CONNECTs, PINGREQs and writes on the
others. The protocols of tcp.py and websocket.py hand every read to ``ReadBudget.received``."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import perf_counter

# At most this much is read from one socket per read, into one buffer shared by every connection
# (copied out at once). libuv repeats the read up to 32 times per readiness while the buffer comes
# back full, so this alone does not bound a loop turn: ReadBudget does.
READ_CHUNK = 32 * 1024
READ_BUFFER = memoryview(bytearray(READ_CHUNK))
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

    __slots__ = ("turn_running", "request_turn", "budget", "clock", "turn_started", "waiting", "chunk_cost", "held",
                 "pauses", "deferred_bytes")

    def __init__(self, turn_running: Callable[[], bool], request_turn: Callable[[], None],
                 budget: float = TURN_BUDGET, clock: Callable[[], float] = perf_counter) -> None:
        # whether the server's end-of-turn flush is already scheduled (a turn is under way), and how
        # to ask for one (Server._flush calls next_turn)
        self.turn_running = turn_running
        self.request_turn = request_turn
        self.budget = budget
        self.clock = clock  # seconds, for what reads cost (tests give a fake one)
        self.turn_started = 0.0  # clock() when this turn's reads began (the end of Server._flush)
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
        started = self.clock()
        if not self.turn_running():  # the first read since the loop was idle: a turn starts
            self.turn_started = started
        if started - self.turn_started >= self.budget and self.deferred_bytes < DEFER_LIMIT:
            proto.deferred = [data]  # this turn's budget is spent: processed at the connection's next turn
            self.deferred_bytes += len(data)
            self._pause(proto)
            return
        proto.data_received(data)
        ended = self.clock()
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
            self.request_turn()  # a turn comes back for it (Server._flush calls next_turn)

    def process_deferred(self, proto) -> None:
        """Process the bytes ``proto`` read and has not processed yet (its turn, or it is closing)."""
        chunks = proto.deferred
        if chunks is None:
            return
        proto.deferred = None
        for data in chunks:
            self.deferred_bytes -= len(data)
            started = self.clock()
            proto.data_received(data)
            self._measured(proto, len(data), self.clock() - started)

    def next_turn(self) -> None:
        """A turn starts: serve the longest-waiting connections, as many as the budget fits."""
        waiting = self.waiting
        start = self.clock()
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
                if self.clock() - start >= self.budget:
                    break
        self.turn_started = start
