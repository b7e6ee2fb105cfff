"""The will timeline: for each client id, what happened to its will, when, and by which rule.

Events are kept in memory, bounded per client and in the number of clients (oldest client
forgotten first). ``at`` is the core's monotonic ``now``; the edge converts it for display.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class WillEvent:
    at: float
    kind: str  # armed | connection-ended | deferred | cancelled | published | dropped | replaced
    detail: str
    rule: str | None = None
    data: dict = field(default_factory=dict, compare=False)


class Timeline:
    def __init__(self, per_client: int = 64, max_clients: int = 100_000):
        self.per_client = per_client
        self.max_clients = max_clients
        self._events: OrderedDict[str, deque[WillEvent]] = OrderedDict()

    def record(self, client_id: str, at: float, kind: str, detail: str, rule: str | None = None,
               **data) -> WillEvent:
        event = WillEvent(at, kind, detail, rule, data)
        q = self._events.get(client_id)
        if q is None:
            q = self._events[client_id] = deque(maxlen=self.per_client)
            if len(self._events) > self.max_clients:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(client_id)
        q.append(event)
        return event

    def events(self, client_id: str) -> list[WillEvent]:
        return list(self._events.get(client_id, ()))

    def kinds(self, client_id: str) -> list[str]:
        return [e.kind for e in self._events.get(client_id, ())]
