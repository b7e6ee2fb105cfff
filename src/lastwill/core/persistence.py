"""Between the core's state and the store: what changed (``Recorder``) and how it comes back (``restore``).

The core calls the recorder at each change; the recorder only notes *what* changed (cheap), and
``take_batch`` turns the notes into storage records at commit time, converting monotonic deadlines
to wall-clock ones with the offset the edge gives it (the core never reads a clock).

What is stored: every session with its subscriptions, will (armed or pending, with its deadline and
the cause), inbound QoS 2 ids; the queued and in-flight deliveries of sessions that outlive their
connection (Session Expiry > 0); retained messages; the will timeline of each client (its events'
times, and the times in their data, as wall-clock).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..codec.packets import Publish, Will
from ..storage.base import (
    USERNAME_UNKNOWN,
    Batch,
    StoredDelivery,
    StoredEvent,
    StoredMessage,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoredWill,
)
from .message import Message
from .sessions import AWAIT_PUBACK, AWAIT_PUBCOMP, AWAIT_PUBREC, NEVER, Delivery, InFlight, Session
from .timeline import Record, WillEvent, detail_and_data
from .topics import SubOptions
from .will import cause_kind

if TYPE_CHECKING:  # pragma: no cover
    from .broker import BrokerCore

log = logging.getLogger("lastwill.store")


class Recorder:
    __slots__ = ("sessions", "sessions_deleted", "deliveries", "deliveries_deleted", "retained", "retained_deleted",
                 "events", "timelines_forgotten", "dropped_seqs", "stored")

    def __init__(self) -> None:
        # client ids whose session is in the store. A session that ends with its connection
        # (Session Expiry 0) and holds no will has nothing a restart could need: it is never
        # written, which keeps the connect path of clean-session clients free of store writes.
        self.stored: set[str] = set()
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

    def __bool__(self) -> bool:
        return bool(self.sessions or self.sessions_deleted or self.deliveries or self.deliveries_deleted
                    or self.retained or self.events or self.timelines_forgotten or self.dropped_seqs)

    # -- what the core calls --------------------------------------------------------------------
    def session(self, session: Session) -> None:
        # a deletion noted earlier in this batch stays: it was of an earlier session of the same client
        # (Clean Start 1), whose queued and in-flight deliveries must go; the store applies the
        # deletions before the puts
        self.sessions[session.client_id] = session

    def session_deleted(self, client_id: str) -> None:
        self.sessions.pop(client_id, None)
        self.sessions_deleted.add(client_id)
        for key in [k for k in self.deliveries if k[0] == client_id]:
            del self.deliveries[key]

    def delivery(self, session: Session, d: Delivery, packet_id: int | None = None, state: str | None = None) -> None:
        if not d.seq:
            d.seq = session.next_seq
            session.next_seq += 1
        key = (session.client_id, d.seq)
        self.deliveries_deleted.discard(key)
        self.deliveries[key] = (d, packet_id, state)

    def delivery_done(self, session: Session, d: Delivery) -> None:
        if d.seq:
            key = (session.client_id, d.seq)
            self.deliveries.pop(key, None)
            self.deliveries_deleted.add(key)

    def retained_changed(self, topic: str, message: Message | None) -> None:
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
                continue
            batch.put_session(snapshot_session(session, wall_offset))
            stored.add(session.client_id)
        for client_id, seq in self.deliveries_deleted:
            batch.delete_delivery(client_id, seq)
        cache: dict[int, StoredMessage] = {}
        for (client_id, seq), (d, pid, state) in self.deliveries.items():
            sm = cache.get(id(d.message))
            if sm is None:
                sm = cache[id(d.message)] = stored_message(d.message, wall_offset)
            batch.put_delivery(StoredDelivery(client_id, seq, sm, d.qos, d.retain, d.subscription_ids, pid, state))
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


def _wall(mono: float | None, offset: float) -> float | None:
    return None if mono is None else mono + offset


def _mono(wall: float | None, offset: float) -> float | None:
    return None if wall is None else wall - offset


def _times(data: dict, offset: float) -> dict:
    """A timeline event's data with its times (keys ending in ``_at``) moved by ``offset``."""
    if not any(k.endswith("_at") for k in data):
        return dict(data)
    return {k: v + offset if k.endswith("_at") and isinstance(v, (int, float)) and not isinstance(v, bool)
            else v for k, v in data.items()}


def stored_message(m: Message, offset: float) -> StoredMessage:
    return StoredMessage(m.topic, m.payload, m.qos, m.retain, m.properties, m.origin,
                         _wall(m.expiry_at, offset), m.is_will)


def message_from_stored(sm: StoredMessage, offset: float) -> Message:
    return Message(sm.topic, sm.payload, sm.qos, sm.retain, sm.properties, sm.origin,
                   _mono(sm.expiry_at_wall, offset), sm.is_will)


def snapshot_session(s: Session, offset: float) -> StoredSession:
    will = None
    if s.will is not None:
        w = s.will
        will = StoredWill(w.topic, w.payload, w.qos, w.retain, w.properties, _wall(s.will_fire_at, offset),
                          s.will_cause, s.will_cause_kind)
    subs = [StoredSubscription(f, o.qos, o.no_local, o.retain_as_published, o.retain_handling, o.subscription_id)
            for f, o in s.subscriptions.items()]
    return StoredSession(s.client_id, s.expiry_interval, s.conn is not None, _wall(s.disconnected_at, offset),
                         will, subs, sorted(s.awaiting_pubrel), s.next_packet_id,
                         USERNAME_UNKNOWN if s.username_unknown else s.username)


def restore(core: BrokerCore, state: StoredState, now: float, wall_now: float, crashed: bool) -> None:
    """Rebuild the core from the store, at start-up (``now`` monotonic, ``wall_now`` wall-clock).

    Sessions that were connected when the broker stopped lost their connection without DISCONNECT:
    after a crash, or after a shutdown that kept their wills, their wills are recovered as pending,
    published after the recovery grace period unless the client reconnects first (see will.py).
    Their presence, which the store still says ``online``, waits for the grace period too (announce.py).
    """
    offset = wall_now - now
    grace = core.config.recovery_grace
    # the will timelines first, so that what restoring the sessions records comes after them;
    # clients in the order of their latest event, so that the least recently active go first
    for client_id, events in sorted(state.timeline.items(), key=lambda item: item[1][-1].seq if item[1] else 0):
        core.timeline.load(client_id, [WillEvent(e.at_wall - offset, e.kind, e.detail, e.rule,
                                                 _times(e.data, -offset), e.seq) for e in events])
    for sm in state.retained.values():
        m = message_from_stored(sm, offset)
        if m.expired(now):
            core.recorder.retained_changed(m.topic, None)
            continue
        core.retained.store(m)
        if m.expiry_at is not None:
            core.timers.schedule(("retained", m.topic), m.expiry_at)
    for ss in state.sessions.values():
        session = Session(ss.client_id, ss.expiry_interval)
        session.next_packet_id = ss.next_packet_id
        # its will, and its deliveries, are checked against the ACL as this user
        if ss.username == USERNAME_UNKNOWN:  # stored before user names were: checked as anonymous
            session.username_unknown = True
        else:
            session.username = ss.username
        for pid in ss.awaiting_pubrel:
            session.add_awaiting_pubrel(pid)
        for sub in ss.subscriptions:
            opts = SubOptions(sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub.subscription_id)
            session.set_subscription(sub.topic_filter, opts)
            core.tree.add(ss.client_id, sub.topic_filter, opts)
        items = state.deliveries.get(ss.client_id, [])
        for sd in items:
            d = Delivery(message_from_stored(sd.message, offset), sd.qos, sd.retain, tuple(sd.subscription_ids), sd.seq)
            if sd.packet_id is not None and sd.state in (AWAIT_PUBACK, AWAIT_PUBREC, AWAIT_PUBCOMP):
                packet = Publish(d.message.topic, d.message.payload, d.qos, d.retain, True, sd.packet_id, {})
                session.set_inflight(sd.packet_id, InFlight(d, packet, sd.state))
            else:
                session.enqueue(d)
                session.queued_bytes += len(d.message.payload) + len(d.message.topic)
        if items:
            session.next_seq = items[-1].seq + 1
        core.sessions[ss.client_id] = session
        if ss.will is not None:
            w = ss.will
            session.will = Will(w.topic, w.payload, w.qos, w.retain, w.properties)
            session.will_cause = w.cause
            session.will_cause_kind = w.cause_kind or (cause_kind(w.cause) if w.cause else None)
            session.will_fire_at = _mono(w.fire_at_wall, offset)
        disconnected_at = _mono(ss.disconnected_at_wall, offset)
        if ss.connected:
            # its connection ended when the broker stopped, without DISCONNECT
            why = "broker crashed while the client was connected" if crashed else \
                "broker shut down while the client was connected"
            # presence (the store still says online) and the $SYS event wait for the grace period too
            core.announce.recovering_client(ss.client_id, now, grace, crashed)
            core.wills.recovered(session, now, grace, why, "broker_crash" if crashed else "broker_restart")
            session.disconnected_at = now
            if session.expiry_interval != NEVER:
                core.timers.schedule(("session", ss.client_id), now + max(session.expiry_interval, grace))
        else:
            session.disconnected_at = disconnected_at
            if session.will is not None and session.will_fire_at is not None:
                core.wills.restored_pending(session, now)
            if session.expiry_interval != NEVER and disconnected_at is not None:
                core.timers.schedule(("session", ss.client_id), disconnected_at + session.expiry_interval)
        core.recorder.stored.add(ss.client_id)
        core.recorder.session(session)
    core.announce.restored(now, grace, crashed)
    log.info("restored %d session(s), %d retained message(s), %d queued or in-flight message(s), "
             "%d client timeline(s)%s", len(state.sessions), len(state.retained),
             sum(len(v) for v in state.deliveries.values()), len(state.timeline), " after a crash" if crashed else "")
