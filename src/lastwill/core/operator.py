"""An operator's actions (the admin API): disconnect a client, delete a session, publish or cancel a
pending will, delete retained messages.

Each is a typed request (``AdminRequest``) answered with a typed result (``AdminResult``); who asked
(the admin API's peer address) is in every log line and on the client's will timeline. The will
decisions go through core/will.py only; the connection ends through core/connection.py's ``end`` like
any other, with the cause ``ADMINISTRATIVE``, so the will rule applies as to any connection the server
closes: the will is published [MQTT-3.1.2-8] (after its Will Delay, if it has one [MQTT-3.1.3-9]).
"Without its will" means the operator discards the will first, recorded as such (``CancelCause.OPERATOR``).
MQTT 5 clients get DISCONNECT 0x98 Administrative action before the close [MQTT-3.14.2-1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from ..codec.packets import PROTOCOL_5, Disconnect
from ..codec.reason_codes import ReasonCode
from .causes import Cause, ConnectionEnded
from .connection import Connections
from .outbox import Outbox
from .ownership import SessionOwnership
from .retained import RetainedStore
from .routing import Router
from .sessions import CONNECTED, Session
from .timeline import EventKind, Timeline
from .topics import TopicError, validate_filter
from .will import WillKeeper, WillOutcome, WillPhase

log = logging.getLogger("lastwill.admin")


class AdminAction(StrEnum):
    DISCONNECT = "disconnect"
    DELETE_SESSION = "delete_session"
    PUBLISH_WILL = "publish_will"
    CANCEL_WILL = "cancel_will"
    DELETE_RETAINED = "delete_retained"


@dataclass(frozen=True, slots=True)
class AdminRequest:
    action: AdminAction
    target: str  # a client id, or a topic filter for DELETE_RETAINED
    who: str  # who asked, for the log and the timeline (e.g. "admin API from 127.0.0.1:50412")
    discard_will: bool = False  # DISCONNECT, DELETE_SESSION: discard the will first


class AdminOutcome(StrEnum):
    DONE = "done"
    UNKNOWN_CLIENT = "unknown_client"  # no session for this client id
    NOT_CONNECTED = "not_connected"  # DISCONNECT of a client that is not connected
    NO_PENDING_WILL = "no_pending_will"  # PUBLISH_WILL, CANCEL_WILL of a will that is not pending
    INVALID_FILTER = "invalid_filter"  # DELETE_RETAINED with a filter that is not one


@dataclass(frozen=True, slots=True)
class AdminResult:
    outcome: AdminOutcome
    detail: str  # what was done, or why not, in words
    will: WillOutcome | None = None  # what became of the client's will (None: it had none)
    fire_at: float | None = None  # a deferred will's deadline (monotonic)
    count: int = 0  # DELETE_RETAINED: how many were deleted

    @property
    def done(self) -> bool:
        return self.outcome is AdminOutcome.DONE


_ADMINISTRATIVE = ReasonCode.ADMINISTRATIVE_ACTION
_OPERATOR = EventKind.OPERATOR
_PENDING = WillPhase.PENDING


class Operator:
    __slots__ = ("connections", "sessions", "wills", "outbox", "router", "retained", "timeline")

    def __init__(self, connections: Connections, sessions: SessionOwnership, wills: WillKeeper, outbox: Outbox,
                 router: Router, retained: RetainedStore, timeline: Timeline) -> None:
        self.connections = connections
        self.sessions = sessions
        self.wills = wills
        self.outbox = outbox
        self.router = router
        self.retained = retained
        self.timeline = timeline

    def handle(self, request: AdminRequest, now: float) -> AdminResult:
        action = request.action
        if action is AdminAction.DELETE_RETAINED:
            return self.delete_retained(request.target, now, request.who)
        session = self.sessions.get(request.target)
        if session is None:
            return AdminResult(AdminOutcome.UNKNOWN_CLIENT, f"no session for client {request.target!r}")
        if action is AdminAction.DISCONNECT:
            return self.disconnect(session, now, request.who, request.discard_will)
        if action is AdminAction.DELETE_SESSION:
            return self.delete_session(session, now, request.who, request.discard_will)
        if action is AdminAction.PUBLISH_WILL:
            return self.publish_will(session, now, request.who)
        return self.cancel_will(session, now, request.who)

    # -- a client and its session ------------------------------------------------------------------
    def disconnect(self, session: Session, now: float, who: str, discard_will: bool) -> AdminResult:
        conn = session.conn
        client_id = session.client_id
        if conn is None or conn.state != CONNECTED:
            return AdminResult(AdminOutcome.NOT_CONNECTED, f"client {client_id!r} is not connected")
        had_will = session.will is not None
        self.timeline.record(client_id, now, _OPERATOR,
                             f"disconnect {'without' if discard_will else 'with'} its will, asked by {who}",
                             None, action=AdminAction.DISCONNECT, discard_will=discard_will)
        log.info("client_id=%s disconnected by an operator (%s)%s", client_id, who,
                 ", its will discarded first" if discard_will and had_will else "")
        discarded = discard_will and self.wills.discard_by_operator(session, now, who)
        self._end_connection(session, now, who)
        return self._result(session, had_will, discarded,
                            f"client {client_id!r} disconnected"
                            f"{' (DISCONNECT 0x98 Administrative action)' if conn.protocol_level == PROTOCOL_5 else ''}")

    def delete_session(self, session: Session, now: float, who: str, discard_will: bool) -> AdminResult:
        client_id = session.client_id
        had_will = session.will is not None
        connected = session.conn is not None and session.conn.state == CONNECTED
        self.timeline.record(client_id, now, _OPERATOR,
                             f"session deleted{' (the client was connected)' if connected else ''}"
                             f"{', its will discarded first' if discard_will and had_will else ''}, asked by {who}",
                             None, action=AdminAction.DELETE_SESSION, discard_will=discard_will)
        log.info("session client_id=%s deleted by an operator (%s)%s", client_id, who,
                 ", its will discarded first" if discard_will and had_will else "")
        discarded = discard_will and self.wills.discard_by_operator(session, now, who)
        if connected:
            self._end_connection(session, now, who)
        if self.sessions.get(client_id) is session:  # (a Session Expiry 0 ended with its connection)
            # the session ends: a pending will is published first, as at any session end [MQTT-3.1.2-8]
            self.sessions.end(session, now, f"session deleted by an operator ({who})", "MQTT-3.1.2-8")
        return self._result(session, had_will, discarded, f"session of client {client_id!r} deleted")

    def _end_connection(self, session: Session, now: float, who: str) -> None:
        conn = session.conn
        if conn.protocol_level == PROTOCOL_5:
            self.outbox.send(conn, Disconnect(_ADMINISTRATIVE,
                                              properties=self.outbox.reason(conn, "disconnected by an operator")))
        # a connection the server closes: its will follows, as for any end but DISCONNECT 0x00 [MQTT-3.1.2-8]
        self.connections.end(conn, now, ConnectionEnded(Cause.ADMINISTRATIVE, f"disconnected by an operator ({who})",
                                                        "MQTT-3.1.2-8", _ADMINISTRATIVE))

    def _result(self, session: Session, had_will: bool, discarded: bool, done: str) -> AdminResult:
        if discarded:
            return AdminResult(AdminOutcome.DONE, f"{done}; its will was discarded, not published",
                               WillOutcome.CANCELLED)
        if not had_will:
            return AdminResult(AdminOutcome.DONE, f"{done}; it had no will")
        status = self.wills.status(session) if self.sessions.get(session.client_id) is session else None
        if status is not None and status.phase is _PENDING:
            return AdminResult(AdminOutcome.DONE, f"{done}; its will is pending (Will Delay): published at its "
                               f"deadline unless the client reconnects first", WillOutcome.DEFERRED, status.fire_at)
        return AdminResult(AdminOutcome.DONE, f"{done}; its will was published", WillOutcome.PUBLISHED)

    # -- its will -------------------------------------------------------------------------------------
    def publish_will(self, session: Session, now: float, who: str) -> AdminResult:
        if not self.wills.publish_now_by_operator(session, now, who):
            return self._not_pending(session)
        log.info("will client_id=%s published now by an operator (%s)", session.client_id, who)
        return AdminResult(AdminOutcome.DONE, f"the pending will of client {session.client_id!r} was published",
                           WillOutcome.PUBLISHED)

    def cancel_will(self, session: Session, now: float, who: str) -> AdminResult:
        if self.wills.status(session).phase is not _PENDING:
            return self._not_pending(session)
        self.wills.discard_by_operator(session, now, who)
        return AdminResult(AdminOutcome.DONE, f"the pending will of client {session.client_id!r} was cancelled: "
                           f"it is never published", WillOutcome.CANCELLED)

    def _not_pending(self, session: Session) -> AdminResult:
        if session.will is None:
            why = "it has no will"
        else:
            why = ("it is connected: its will is armed, published when its connection ends (disconnect the "
                   "client to have it published)")
        return AdminResult(AdminOutcome.NO_PENDING_WILL, f"client {session.client_id!r} has no pending will: {why}")

    # -- retained messages ----------------------------------------------------------------------------
    def delete_retained(self, topic_filter: str, now: float, who: str) -> AdminResult:
        try:
            shared, _ = validate_filter(topic_filter)
            if shared is not None:
                raise TopicError("a shared subscription filter matches no retained message")
        except TopicError as e:
            return AdminResult(AdminOutcome.INVALID_FILTER, f"not a topic filter: {topic_filter!r}: {e}")
        deleted = sum(1 for msg in self.retained.find(topic_filter) if self.router.drop_retained(msg.topic))
        log.info("retained: %d message(s) matching %r deleted by an operator (%s)", deleted, topic_filter, who)
        return AdminResult(AdminOutcome.DONE, f"{deleted} retained message(s) matching {topic_filter!r} deleted",
                           count=deleted)
