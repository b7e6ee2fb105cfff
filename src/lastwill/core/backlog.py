"""A session's queue beyond what start-up loaded: its *backlog*, left in the store and read as the
queue drains to it (``Backlog.page``), so that a restart with millions of queued deliveries loads
their counts, not their payloads (storage/msgload.py).

A session's queue is, in order: ``session.queue`` (in memory), its backlog's runs (in the store),
then ``backlog.after``: what was queued for it since the restart (in memory, behind the backlog).
When the runs are used up, ``after`` joins ``session.queue`` and the backlog is gone.

Messages are shared: ``Pager`` keeps, per message id, how many backlog entries (of every session)
still refer to it (``unpaged``) and, once one session has read it, its ``Message`` (so that every
session's delivery of it shares one object and one count of stored deliveries). A message's
``store_refs`` counts its backlog entries too, so that the store keeps it while a backlog needs it.
Message Expiry is applied as a delivery is sent (delivery.py): an expired one is never sent
[MQTT-3.3.2-5]; a backlog is counted against max_queued_messages / max_queued_bytes like the rest of
the queue.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from ..logs import fast_logger
from ..storage.base import MessageReader, StoredBacklog
from .message import Message
from .persistence import message_from_stored
from .sessions import Delivery

log = fast_logger("lastwill.store")

PAGE_COUNT = 1000  # deliveries read from a backlog at a time


class References(Protocol):
    """What the recorder is told when a backlog entry leaves the store unread (its session ended)."""

    def reference_dropped(self, m: Message) -> None: ...

    def message_unreferenced(self, msg_id: int) -> None: ...


class Pager:
    """The messages of every session's backlog, read once, shared."""

    __slots__ = ("reader", "offset", "unpaged", "messages")

    def __init__(self, reader: MessageReader | None, offset: float, unpaged: dict[int, int]) -> None:
        self.reader = reader  # the store's read side
        self.offset = offset  # wall-clock minus monotonic (stored expiry times are wall-clock)
        self.unpaged = unpaged  # message id -> backlog entries not read yet (of every session)
        self.messages: dict[int, Message] = {}  # read (or restored) messages some backlog still refers to

    def adopt(self, m: Message) -> None:
        """A restored message: its backlog entries count as its stored deliveries too."""
        n = self.unpaged.get(m.store_id)
        if n:
            m.store_refs += n
            self.messages[m.store_id] = m

    def read(self, items: list[tuple]) -> list[Delivery]:
        """Deliveries of backlog entries (seq, msg id, flags, subscription ids), their messages read
        from the store once (the first session to need one)."""
        messages = self.messages
        missing = sorted({mid for _, mid, _, _ in items if mid not in messages})
        if missing and self.reader is not None:
            unpaged = self.unpaged
            for mid, sm in self.reader.read_messages(missing).items():
                m = messages[mid] = message_from_stored(sm, self.offset)
                m.store_refs = unpaged.get(mid, 0)
        out = []
        unpaged = self.unpaged
        for seq, mid, f, ids in items:
            m = messages.get(mid)
            left = unpaged.get(mid, 1) - 1
            if left > 0:
                unpaged[mid] = left
            else:
                unpaged.pop(mid, None)
                messages.pop(mid, None)
            if m is None:  # not in the store (written by hand?): nothing to send
                log.warning("stored message %d of a queued delivery (seq %d) is missing: skipped", mid, seq)
                continue
            out.append(Delivery(m, f & 3, bool(f & 4), ids or (), seq))
        return out

    def drop(self, items, refs: References) -> None:
        """Backlog entries (msg ids) that leave the store unread: their messages lose a reference."""
        messages, unpaged = self.messages, self.unpaged
        for mid in items:
            left = unpaged.get(mid, 1) - 1
            m = messages.get(mid)
            if left > 0:
                unpaged[mid] = left
            else:
                unpaged.pop(mid, None)
                messages.pop(mid, None)
            if m is not None:
                refs.reference_dropped(m)
            elif left <= 0:
                refs.message_unreferenced(mid)


class Backlog:
    """One session's queued deliveries left in the store, and what was queued behind them."""

    __slots__ = ("runs", "count", "bytes", "after", "pager")

    def __init__(self, stored: StoredBacklog, pager: Pager) -> None:
        self.runs: deque[list] = deque(stored.runs)  # [first seq, first msg id, count, flags, sub ids]
        self.count = stored.count  # entries in the runs
        self.bytes = stored.bytes  # their topics + payloads
        self.after: deque[Delivery] = deque()  # queued since the restart, behind the runs
        self.pager = pager

    def queued(self) -> int:
        return self.count + len(self.after)

    def first_seq(self) -> int:
        """The seq of its first queued delivery still stored (0: none)."""
        if self.runs:
            return self.runs[0][0]
        for d in self.after:
            if d.seq:
                return d.seq
        return 0

    def last_seq(self) -> int:
        return self.runs[-1][0] + self.runs[-1][2] - 1 if self.runs else 0

    def page(self, count: int = PAGE_COUNT) -> list[Delivery]:
        """Up to ``count`` deliveries from the front of the runs, read from the store."""
        runs = self.runs
        items = []
        while runs and len(items) < count:
            r = runs[0]
            seq, mid, n, f, ids = r
            k = min(n, count - len(items))
            items += [(seq + j, mid + j, f, ids) for j in range(k)]
            if k == n:
                runs.popleft()
            else:
                r[0], r[1], r[2] = seq + k, mid + k, n - k
        self.count -= len(items)
        out = self.pager.read(items)
        for d in out:
            m = d.message
            self.bytes -= len(m.payload) + len(m.topic)
        return out

    def drop(self, refs: References) -> None:
        """The session leaves the store: the entries of the runs lose their references."""
        self.pager.drop((r[1] + j for r in self.runs for j in range(r[2])), refs)
        self.runs.clear()
        self.count = 0
        self.bytes = 0
