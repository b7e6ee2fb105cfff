"""Start-up: rebuild the broker's state from what the store holds, through each owner's own calls.

Sessions that were connected when the broker stopped lost their connection without DISCONNECT:
after a crash, or after a shutdown that kept their wills, their wills are recovered as pending,
published after the recovery grace period unless the client reconnects first (see will.py).
Their presence, which the store still says ``online``, waits for the grace period too (announce.py).
"""

from __future__ import annotations

from ..codec.packets import Publish, Will
from ..logs import fast_logger
from ..storage.base import USERNAME_UNKNOWN, StoredSession, StoredState
from .announce import Announcer
from .backlog import Backlog, Pager
from .causes import Cause, ConnectionEnded
from .message import Message
from .ownership import LocalSessions
from .persistence import Recorder, message_from_stored, times_moved, to_monotonic
from .retained import RetainedStore
from .routing import Router
from .sessions import NEVER, AckState, Delivery, InFlight, Session
from .timeline import Timeline, WillEvent
from .timers import TimerKind, TimerQueue
from .topics import SubOptions
from .will import WillKeeper

log = fast_logger("lastwill.store")

_IN_FLIGHT = frozenset(AckState)


class Restorer:
    """What start-up writes into: each collaborator is filled through its own calls."""

    def __init__(self, *, timeline: Timeline, retained: RetainedStore, router: Router, sessions: LocalSessions,
                 wills: WillKeeper, announce: Announcer, recorder: Recorder, timers: TimerQueue,
                 recovery_grace: float) -> None:
        self.timeline = timeline
        self.retained = retained
        self.router = router
        self.sessions = sessions
        self.wills = wills
        self.announce = announce
        self.recorder = recorder
        self.timers = timers
        self.grace = recovery_grace

    def restore(self, state: StoredState, now: float, wall_now: float, crashed: bool) -> None:
        """Rebuild from ``state`` (``now`` monotonic, ``wall_now`` wall-clock)."""
        offset = wall_now - now
        # stored messages: one Message per stored one, shared by its deliveries (counted as restored)
        self.messages: dict[int, Message] = {}
        # a session's queue beyond its first deliveries stays in the store (storage/msgload.py): read
        # when its queue drains to it (core/backlog.py)
        self.pager = Pager(state.reader, offset, state.backlog_refs)
        self.recorder.next_msg_id = max(self.recorder.next_msg_id, state.next_message_id)
        self.recorder.unreferenced |= state.unreferenced_messages
        # the will timelines first, so that what restoring the sessions records comes after them;
        # clients in the order of their latest event, so that the least recently active go first
        for client_id, events in sorted(state.timeline.items(), key=lambda item: item[1][-1].seq if item[1] else 0):
            self.timeline.load(client_id, [WillEvent(e.at_wall - offset, e.kind, e.detail, e.rule,
                                                     times_moved(e.data, -offset), e.seq) for e in events])
        self._retained(state, now, offset)
        queued = sum(len(v) for v in state.deliveries.values()) + sum(b.count for b in state.backlogs.values())
        for ss in state.sessions.values():
            session = self._session(ss, state, offset)
            self._will_and_expiry(session, ss, now, offset, crashed)
            self.recorder.stored.add(ss.client_id)
            self.recorder.session(session)
        self.announce.restored(now, self.grace, crashed, self.retained.items())
        log.info("restored %d session(s), %d retained message(s), %d queued or in-flight message(s), "
                 "%d client timeline(s)%s", len(state.sessions), len(state.retained),
                 queued, len(state.timeline),
                 " after a crash" if crashed else "")

    def _retained(self, state: StoredState, now: float, offset: float) -> None:
        for sm in state.retained.values():
            m = message_from_stored(sm, offset)
            if m.expired(now):
                self.recorder.retained_changed(m.topic, None)
                continue
            self.retained.store(m)
            if m.expiry_at is not None:
                self.timers.schedule((TimerKind.RETAINED, m.topic), m.expiry_at)

    def _session(self, ss: StoredSession, state: StoredState, offset: float) -> Session:
        """The session with its subscriptions, inbound QoS 2 ids, queued and in-flight deliveries."""
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
            self.router.subscribe(ss.client_id, sub.topic_filter, opts)
        # taken out of the state as the session is rebuilt: the stored records of a big queue go as
        # its deliveries come (the peak is one copy, not two)
        items = state.deliveries.pop(ss.client_id, [])
        messages = self.messages  # by msg_id, and by id() of a StoredMessage without one
        queue = []
        queued_bytes = 0
        for sd in items:  # (a restart with millions of queued deliveries spends its time here)
            sm = sd.message
            m = messages.get(sm.msg_id or id(sm))
            if m is None:
                m = messages[sm.msg_id or id(sm)] = message_from_stored(sm, offset)
                self.pager.adopt(m)  # its backlog entries (of every session) count too
            m.store_refs += 1
            d = Delivery(m, sd.qos, sd.retain, sd.subscription_ids, sd.seq)
            if sd.packet_id is not None and sd.state in _IN_FLIGHT:
                packet = Publish(m.topic, m.payload, d.qos, d.retain, True, sd.packet_id, {})
                session.set_inflight(sd.packet_id, InFlight(d, packet, AckState(sd.state)))
            else:
                queue.append(d)
                queued_bytes += len(m.payload) + len(m.topic)
        if queue:
            session.enqueue_all(queue)
            session.queued_bytes += queued_bytes
        if items:
            session.next_seq = items[-1].seq + 1
        stored = state.backlogs.pop(ss.client_id, None)
        if stored is not None:
            session.backlog = Backlog(stored, self.pager)
            session.queued_bytes += stored.bytes
            session.next_seq = max(session.next_seq, session.backlog.last_seq() + 1)
        # never below the store's queue head: the seqs under it are forgotten there
        session.next_seq = max(session.next_seq, state.min_next_seq.get(ss.client_id, 1))
        self.sessions.adopt(session)
        if ss.will is not None:
            w = ss.will
            # schema 1 kept the cause as text only (no kind): it is shown, never parsed
            ended = ConnectionEnded(Cause(w.cause_kind), w.cause) if w.cause_kind and w.cause else None
            self.wills.restore(session, Will(w.topic, w.payload, w.qos, w.retain, w.properties),
                               to_monotonic(w.fire_at_wall, offset), ended)
        return session

    def _will_and_expiry(self, session: Session, ss: StoredSession, now: float, offset: float,
                         crashed: bool) -> None:
        grace = self.grace
        disconnected_at = to_monotonic(ss.disconnected_at_wall, offset)
        if ss.connected:
            # its connection ended when the broker stopped, without DISCONNECT
            ended = ConnectionEnded(Cause.BROKER_CRASH, "broker crashed while the client was connected") if crashed \
                else ConnectionEnded(Cause.BROKER_RESTART, "broker shut down while the client was connected")
            # presence (the store still says online) and the $SYS event wait for the grace period too
            self.announce.recovering_client(ss.client_id, now, grace, crashed)
            self.wills.recovered(session, now, grace, ended)
            session.disconnected_at = now
            if session.expiry_interval != NEVER:
                self.sessions.expire_at(session, now + max(session.expiry_interval, grace))
        else:
            session.disconnected_at = disconnected_at
            if session.will is not None and session.will.fire_at is not None:
                self.wills.restored_pending(session, now)
            if session.expiry_interval != NEVER and disconnected_at is not None:
                self.sessions.expire_at(session, disconnected_at + session.expiry_interval)
