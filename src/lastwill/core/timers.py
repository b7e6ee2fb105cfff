"""One queue of timers ordered by absolute deadline.

Keep-alive, connect timeout, will delay, session expiry and retained-message expiry all live here,
keyed by ``(TimerKind, ident)``, e.g. ``(TimerKind.WILL, client_id)``. Each module that owns a kind
registers its handler (``register``); ``fire_due`` calls them, earliest deadline first. Rescheduling or cancelling a key is O(log n)
with lazy deletion: stale heap entries are skipped when they surface. The edge keeps one timer
armed at ``next_deadline()``.

Ordering is by deadline only (ties by insertion), never by interval: a will scheduled later with a
shorter delay surfaces before an earlier, longer one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from enum import IntEnum


class TimerKind(IntEnum):
    KEEP_ALIVE = 1  # ident: conn_id (core/connection.py)
    CONNECT = 2  # no CONNECT (or no password answer) within connect_timeout; ident: conn_id
    WILL = 3  # a pending will is due; ident: client_id (core/will.py)
    SESSION = 4  # an offline session expires; ident: client_id (core/ownership.py)
    RETAINED = 5  # a retained message expires; ident: topic (core/routing.py)
    RECOVERED = 6  # the recovery grace period after a restart ends; ident: client_id (core/announce.py)
    SYS = 7  # the next update of the $SYS/broker/... topics; ident: 0 (core/systree.py)
    PUMP = 8  # a session's queue goes on moving into flight next turn; ident: client_id (core/delivery.py)


TimerKey = tuple[TimerKind, Hashable]
TimerHandler = Callable[[Hashable, float], None]


class TimerQueue:
    __slots__ = ("_heap", "_live", "_seq", "_handlers")

    def __init__(self) -> None:
        self._handlers: dict[TimerKind, TimerHandler] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        # key -> its live heap entry (the same tuple object: one per timer, not two). An entry in the
        # heap that is not the one here is stale (cancelled or rescheduled) and skipped
        self._live: dict[Hashable, tuple[float, int, Hashable]] = {}
        self._seq = itertools.count()

    def schedule(self, key: Hashable, deadline: float) -> None:
        """Arm ``key`` at ``deadline``, replacing any earlier schedule of the same key."""
        entry = (deadline, next(self._seq), key)
        self._live[key] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
            self._compact()

    def cancel(self, key: Hashable) -> bool:
        return self._live.pop(key, None) is not None

    def deadline_of(self, key: Hashable) -> float | None:
        entry = self._live.get(key)
        return entry[0] if entry else None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def __len__(self) -> int:
        return len(self._live)

    def next_deadline(self) -> float | None:
        heap, live = self._heap, self._live
        while heap:
            entry = heap[0]
            if live.get(entry[2]) is entry:
                return entry[0]
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float, limit: int | None = None) -> list[Hashable]:
        """Remove and return every key whose deadline is <= now (at most ``limit``), earliest first."""
        due = []
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            entry = heapq.heappop(heap)
            key = entry[2]
            if live.get(key) is entry:
                del live[key]
                due.append(key)
        return due

    def register(self, kind: TimerKind, handler: TimerHandler) -> None:
        """``handler(ident, now)`` runs when a timer of ``kind`` is due."""
        self._handlers[kind] = handler

    def fire_due(self, now: float, limit: int | None = None) -> None:
        """Run the handler of every timer due at ``now`` (at most ``limit``), earliest first."""
        handlers = self._handlers
        for kind, ident in self.pop_due(now, limit):
            handlers[kind](ident, now)

    def _compact(self) -> None:
        self._heap = list(self._live.values())
        heapq.heapify(self._heap)
