"""Between the core's state and the store: what changed (``Recorder``) and how it comes back (``restore``).

The core calls the recorder at each change; the recorder only notes *what* changed (cheap), and
``take_batch`` turns the notes into storage records at commit time, converting monotonic deadlines
to wall-clock ones with the offset the edge gives it (the core never reads a clock).

What is stored: every session with its subscriptions, will (armed or pending, with its deadline and
the cause), inbound QoS 2 ids; the queued and in-flight deliveries of sessions that outlive their
connection (Session Expiry > 0); retained messages; the will timeline of each client (its events'
times, and the times in their data, as wall-clock).

A message is stored once, however many sessions wait for it (schema 5, storage/msglog.py): the
recorder gives it an id the first time one of its deliveries is stored (``Message.store_id``) and
counts its stored deliveries (``Message.store_refs``); the batch that deletes its last one deletes
it too, so that a crash never leaves a delivery pointing at a missing message. A delivery leaves
the store once (``delivery_done``, or its session's deletion): its seq goes back to 0 (not stored).
"""

from __future__ import annotations

from itertools import chain

from ..logs import fast_logger
from ..storage.base import (
    ACK_STATES,
    USERNAME_UNKNOWN,
    Batch,
    StoredDelivery,
    StoredEvent,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    StoredWill,
)
from .message import Message
from .sessions import Delivery, Session
from .timeline import TIME_KEYS, Record, detail_and_data

log = fast_logger("lastwill.store")

_STATE_CODES = {state: code for code, state in enumerate(ACK_STATES) if state}  # Batch.queued's flags
_AWAIT_PUBCOMP = ACK_STATES[3]


class NoRecorder:
    """Stands in for the Recorder when nothing is persisted: every call is a no-op."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def session(self, session) -> None:
        pass

    def session_deleted(self, client_id, session=None) -> None:
        pass

    def delivery(self, session, d, packet_id=None, state=None) -> None:
        pass

    def delivery_done(self, session, d) -> None:
        pass

    def retained_changed(self, topic, message) -> None:
        pass


class Recorder:
    __slots__ = ("sessions", "sessions_deleted", "deliveries", "deliveries_deleted", "retained", "retained_deleted",
                 "events", "timelines_forgotten", "dropped_seqs", "stored", "messages", "fresh", "heads",
                 "next_msg_id", "unreferenced", "queued", "queued_clients", "sent")

    def __init__(self) -> None:
        # client ids whose session is in the store. A session that ends with its connection
        # (Session Expiry 0) and holds no will has nothing a restart could need: it is never
        # written, which keeps the connect path of clean-session clients free of store writes.
        self.stored: set[str] = set()
        self.next_msg_id = 1  # the next Message.store_id (restore: above every stored one)
        self.unreferenced: set[int] = set()  # stored messages no delivery needs (found at restore)
        self._reset()

    def _reset(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.sessions_deleted: set[str] = set()
        self.deliveries: dict[tuple[str, int], tuple[Delivery, int | None, str | None]] = {}
        self.deliveries_deleted: set[tuple[str, int]] = set()
        self.retained: dict[str, Message | None] = {}
        self.events: list[tuple[str, Record]] = []
        self.timelines_forgotten: set[str] = set()
        self.dropped_seqs: set[int] = set()  # seqs of stored timeline events to delete
        self.messages: dict[int, Message] = {}  # messages whose stored deliveries changed, by store_id
        self.fresh: set[int] = set()  # store_ids of messages to write (their first stored delivery)
        self.heads: dict[str, Session] = {}  # sessions whose queue's stored head may have moved
        # deliveries first stored in this batch, by message store_id: (client ids, deliveries, packet
        # id << 2 | ack state code, 0 when queued), made into Batch.queued's columns at commit (a
        # delivery done meanwhile has seq 0: left out); their clients
        self.queued: dict[int, tuple[list[str], list[Delivery], list[int]]] = {}
        self.queued_clients: set[str] = set()
        # queued deliveries sent (in flight now, awaiting their first acknowledgement): Batch.sent
        # per client, seq -> (seq, message id, flags, packet id, subscription ids), as Batch.sent has them
        self.sent: dict[str, dict[int, tuple]] = {}

    def __bool__(self) -> bool:
        return bool(self.sessions or self.sessions_deleted or self.deliveries or self.deliveries_deleted
                    or self.retained or self.events or self.timelines_forgotten or self.dropped_seqs
                    or self.messages or self.heads or self.unreferenced or self.queued or self.sent)

    # -- what the core calls --------------------------------------------------------------------
    def session(self, session: Session) -> None:
        # a deletion noted earlier in this batch stays: it was of an earlier session of the same client
        # (Clean Start 1), whose queued and in-flight deliveries must go; the store applies the
        # deletions before the puts
        self.sessions[session.client_id] = session

    def session_deleted(self, client_id: str, session: Session | None = None) -> None:
        """The client's session is gone, with its stored deliveries (``session``: the one that ended)."""
        self.sessions.pop(client_id, None)
        self.sessions_deleted.add(client_id)
        self.heads.pop(client_id, None)
        self._drop_recorded(client_id)
        if session is not None:
            self._unstored(session)

    def _drop_recorded(self, client_id: str) -> None:
        """Forget what this batch recorded of the client's deliveries (its session leaves the store)."""
        for key in [k for k in self.deliveries if k[0] == client_id]:
            del self.deliveries[key]
        self.sent.pop(client_id, None)
        if client_id in self.queued_clients:
            self.queued_clients.discard(client_id)
            for mid, (clients, ds, ps) in list(self.queued.items()):
                kept = [(c, d, p) for c, d, p in zip(clients, ds, ps, strict=True) if c != client_id]
                if len(kept) != len(clients):
                    self.queued[mid] = ([c for c, _, _ in kept], [d for _, d, _ in kept], [p for _, _, p in kept])

    def _unstored(self, session: Session) -> None:
        """The session's deliveries leave the store with it: their messages lose a reference each."""
        messages = self.messages
        backlog = session.backlog
        if backlog is not None:  # what is left of it in the store (what was queued behind it: below)
            backlog.drop(self)
        held = chain(backlog.after if backlog is not None else (), session.queue,
                     (f.delivery for f in session.inflight.values()))
        for d in held:
            if d.seq:
                m = d.message
                m.store_refs -= 1
                messages[m.store_id] = m
                d.seq = 0

    def delivery(self, session: Session, d: Delivery, packet_id: int | None = None, state: str | None = None) -> None:
        if not d.seq:  # its first time in the store: its message gains a reference
            seq = d.seq = session.next_seq
            session.next_seq = seq + 1
            m = d.message
            if not m.store_refs:  # not in the store (any more): written with this batch
                if not m.store_id:
                    m.store_id = self.next_msg_id
                    self.next_msg_id += 1
                self.fresh.add(m.store_id)
            m.store_refs += 1
            # queued, or in flight at once: three appends (the common cases: a flood to offline
            # sessions, a connected persistent subscriber)
            entries = self.queued.get(m.store_id)
            if entries is None:
                entries = self.queued[m.store_id] = ([], [], [])
                self.messages[m.store_id] = m
            client_id = session.client_id
            entries[0].append(client_id)
            entries[1].append(d)
            self.queued_clients.add(client_id)
            if packet_id is None:
                entries[2].append(0)
            else:
                entries[2].append(packet_id << 2 | _STATE_CODES[state])
                self.heads[client_id] = session
            return
        key = (session.client_id, d.seq)
        if packet_id is not None:  # gone in flight: no longer in the queue
            self.heads[session.client_id] = session
            if state != _AWAIT_PUBCOMP and key not in self.deliveries:
                # a queued delivery sent (its first acknowledgement awaited): no row of its own, the
                # store keeps the session's sent seqs and their packet ids as runs
                per = self.sent.get(key[0])
                if per is None:
                    per = self.sent[key[0]] = {}
                per[d.seq] = (d.seq, d.message.store_id,
                              (d.qos | 4 if d.retain else d.qos) | _STATE_CODES[state] << 3, packet_id,
                              d.subscription_ids)
                return
            if self.sent and (per := self.sent.get(key[0])):
                per.pop(d.seq, None)
        self.deliveries_deleted.discard(key)
        self.deliveries[key] = (d, packet_id, state)

    def delivery_done(self, session: Session, d: Delivery) -> None:
        if d.seq:
            key = (session.client_id, d.seq)
            self.deliveries.pop(key, None)
            if self.sent and (per := self.sent.get(key[0])):
                per.pop(d.seq, None)
            self.deliveries_deleted.add(key)
            m = d.message
            m.store_refs -= 1
            self.messages[m.store_id] = m
            self.heads[session.client_id] = session
            d.seq = 0  # not in the store any more

    def reference_dropped(self, m: Message) -> None:
        """A backlog entry of ``m`` left the store unread (core/backlog.py)."""
        m.store_refs -= 1
        self.messages[m.store_id] = m

    def message_unreferenced(self, msg_id: int) -> None:
        """The last backlog entry of a message never read left the store: the message goes too."""
        self.unreferenced.add(msg_id)

    def retained_changed(self, topic: str, message: Message | None) -> None:
        if topic[:5] == "$SYS/":  # the broker's own $SYS/broker values describe this run: not stored
            return
        self.retained[topic] = message

    # -- what the timeline calls (it is the Timeline's sink) -------------------------------------
    def timeline_event(self, client_id: str, event: Record) -> None:
        self.events.append((client_id, event))

    def timeline_forgotten(self, client_id: str) -> None:
        if any(c == client_id for c, _ in self.events):
            self.events = [(c, e) for c, e in self.events if c != client_id]
        self.timelines_forgotten.add(client_id)

    def timeline_dropped(self, client_id: str, seqs: list[int]) -> None:
        self.dropped_seqs.update(seqs)

    # -- commit time ---------------------------------------------------------------------------
    def take_batch(self, wall_offset: float) -> Batch:
        batch = Batch()
        self._take_sessions(batch, wall_offset)
        # (the recorder keeps a key out of deliveries_deleted while it is in deliveries or sent)
        batch.deliveries_deleted = self.deliveries_deleted  # (a new set after _reset)
        cache = self._take_messages(batch, wall_offset)
        if self.queued:
            self._take_queued(batch)
        for (client_id, seq), (d, pid, state) in self.deliveries.items():
            m = d.message
            sm = cache.get(m.store_id)
            if sm is None:
                sm = cache[m.store_id] = stored_message(m, wall_offset)
            batch.put_delivery(StoredDelivery(client_id, seq, sm, d.qos, d.retain, d.subscription_ids, pid, state))
        if self.sent:
            self._take_sent(batch)
        heads = batch.queue_heads
        stored = self.stored
        for client_id, session in self.heads.items():
            if client_id in stored:
                head = session.next_seq
                for d in session.queue:  # the first stored one (those stored before it may have seq 0)
                    if d.seq:
                        head = d.seq
                        break
                else:  # none in memory: the first of its backlog (core/backlog.py)
                    if session.backlog is not None:
                        head = session.backlog.first_seq() or head
                heads[client_id] = head
        for topic, message in self.retained.items():
            if message is None:
                batch.delete_retained(topic)
            else:
                batch.put_retained(stored_message(message, wall_offset))
        for client_id in self.timelines_forgotten:
            batch.delete_timeline(client_id)
        batch.timeline_dropped = self.dropped_seqs  # (a new set after _reset)
        put_event = batch.put_event
        for client_id, rec in self.events:  # rec: (seq, at, kind, detail, rule, ...), see timeline.Record
            detail, data = detail_and_data(rec, wall_offset)  # its times as wall-clock
            put_event(StoredEvent(client_id, rec[0], rec[1] + wall_offset, rec[2], detail, rec[4], data))
        self._reset()
        return batch

    def _take_sessions(self, batch: Batch, wall_offset: float) -> None:
        stored = self.stored
        for client_id in self.sessions_deleted:
            if client_id in stored:
                batch.delete_session(client_id)
                stored.discard(client_id)
        for session in self.sessions.values():
            if session.expiry_interval == 0 and session.will is None:
                if session.client_id in stored:  # it was stored (it had a will): remove it
                    batch.delete_session(session.client_id)
                    stored.discard(session.client_id)
                    self.heads.pop(session.client_id, None)
                    self._drop_recorded(session.client_id)
                    self._unstored(session)  # its stored deliveries go with it
                continue
            batch.put_session(snapshot_session(session, wall_offset))
            stored.add(session.client_id)

    def _take_messages(self, batch: Batch, wall_offset: float) -> dict[int, StoredMessage]:
        """Messages written once, deleted with their last stored delivery; those written, by id."""
        cache: dict[int, StoredMessage] = {}
        fresh = self.fresh
        for mid, m in self.messages.items():
            if m.store_refs > 0:
                if mid in fresh:
                    sm = cache[mid] = stored_message(m, wall_offset)
                    batch.put_message(sm)
            else:
                batch.delete_message(mid)
        for mid in self.unreferenced:
            batch.delete_message(mid)
        self.unreferenced = set()
        return cache

    def _take_queued(self, batch: Batch) -> None:
        """The deliveries first stored in this batch, as Batch.queued's columns."""
        deleted = batch.messages_deleted
        queued = batch.queued
        for mid, (clients, ds, ps) in self.queued.items():
            if mid in deleted:
                continue
            if len(ds) == 1:  # one delivery (a persistent subscriber's fan-in): no comprehensions
                d = ds[0]
                if d.seq:
                    p = ps[0]
                    queued[mid] = (clients, [d.seq], [(d.qos | 4 if d.retain else d.qos) | (p & 3) << 3],
                                   [p >> 2], [d.subscription_ids])
                continue
            seqs = [d.seq for d in ds]
            if 0 in seqs:  # done since it was recorded (its seq went back to 0): left out
                kept = [(c, d, p) for c, d, p in zip(clients, ds, ps, strict=True) if d.seq]
                if not kept:
                    continue
                clients, ds, ps = [c for c, _, _ in kept], [d for _, d, _ in kept], [p for _, _, p in kept]
                seqs = [d.seq for d in ds]
            flags = [d.qos | 4 if d.retain else d.qos for d in ds]
            if any(ps):
                flags = [f | (p & 3) << 3 for f, p in zip(flags, ps, strict=True)]
                pids = [p >> 2 for p in ps]
            else:
                pids = ps
            queued[mid] = (clients, seqs, flags, pids, [d.subscription_ids for d in ds])

    def _take_sent(self, batch: Batch) -> None:
        """Queued deliveries sent in this batch and still in flight, per session (Batch.sent)."""
        sent = batch.sent
        for client_id, per in self.sent.items():
            if per:
                sent[client_id] = list(per.values())


def to_wall(mono: float | None, offset: float) -> float | None:
    return None if mono is None else mono + offset


def to_monotonic(wall: float | None, offset: float) -> float | None:
    return None if wall is None else wall - offset


def times_moved(data: dict, offset: float) -> dict:
    """A timeline event's data with its times (``timeline.TIME_KEYS``) moved by ``offset``."""
    if not any(k in TIME_KEYS for k in data):
        return dict(data)
    return {k: v + offset if k in TIME_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            else v for k, v in data.items()}


def stored_message(m: Message, offset: float) -> StoredMessage:
    return StoredMessage(m.topic, m.payload, m.qos, m.retain, m.properties, m.origin,
                         to_wall(m.expiry_at, offset), m.is_will, m.store_id)


def message_from_stored(sm: StoredMessage, offset: float) -> Message:
    return Message(sm.topic, sm.payload, sm.qos, sm.retain, sm.properties, sm.origin,
                   to_monotonic(sm.expiry_at_wall, offset), sm.is_will, sm.msg_id)


def snapshot_session(s: Session, offset: float) -> StoredSession:
    will = None
    if s.will is not None:
        state = s.will
        w = state.message
        ended = state.ended
        will = StoredWill(w.topic, w.payload, w.qos, w.retain, w.properties, to_wall(state.fire_at, offset),
                          ended.detail if ended is not None else None,
                          ended.cause.value if ended is not None else None)
    subs = [StoredSubscription(f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id)
            for f, o in s.subscriptions.items()]
    return StoredSession(s.client_id, s.expiry_interval, s.conn is not None, to_wall(s.disconnected_at, offset),
                         will, subs, sorted(s.awaiting_pubrel), s.next_packet_id,
                         USERNAME_UNKNOWN if s.username_unknown else s.username)
