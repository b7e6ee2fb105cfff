"""The storage interface: what the broker keeps across restarts and crashes, and how it is written.

The core never touches storage. It records what changed in a ``Batch`` (sessions, queued and
in-flight messages, retained messages, will timeline events); the edge commits one batch per
event-loop turn (group commit) and only then writes the acknowledgements that depend on it:
PUBACK/PUBREC after the message is durable, CONNACK after the will is durable.

Every deadline is stored as absolute wall-clock time (``*_wall``), so that a restart continues
the countdown instead of restarting it, and the time the broker was down counts.

Backends: ``memory.MemoryStorage`` (``--memory``: nothing survives the process) and
``sqlite.SqliteStorage`` (the default, standard library sqlite3 in WAL mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

SCHEMA_VERSION = 7  # 1: sessions, deliveries, retained; 2: + the will timeline, will cause kinds;
# 3: + the session's user name (the ACL checks its will when it is published, also after a restart);
# 4: the same data, in tables that are cheaper to write (sessions WITHOUT ROWID, timeline in seq order);
# 5: a message is stored once, however many sessions wait for it (storage/msglog.py);
# 6: a queued delivery sent is in flight by its session's runs of sent seqs, not by a row of its own;
# 7: + the ``reclaim`` table (messages done, deleted from ``messages`` in bulk: storage/msglog.py)

# StoredSession.username of a session stored before schema version 3, when no user name was kept:
# not anonymous, not known. NUL cannot be in an MQTT user name [MQTT-1.5.4-2], so no user has it.
USERNAME_UNKNOWN = "\x00unknown"

# the store keeps the last this-many timeline events of each client (the core keeps as many in memory)
TIMELINE_PER_CLIENT = 64


# the ack states of a delivery in flight, as stored ("puback": awaiting PUBACK, ...), by their code in
# Batch.queued's flags (0: queued)
ACK_STATES = (None, "puback", "pubrec", "pubcomp")


class StoreError(Exception):
    """The store cannot be used. The message says what is wrong and what to do."""


@dataclass(slots=True)
class StoredMessage:
    """An Application Message as stored (retained, queued or in flight)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict = field(default_factory=dict)
    origin: str | None = None
    expiry_at_wall: float | None = None
    is_will: bool = False
    # the message's id in the store, shared by every delivery of it (the messages a batch writes are
    # in Batch.messages). 0: none given (a retained message, a batch made by hand): the store gives
    # each such delivery's message a row of its own
    msg_id: int = 0


@dataclass(slots=True)
class StoredDelivery:
    """One message on its way to one session: queued, or in flight with a packet id and state."""

    client_id: str
    seq: int  # unique per session, increasing in queue order
    message: StoredMessage
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    packet_id: int | None = None  # set once in flight
    state: str | None = None  # None (queued), "puback", "pubrec", "pubcomp"


@dataclass(slots=True)
class StoredSubscription:
    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None


@dataclass(slots=True)
class StoredWill:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict = field(default_factory=dict)
    fire_at_wall: float | None = None  # set while pending after the connection ended
    cause: str | None = None
    cause_kind: str | None = None  # the cause as a short label (eof, keep_alive, ...), for counters


@dataclass(slots=True)
class StoredSession:
    client_id: str
    expiry_interval: int
    connected: bool  # True while a network connection is open: a crash ends it without DISCONNECT
    disconnected_at_wall: float | None = None
    will: StoredWill | None = None
    subscriptions: list[StoredSubscription] = field(default_factory=list)
    awaiting_pubrel: list[int] = field(default_factory=list)  # inbound QoS 2 packet ids
    next_packet_id: int = 1
    username: str | None = None  # the user name it was last connected with (None: anonymous; USERNAME_UNKNOWN)


@dataclass(slots=True)
class StoredEvent:
    """One event of a client's will timeline (see core/timeline.py).

    ``seq`` increases across all clients (it orders events, and clients by their latest event);
    ``data`` is JSON-serialisable; its keys ending in ``_at`` are times, stored as wall-clock.
    """

    client_id: str
    seq: int
    at_wall: float
    kind: str
    detail: str
    rule: str | None = None
    data: dict = field(default_factory=dict)


@dataclass
class Batch:
    """What changed since the last commit. Later entries for the same key replace earlier ones."""

    sessions: dict[str, StoredSession] = field(default_factory=dict)
    sessions_deleted: set[str] = field(default_factory=set)
    deliveries: dict[tuple[str, int], StoredDelivery] = field(default_factory=dict)
    deliveries_deleted: set[tuple[str, int]] = field(default_factory=set)
    # the messages the deliveries refer to (StoredMessage.msg_id), written once each: those to write
    # (new, or written again), and those no delivery needs any more. The writer counts a message's
    # deliveries and deletes it in the batch that deletes its last delivery, so that no delivery
    # ever refers to a missing message, and no message outlives its deliveries (see msglog.py)
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    messages_deleted: set[int] = field(default_factory=set)
    # new deliveries, the cheap way (columns, grouped by message id): (client ids, seqs, flags =
    # qos | retain << 2 | ack state code << 3 (0: queued; 1, 2, 3: in flight awaiting PUBACK, PUBREC,
    # PUBCOMP: storage/msglog.py STATES), packet ids (0 when queued), subscription ids), in the order
    # they were recorded. Applied before ``deliveries`` and ``deliveries_deleted``: a put or delete
    # of the same (client, seq) in this batch comes after it. Their messages are in ``messages`` or
    # already stored.
    queued: dict[int, tuple[list[str], list[int], list[int], list[int], list[tuple[int, ...]]]] = field(
        default_factory=dict)
    # per session, the seq of its first delivery still queued (or its next seq when none is): its
    # queued deliveries with a lower seq have left the queue (gone in flight, or done). A hint that
    # lets the store forget them without a row per delivery; a session not named here keeps its
    # head, and a deleted delivery at or above it is remembered one by one
    queue_heads: dict[str, int] = field(default_factory=dict)
    # per session, its queued deliveries sent in this batch (in flight now, awaiting PUBACK or PUBREC):
    # (seq, message id, flags as in ``queued``, packet id, subscription ids), in the order they were
    # sent. Applied after ``queued`` and before ``deliveries``; a later put or delete of the same
    # (client, seq) overrides it. A store may keep them as runs of seqs with consecutive packet ids
    # (storage/msglog.py) rather than a row each
    sent: dict[str, list[tuple[int, int, int, int, tuple[int, ...]]]] = field(default_factory=dict)
    retained: dict[str, StoredMessage] = field(default_factory=dict)
    retained_deleted: set[str] = field(default_factory=set)
    # timeline events to add (the store keeps the last TIMELINE_PER_CLIENT of each client), and the
    # clients whose whole timeline is forgotten (applied before the additions)
    timeline: dict[tuple[str, int], StoredEvent] = field(default_factory=dict)
    timeline_deleted: set[str] = field(default_factory=set)
    # the seqs of the stored events to delete: those the core dropped from memory, where it keeps as
    # many as the store (a client's oldest beyond TIMELINE_PER_CLIENT, every event of a forgotten
    # client). None (not known, e.g. a Batch made by hand): the store finds them itself, keeping the
    # last TIMELINE_PER_CLIENT events of every client written to and deleting timeline_deleted
    # clients' events by client id
    timeline_dropped: set[int] | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.sessions_deleted or self.deliveries or self.deliveries_deleted
                    or self.messages or self.messages_deleted or self.queued or self.queue_heads or self.sent or self.retained or self.retained_deleted or self.timeline or self.timeline_deleted
                    or self.timeline_dropped or self.meta)

    # the recorders keep "put" and "delete" of one key mutually exclusive, except for sessions: a
    # session deleted and then put in one batch is a client's new session replacing its old one
    # (Clean Start 1), and every store applies ``sessions_deleted`` (with the deleted sessions'
    # deliveries and subscriptions) before ``sessions``
    def put_session(self, s: StoredSession) -> None:
        self.sessions[s.client_id] = s

    def delete_session(self, client_id: str) -> None:
        self.sessions.pop(client_id, None)
        self.sessions_deleted.add(client_id)

    def put_delivery(self, d: StoredDelivery) -> None:
        key = (d.client_id, d.seq)
        self.deliveries_deleted.discard(key)
        self.deliveries[key] = d

    def delete_delivery(self, client_id: str, seq: int) -> None:
        key = (client_id, seq)
        self.deliveries.pop(key, None)
        self.deliveries_deleted.add(key)  # also when put in this batch: it may exist in the store

    def put_message(self, m: StoredMessage) -> None:
        self.messages_deleted.discard(m.msg_id)
        self.messages[m.msg_id] = m

    def delete_message(self, msg_id: int) -> None:
        self.messages.pop(msg_id, None)
        self.messages_deleted.add(msg_id)

    def put_retained(self, m: StoredMessage) -> None:
        self.retained_deleted.discard(m.topic)
        self.retained[m.topic] = m

    def delete_retained(self, topic: str) -> None:
        self.retained.pop(topic, None)
        self.retained_deleted.add(topic)

    def put_event(self, e: StoredEvent) -> None:
        self.timeline[(e.client_id, e.seq)] = e

    def delete_timeline(self, client_id: str) -> None:
        """Forget the client's stored events; events put afterwards in this batch are kept."""
        for key in [k for k in self.timeline if k[0] == client_id]:
            del self.timeline[key]
        self.timeline_deleted.add(client_id)


@dataclass(slots=True)
class StoredBacklog:
    """A session's queued deliveries left in the store at start-up (loaded as its queue drains to
    them): runs of [first seq, first message id, count, flags = qos | retain << 2, subscription ids
    or None], seqs and message ids going up by one together within a run, in seq order."""

    runs: list[list]
    count: int  # deliveries
    bytes: int  # their topics + payloads (what max_queued_bytes counts)


class MessageReader(Protocol):
    def read_messages(self, msg_ids: list[int]) -> dict[int, StoredMessage]:
        """The stored messages with these ids (those that exist), msg_id set."""


@dataclass
class StoredState:
    """Everything a store holds, as loaded at start-up."""

    sessions: dict[str, StoredSession] = field(default_factory=dict)
    deliveries: dict[str, list[StoredDelivery]] = field(default_factory=dict)  # by client, seq order
    # the deliveries of one message share its StoredMessage (msg_id set); ids above every stored one
    # start at next_message_id; the messages no delivery refers to (the writer deletes them)
    next_message_id: int = 1
    unreferenced_messages: set[int] = field(default_factory=set)
    # per client, the lowest seq its next delivery may have (a store that keeps queue heads forgets
    # the seqs below its head: a new delivery must not reuse them)
    min_next_seq: dict[str, int] = field(default_factory=dict)
    retained: dict[str, StoredMessage] = field(default_factory=dict)
    timeline: dict[str, list[StoredEvent]] = field(default_factory=dict)  # by client, seq order
    meta: dict[str, str] = field(default_factory=dict)
    # a store may leave a session's queue beyond its first deliveries in the store (``deliveries``
    # then holds its in-flight ones and the first queued ones): its backlog, by client; how many
    # backlog entries refer to each message; and where the core reads those messages when it needs
    # them (``reader``)
    backlogs: dict[str, StoredBacklog] = field(default_factory=dict)
    backlog_refs: dict[int, int] = field(default_factory=dict)
    reader: MessageReader | None = None


class Storage(Protocol):
    def load(self) -> StoredState:
        """Open the store and return what it holds. Raises StoreError if it is damaged."""

    def commit(self, batch: Batch) -> None:
        """Make ``batch`` durable (per the fsync policy) as one transaction."""

    def close(self) -> None: ...
