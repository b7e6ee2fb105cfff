"""The will timeline: for each client id, what happened to its will, when, and by which rule.

Events are kept in memory, bounded per client (the last ``TIMELINE_PER_CLIENT``) and in the number
of clients (the client with the oldest latest event is forgotten first). ``at`` is the core's
monotonic ``now``; the edge converts it for display, the recorder for the store (wall-clock).

Kinds (``will.py`` records them):

* ``armed``: the CONNECT was accepted with a will [MQTT-3.1.2-7]; ``no-will``: accepted without one;
  ``refused``: a CONNECT was refused, so nothing of it is stored;
* ``connection-ended``: the connection ended without DISCONNECT 0x00 (``data["cause"]`` says how:
  see ``will.CAUSES``); ``restored``: the broker restarted and found the will;
* ``deferred``: the will waits for its Will Delay or the recovery grace period (``data["fire_at"]``);
* ``cancelled``: discarded unpublished (``data["cause"]``: disconnect, reconnect, ...);
* ``published``: sent (``data["receivers"]``: how many subscriptions got it, maybe 0);
* ``dropped``: its delivery to one subscriber was dropped (``data["reason"]``: queue_full, ...);
* ``denied``: due, but not published: the ACL (acl_file) does not let its client publish on the
  will topic any more (``data["reason"]``: not_authorized); it is gone, as if published.

A ``sink`` (the persistence Recorder) is told of every new event and of every forgotten client, so
that the store keeps the same history; ``load`` puts back what the store held at start-up.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from ..storage.base import TIMELINE_PER_CLIENT


@dataclass(slots=True, frozen=True)
class WillEvent:
    at: float
    kind: str
    detail: str
    rule: str | None = None
    data: dict = field(default_factory=dict, compare=False)
    seq: int = field(default=0, compare=False)  # increasing across all clients


class TimelineSink(Protocol):
    def timeline_event(self, client_id: str, event: WillEvent) -> None: ...

    def timeline_forgotten(self, client_id: str) -> None: ...


class Timeline:
    def __init__(self, per_client: int = TIMELINE_PER_CLIENT, max_clients: int = 100_000,
                 sink: TimelineSink | None = None):
        self.per_client = per_client
        self.max_clients = max_clients
        self.sink = sink
        self.last_seq = 0
        # per client a plain list trimmed to per_client (a deque would cost ~600 bytes per client
        # even when it holds one event)
        self._events: OrderedDict[str, list[WillEvent]] = OrderedDict()

    def record(self, client_id: str, at: float, kind: str, detail: str, rule: str | None = None,
               **data) -> WillEvent:
        if rule and detail.endswith(f" [{rule}]"):  # an error's text may end with its rule: shown once
            detail = detail[: -len(rule) - 3]
        self.last_seq += 1
        event = WillEvent(at, kind, detail, rule, data, self.last_seq)
        q = self._queue(client_id)
        q.append(event)
        if len(q) > self.per_client:
            del q[0]
        if self.sink is not None:
            self.sink.timeline_event(client_id, event)
        return event

    def load(self, client_id: str, events: list[WillEvent]) -> None:
        """Put back events the store held (start-up; call in the order of each client's latest event)."""
        q = self._queue(client_id)
        q.extend(events)
        if len(q) > self.per_client:
            del q[: len(q) - self.per_client]
        if events:
            self.last_seq = max(self.last_seq, max(e.seq for e in events))

    def _queue(self, client_id: str) -> list[WillEvent]:
        q = self._events.get(client_id)
        if q is None:
            q = self._events[client_id] = []
            while len(self._events) > self.max_clients:
                forgotten, _ = self._events.popitem(last=False)
                if self.sink is not None:
                    self.sink.timeline_forgotten(forgotten)
        else:
            self._events.move_to_end(client_id)
        return q

    def events(self, client_id: str) -> list[WillEvent]:
        return list(self._events.get(client_id, ()))

    def last_kind(self, client_id: str) -> str | None:
        q = self._events.get(client_id)
        return q[-1].kind if q else None

    def kinds(self, client_id: str) -> list[str]:
        return [e.kind for e in self._events.get(client_id, ())]

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._events

    def __len__(self) -> int:
        return len(self._events)
