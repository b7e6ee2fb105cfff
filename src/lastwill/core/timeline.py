"""The will timeline: for each client id, what happened to its will, when, and by which rule.

Events are kept in memory, bounded per client (the last ``TIMELINE_PER_CLIENT``) and in the number
of clients (the client with the oldest latest event is forgotten first). ``at`` is the core's
monotonic ``now``; the edge converts it for display, the recorder for the store (wall-clock).

Kinds (``EventKind``; ``will.py`` records them):

* ``armed``: the CONNECT was accepted with a will [MQTT-3.1.2-7]; ``no-will``: accepted without one;
  ``refused``: a CONNECT was refused, so nothing of it is stored;
* ``connection-ended``: the connection ended without DISCONNECT 0x00 (``data["cause"]`` says how:
  a ``causes.Cause`` value); ``restored``: the broker restarted and found the will;
* ``deferred``: the will waits for its Will Delay or the recovery grace period (``data["fire_at"]``);
* ``cancelled``: discarded unpublished (``data["cause"]``: a ``will.CancelCause`` value);
* ``published``: sent (``data["receivers"]``: how many subscriptions got it, maybe 0);
* ``dropped``: its delivery to one subscriber was dropped (``data["reason"]``: a ``will.DropReason``);
* ``operator``: an operator disconnected the client or deleted its session through the admin API
  (the detail says who asked; the will's own decisions follow as events of their own);
* ``denied``: due, but not published: the ACL (acl_file) does not let its client publish on the
  will topic any more (``data["reason"]``: not_authorized); it is gone, as if published.

A ``sink`` (the persistence Recorder) is told of every new event and of every forgotten client, so
that the store keeps the same history; ``load`` puts back what the store held at start-up.

Memory: every client with a will has at least its ``armed`` event, so an event is kept compact (a
``WillEvent`` with its detail text and data dict cost ~430 bytes; a client with 10,000 idle
connections has 10,000 of them): one flat tuple ``(seq, at, kind, detail, rule, keys, *values)``
(see ``Record``), the data's key names one shared tuple per shape, and ``detail`` either the text
or a function that writes it from the data when the event is read (``events``, the store). A
client with one event holds that tuple itself, not a list of one. ``WillEvent`` objects are made
only when events are read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Union

from ..storage.base import TIMELINE_PER_CLIENT


class EventKind(StrEnum):
    """What happened to a will. The values are what the store, the admin API and ``explain`` show."""

    ARMED = "armed"
    NO_WILL = "no-will"
    REFUSED = "refused"
    CONNECTION_ENDED = "connection-ended"
    RESTORED = "restored"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"
    PUBLISHED = "published"
    DROPPED = "dropped"
    DENIED = "denied"
    OPERATOR = "operator"  # an operator's action on the client (admin API): what, and who asked


# The keys of an event's data that hold a time: monotonic in memory, wall-clock in the store and in
# the admin API (the only one today: a deferred will's deadline)
TIME_KEYS = frozenset({"fire_at"})


@dataclass(slots=True, frozen=True)
class WillEvent:
    at: float
    kind: EventKind | str  # str: read back from a store, compares equal to its EventKind
    detail: str
    rule: str | None = None
    data: dict = field(default_factory=dict, compare=False)
    seq: int = field(default=0, compare=False)  # increasing across all clients


# An event as kept: (seq, at, kind, detail, rule, keys, *values). ``keys``: the data's key names (a
# shared tuple); ``values``: their values, in order. Keys starting with "_" are not part of the data:
# they are arguments of a ``detail`` that is a function (called with the whole key -> value dict).
Record = tuple
Detail = Union[str, Callable[[dict], str]]

_SEQ, _AT, _KIND, _DETAIL, _RULE, _KEYS = range(6)
_KEY_TUPLES: dict[tuple, tuple] = {}  # one tuple per shape of data, shared by every event of that shape


def _keys(keys: tuple) -> tuple:
    shared = _KEY_TUPLES.get(keys)
    if shared is None:
        if len(_KEY_TUPLES) >= 1024:  # shapes come from the code (and stores it wrote): never this many
            return keys
        shared = _KEY_TUPLES[keys] = keys
    return shared


def make_record(seq: int, at: float, kind: str, detail: Detail, rule: str | None, data: dict) -> Record:
    keys = tuple(data)
    return (seq, at, kind, detail, rule, _KEY_TUPLES.get(keys) or _keys(keys), *data.values())


# per shape of data (its key names): whether some keys are the detail's ("_"), and the keys that
# are times (TIME_KEYS: the store keeps them as wall-clock)
_SHAPES: dict[tuple, tuple[bool, tuple[str, ...]]] = {}


def _shape(keys: tuple) -> tuple[bool, tuple[str, ...]]:
    shape = _SHAPES.get(keys)
    if shape is None:
        shape = (any(k[:1] == "_" for k in keys), tuple(k for k in keys if k in TIME_KEYS))
        if len(_SHAPES) < 1024:
            _SHAPES[keys] = shape
    return shape


def detail_and_data(record: Record, time_offset: float = 0.0) -> tuple[str, dict]:
    """A record's detail text (written now if it is a function) and its data (a new dict), with the
    times in it moved by ``time_offset`` (monotonic -> wall-clock for the store)."""
    keys = record[_KEYS]
    detail = record[_DETAIL]
    if not keys:
        return (detail if isinstance(detail, str) else detail({})), {}
    data = dict(zip(keys, record[_KEYS + 1:], strict=False))  # (make_record wrote one value per key)
    if not isinstance(detail, str):
        detail = detail(data)
    private, times = _SHAPES.get(keys) or _shape(keys)
    if private:
        data = {k: v for k, v in data.items() if k[:1] != "_"}
    if time_offset and times:
        for k in times:
            v = data[k]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                data[k] = v + time_offset
    return detail, data


def expand(record: Record) -> WillEvent:
    """The event a record stands for (its detail written, its data a new dict)."""
    detail, data = detail_and_data(record)
    return WillEvent(record[_AT], record[_KIND], detail, record[_RULE], data, record[_SEQ])


class TimelineSink(Protocol):
    def timeline_event(self, client_id: str, event: Record) -> None:
        """A new event (``expand(event)`` gives its WillEvent)."""

    def timeline_forgotten(self, client_id: str) -> None: ...

    def timeline_dropped(self, client_id: str, seqs: list[int]) -> None:
        """These events of the client were dropped (its oldest beyond the bound, or all of a
        forgotten client): the store, which keeps the same events, deletes them by seq."""


class Timeline:
    def __init__(self, per_client: int = TIMELINE_PER_CLIENT, max_clients: int = 100_000,
                 sink: TimelineSink | None = None):
        self.per_client = per_client
        self.max_clients = max_clients
        self.sink = sink
        self.changes = None  # core/changes.py ChangeFeed: told which client changed while someone watches
        self.last_seq = 0
        # per client: its one Record, or a list of them (oldest first) trimmed to per_client (a
        # deque would cost ~600 bytes per client even when it holds one event)
        self._events: OrderedDict[str, Record | list[Record]] = OrderedDict()

    def record(self, client_id: str, at: float, kind: EventKind, detail: Detail, rule: str | None = None,
               **data) -> None:
        """Add an event. ``detail``: its text, or a function of its data (including the keys that
        start with "_", which are kept for it only) that writes the text when the event is read."""
        if rule and isinstance(detail, str) and detail[-1:] == "]" and detail.endswith(f" [{rule}]"):
            detail = detail[: -len(rule) - 3]  # an error's text may end with its rule: shown once
        self.last_seq += 1
        rec = make_record(self.last_seq, at, kind, detail, rule, data)
        self._add(client_id, rec)
        if self.sink is not None:
            self.sink.timeline_event(client_id, rec)
        changes = self.changes
        if changes is not None and changes.changed is not None:  # a dashboard watches
            changes.changed.setdefault(client_id, None)

    def _add(self, client_id: str, rec: Record) -> None:
        events = self._events
        held = events.get(client_id)
        if held is None:
            events[client_id] = rec
            while len(events) > self.max_clients:
                forgotten, gone = events.popitem(last=False)
                if self.sink is not None:
                    self.sink.timeline_forgotten(forgotten)
                    self.sink.timeline_dropped(forgotten, [r[_SEQ] for r in ((gone,) if type(gone) is tuple else gone)])
            return
        events.move_to_end(client_id)
        if type(held) is tuple:
            if self.per_client > 1:
                events[client_id] = [held, rec]
                return
            events[client_id] = rec
            gone = held
        else:
            held.append(rec)
            if len(held) <= self.per_client:
                return
            gone = held.pop(0)
        if self.sink is not None:
            self.sink.timeline_dropped(client_id, [gone[_SEQ]])

    def load(self, client_id: str, events: list[WillEvent]) -> None:
        """Put back events the store held (start-up; call in the order of each client's latest event)."""
        for e in events[-self.per_client:]:
            self._add(client_id, make_record(e.seq, e.at, e.kind, e.detail, e.rule, e.data))
        if len(events) > self.per_client and self.sink is not None:  # the store held more: delete them
            self.sink.timeline_dropped(client_id, [e.seq for e in events[:-self.per_client]])
        if events:
            self.last_seq = max(self.last_seq, max(e.seq for e in events))

    def _records(self, client_id: str) -> tuple | list:
        held = self._events.get(client_id)
        if held is None:
            return ()
        return (held,) if type(held) is tuple else held

    def events(self, client_id: str) -> list[WillEvent]:
        return [expand(r) for r in self._records(client_id)]

    def last_kind(self, client_id: str) -> EventKind | str | None:
        records = self._records(client_id)
        return records[-1][_KIND] if records else None

    def kinds(self, client_id: str) -> list[str]:
        return [r[_KIND] for r in self._records(client_id)]

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._events

    def clients(self) -> Iterator[str]:
        """The client ids with a timeline, the one with the latest event first."""
        return reversed(self._events)

    def __len__(self) -> int:
        return len(self._events)
