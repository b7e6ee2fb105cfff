"""The whole life of a Will Message, in one place: arm, defer, cancel, fire.

The rule (MQTT 5, 3.1.2.5 and 3.1.3.2.2; MQTT 3.1.1, 3.1.2.5):

* A will is stored with the session when the CONNECT is accepted [MQTT-3.1.2-7], never before.
* It is discarded, unpublished, on DISCONNECT with reason 0x00 [MQTT-3.14.4-3] [MQTT-3.1.2-10].
* When the network connection ends any other way (EOF, reset, keep-alive expiry, a protocol error,
  a server close, a takeover, DISCONNECT with 0x04 or any other non-zero reason), the will is
  published at ``closed_at + min(Will Delay Interval, Session Expiry Interval)`` [MQTT-3.1.2-8]
  [MQTT-3.1.3-9], where the Session Expiry Interval is the final one (a DISCONNECT may change it).
  In MQTT 3.1.1 there is no delay: it is published at once.
* A new connection to the session (Clean Start 0) before then cancels it [MQTT-3.1.3-9].
* The session ending first (Clean Start 1 on a new connection, session expiry) publishes it at
  once [MQTT-3.1.2-8].
* Once published it is removed from the session [MQTT-3.1.2-10]: it goes out exactly once.
* When it is due, the ACL (acl_file) is checked again with the session's user name: a will its client
  may no longer publish is dropped, recorded (``denied``) and counted, never published later.

A session's will is one ``WillState`` (core/sessions.py), changed only here. Every decision is
written to the timeline and logged with the client id and the rule, and counted (plain integers,
read by the metrics at scrape time): armed, published and cancelled by cause, deliveries of wills
dropped by reason. ``status`` is the one answer to "where does this client's will stand", which
the admin API, ``explain`` and the ``$SYS`` events read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..codec.packets import Will
from ..logs import fast_logger
from .causes import Cause, ConnectionEnded
from .message import Message
from .sessions import NEVER, Session, WillState
from .timeline import EventKind, Timeline
from .timers import TimerKind, TimerQueue

log = fast_logger("lastwill.will")

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_WILL = TimerKind.WILL.value


class WillOutcome(StrEnum):
    """What the rule decided when a connection ended (for the ``$SYS`` disconnected event)."""

    PUBLISHED = "published"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class WillDecision:
    outcome: WillOutcome
    fire_at: float | None  # the monotonic deadline of a deferred will
    rule: str


class CancelCause(StrEnum):
    """Why a will was discarded unpublished."""

    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    RECONNECT_AFTER_RESTART = "reconnect_after_restart"
    OPERATOR = "operator"  # an operator discarded it through the admin API


class DropReason(StrEnum):
    """Why the delivery of a published will to one subscriber was dropped."""

    QUEUE_FULL = "queue_full"
    TOO_LARGE = "too_large"
    EXPIRED = "expired"
    OFFLINE_QOS0 = "offline_qos0"
    NOT_AUTHORIZED = "not_authorized"


CANCEL_CAUSES: dict[str, str] = {
    CancelCause.DISCONNECT: "the client sent DISCONNECT 0x00 (normal disconnection)",
    CancelCause.RECONNECT: "the client reconnected to its session before the will delay elapsed",
    CancelCause.RECONNECT_AFTER_RESTART: "the client reconnected within the recovery grace period after a restart",
    CancelCause.OPERATOR: "an operator discarded it through the admin API",
}
DROP_REASONS: dict[str, str] = {
    DropReason.QUEUE_FULL: "the subscriber's queue was full (max_queued_messages)",
    DropReason.TOO_LARGE: "larger than the subscriber's Maximum Packet Size",
    DropReason.EXPIRED: "its Message Expiry Interval passed before it could be sent",
    DropReason.OFFLINE_QOS0: "QoS 0 to an offline subscriber, and queue_qos0 is off",
    DropReason.NOT_AUTHORIZED: "the ACL (acl_file) does not let the subscriber read the will's topic",
}


class WillPhase(StrEnum):
    NONE = "none"  # the session holds no will
    ARMED = "armed"  # the client is connected: published if the connection ends without DISCONNECT 0x00
    PENDING = "pending"  # the connection ended: published at ``fire_at`` unless the client comes back


@dataclass(frozen=True, slots=True)
class WillStatus:
    """Where a session's will stands (a read-only answer; times are the core's monotonic ones)."""

    phase: WillPhase
    will: Will | None = None
    fire_at: float | None = None
    ended: ConnectionEnded | None = None
    recovered: bool = False


NO_WILL = WillStatus(WillPhase.NONE)


def will_delay_of(will: Will) -> int:
    return will.properties.get("will_delay_interval", 0)


def _describe(topic: str, qos: int, retain: bool, payload_len: int, delay: int) -> str:
    text = f"topic {topic!r} qos {qos} retain {int(retain)} payload {payload_len} bytes"
    return text + (f" delay {delay}s" if delay else "")


def describe(will: Will) -> str:
    return _describe(will.topic, will.qos, will.retain, len(will.payload), will_delay_of(will))


def _armed_detail(d: dict) -> str:
    """The ``armed`` event's text, written from its data when the event is read: every client with a
    will keeps this event, so it does not keep the text (see timeline.py)."""
    expiry = d["session_expiry"]
    return (f"{_describe(d['topic'], d['qos'], d['retain'], d['_payload'], d['delay'])}, "
            f"session expiry {'never' if expiry == NEVER else f'{expiry}s'}")


CAUSE_PROPERTY = "lastwill-cause"  # the User Property a will carries when will_cause_property is on

# what a restored will's connection end is called when the store kept no cause (schema 1 kept only
# a text, which is never parsed)
_UNKNOWN_END = ConnectionEnded(Cause.NETWORK_ERROR, "connection lost")


class WillFiring(Protocol):
    """How a due will goes out: claimed (so that it goes out once, whoever else might fire it), then
    published as an Application Message. The keeper records the outcome on the timeline."""

    def claim(self, client_id: str, state: WillState, now: float) -> bool:
        """Take the will for publication. False: it is gone (fired or cancelled elsewhere)."""

    def publish(self, message: Message, now: float) -> int:
        """Route it; returns how many sessions it went to."""


class LocalWillFiring:
    """One broker process: the keeper removed the will from its session, so the claim is its own."""

    __slots__ = ("publish",)

    def __init__(self, publish: Callable[[Message, float], int] | None = None) -> None:
        self.publish = publish  # the router's route (set once the router is built)

    def claim(self, client_id: str, state: WillState, now: float) -> bool:
        return True


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__), and these are on the connect and disconnect paths
_BROKER_CRASH = Cause.BROKER_CRASH
_CANCELLED = EventKind.CANCELLED
_CONNECTION_ENDED = EventKind.CONNECTION_ENDED
_DENIED = EventKind.DENIED
_DISCONNECT = CancelCause.DISCONNECT
_DROPPED = EventKind.DROPPED
_EK_ARMED = EventKind.ARMED
_EK_DEFERRED = EventKind.DEFERRED
_EK_PUBLISHED = EventKind.PUBLISHED
_NOT_AUTHORIZED = DropReason.NOT_AUTHORIZED
_NO_WILL = EventKind.NO_WILL
_OPERATOR = CancelCause.OPERATOR
_PENDING = WillPhase.PENDING
_RECONNECT = CancelCause.RECONNECT
_RECONNECT_AFTER_RESTART = CancelCause.RECONNECT_AFTER_RESTART
_REFUSED = EventKind.REFUSED
_RESTORED = EventKind.RESTORED
_SERVER_SHUTDOWN = Cause.SERVER_SHUTDOWN
_WO_DEFERRED = WillOutcome.DEFERRED
_WO_PUBLISHED = WillOutcome.PUBLISHED
_WP_ARMED = WillPhase.ARMED


class WillKeeper:
    """Owns the will state of every session; fires through ``firing`` (claim, then publish), tells the
    store through ``record(session)``."""

    def __init__(self, timers: TimerQueue, timeline: Timeline, firing: WillFiring,
                 record: Callable[[Session], None], *, cause_property: bool = False,
                 authorize: Callable[[Session, str], str | None] | None = None):
        self.timers = timers
        self.timeline = timeline
        self.firing = firing
        self.record = record  # tells the store the session's will changed
        self.cause_property = cause_property  # will_cause_property: add User Property ("lastwill-cause", cause)
        # acl_file: why the session's will may not be published now (None: it may)
        self.authorize = authorize
        self.armed = 0
        self.stored = 0  # wills stored now, armed or pending (the max_wills bound, core/limits.py)
        self.published = 0
        self.cancelled = 0
        self.published_by_cause: dict[str, int] = {}  # Cause values
        self.published_unreceived = 0  # published, but no subscription matched
        self.cancelled_by_cause: dict[str, int] = {}  # CancelCause values
        self.dropped_by_reason: dict[str, int] = {}  # DropReason values
        self.denied = 0  # wills not published because the ACL denied them at publication
        self._firing: list | None = None  # drops reported while a will is being published

    def register_timers(self, sessions: Callable[[str], Session | None]) -> None:
        """The will timer fires ``timer_fired`` with the session (``sessions``: client id -> session)."""
        self.timers.register(TimerKind.WILL, lambda client_id, now: self.timer_fired(sessions(client_id), now))

    # -- the query -----------------------------------------------------------------------------
    @staticmethod
    def status(session: Session | None) -> WillStatus:
        state = session.will if session is not None else None
        if state is None:
            return NO_WILL
        return WillStatus(_PENDING if state.fire_at is not None else _WP_ARMED,
                          state.message, state.fire_at, state.ended, state.recovered)

    # -- arming ---------------------------------------------------------------------------
    def arm(self, session: Session, will: Will | None, now: float) -> None:
        """CONNECT accepted: store its will with the session [MQTT-3.1.2-7].

        A resumed session's pending will was cancelled by ``resume`` first; the new CONNECT's will
        (or none) replaces whatever the session held.
        """
        self._set(session, WillState(will) if will is not None else None)
        self.record(session)  # durable before the CONNACK goes out
        expiry = session.expiry_interval
        if will is not None:
            self.armed += 1
            self.timeline.record(session.client_id, now, _EK_ARMED, _armed_detail, "MQTT-3.1.2-7",
                                 topic=will.topic, qos=will.qos, retain=will.retain,
                                 delay=will_delay_of(will), session_expiry=expiry, _payload=len(will.payload))
        elif self.timeline.last_kind(session.client_id) != _NO_WILL:
            # once per run of CONNECTs without a will: a client that reconnects often without one
            # does not fill its timeline (and the store) with the same line
            self.timeline.record(session.client_id, now, _NO_WILL,
                                 "CONNECT accepted without a will (Will Flag 0): nothing is published when "
                                 "this connection ends (recorded once until something else happens)",
                                 session_expiry=expiry)

    def refused(self, client_id: str, now: float, why: str, rule: str | None, will: Will | None = None) -> None:
        """A CONNECT was refused: nothing of it is stored, so no will of it is ever published [MQTT-3.1.2-7]."""
        if client_id:
            what = f"its will ({describe(will)}) is not stored and is never published" if will is not None \
                else "it carried no will"
            self.timeline.record(client_id, now, _REFUSED,
                                 f"CONNECT refused: {why}; nothing of it is stored: {what}", rule or "MQTT-3.1.2-7")

    def restore(self, session: Session, will: Will, fire_at: float | None, ended: ConnectionEnded | None) -> None:
        """The store held this will for the session (start-up): armed, or pending until ``fire_at``."""
        if fire_at is not None and ended is None:
            ended = _UNKNOWN_END
        self._set(session, WillState(will, fire_at, ended))

    def _set(self, session: Session, state: WillState | None) -> None:
        """The one place a session's will is stored or removed: ``stored`` counts them."""
        self.stored += (state is not None) - (session.will is not None)
        session.will = state

    # -- the connection ends ----------------------------------------------------------------
    def discard(self, session: Session, now: float, why: str, rule: str) -> bool:
        """DISCONNECT 0x00: delete the will without publishing it [MQTT-3.14.4-3]. True if there was one."""
        if session.will is None:
            return False
        self._set(session, None)  # [MQTT-3.1.2-10] removed on DISCONNECT 0x00
        self.record(session)  # the cancellation is durable before the broker acts on it
        self.cancelled += 1
        _count(self.cancelled_by_cause, _DISCONNECT)
        self.timeline.record(session.client_id, now, _CANCELLED, why, rule, cause=_DISCONNECT)
        log.info("will client_id=%s cancelled: %s [%s]", session.client_id, why, rule)
        return True

    def connection_ended(self, session: Session, now: float, ended: ConnectionEnded) -> WillDecision | None:
        """The network connection ended without DISCONNECT 0x00: publish now or defer [MQTT-3.1.2-8].
        Returns what was decided (None: the session held no will)."""
        state = session.will
        if state is None:
            return None
        self.timeline.record(session.client_id, now, _CONNECTION_ENDED, ended.detail,
                             ended.rule or "MQTT-3.1.2-8", cause=ended.cause)
        delay = will_delay_of(state.message)
        expiry = session.expiry_interval
        wait = delay if expiry == NEVER else min(delay, expiry)  # [MQTT-3.1.3-9] delay or session end
        state.ended = ended
        if wait <= 0:
            fire_rule = "MQTT-3.1.2-8" if delay == 0 else "MQTT-3.1.3-9"
            self.fire(session, now, ended.detail, fire_rule)
            return WillDecision(_WO_PUBLISHED, None, fire_rule)
        state.fire_at = now + wait
        self.timers.schedule((_WILL, session.client_id), state.fire_at)
        self.record(session)
        bound = "will delay" if delay <= expiry or expiry == NEVER else "session expiry"
        self.timeline.record(session.client_id, now, _EK_DEFERRED,
                             f"published in {wait}s unless the client reconnects first; the {bound} decides "
                             f"(will delay {delay}s, session expiry {'never' if expiry == NEVER else f'{expiry}s'})",
                             "MQTT-3.1.3-9", fire_at=state.fire_at, wait=wait)
        log.info("will client_id=%s deferred %ss (%s) after %s [MQTT-3.1.3-9]",
                 session.client_id, wait, bound, ended.detail)
        return WillDecision(_WO_DEFERRED, state.fire_at, "MQTT-3.1.3-9")

    # -- the session comes back or ends -------------------------------------------------------
    def resume(self, session: Session, now: float) -> None:
        """A new connection to the session (Clean Start 0) before the will fired cancels it [MQTT-3.1.3-9]."""
        state = session.will
        if state is None or state.fire_at is None:
            return
        self.timers.cancel((_WILL, session.client_id))
        self._set(session, None)
        self.record(session)
        self.cancelled += 1
        cause = _RECONNECT_AFTER_RESTART if state.recovered else _RECONNECT
        _count(self.cancelled_by_cause, cause)
        why = ("client reconnected within the recovery grace period after the broker restarted" if state.recovered
               else "client reconnected to its session (Clean Start 0) before the will delay elapsed")
        self.timeline.record(session.client_id, now, _CANCELLED, why, "MQTT-3.1.3-9", cause=cause)
        log.info("will client_id=%s cancelled: %s [MQTT-3.1.3-9]", session.client_id, why)

    def cancelled_in_cluster(self, client_id: str, now: float, why: str) -> None:
        """Cluster mode: the engine discarded a pending will of this client, unpublished, because it came
        back in time (on any node) [MQTT-3.1.3-9]; ``why`` says how, in words."""
        self.cancelled += 1
        _count(self.cancelled_by_cause, _RECONNECT)
        self.timeline.record(client_id, now, _CANCELLED, why, "MQTT-3.1.3-9", cause=_RECONNECT)
        log.info("will client_id=%s cancelled: %s [MQTT-3.1.3-9]", client_id, why)

    def recovered(self, session: Session, now: float, grace: float, ended: ConnectionEnded) -> None:
        """The broker restarted; the client was connected when it stopped, so its connection ended
        without DISCONNECT. The will is pending: published after ``max(grace, min(will delay, session
        expiry))`` unless the client reconnects first (any reconnect: the client has proved alive)."""
        state = session.will
        if state is None:
            return
        delay = will_delay_of(state.message)
        expiry = session.expiry_interval
        wait = max(grace, delay if expiry == NEVER else min(delay, expiry))
        state.ended = ended
        state.recovered = True
        state.fire_at = now + wait
        self.timers.schedule((_WILL, session.client_id), state.fire_at)
        self.record(session)
        if ended.cause is _BROKER_CRASH:  # nothing recorded the end of the connection: the broker died
            self.timeline.record(session.client_id, now, _CONNECTION_ENDED, ended.detail, "MQTT-3.1.2-8",
                                 cause=ended.cause)
        else:  # the shutdown recorded it (kept_at_shutdown)
            self.timeline.record(session.client_id, now, _RESTORED, f"broker restarted; {ended.detail}",
                                 "MQTT-3.1.2-8", cause=ended.cause)
        self.timeline.record(session.client_id, now, _EK_DEFERRED,
                             f"published in {wait:g}s unless the client reconnects first (recovery grace "
                             f"{grace:g}s, will delay {delay}s)", "MQTT-3.1.3-9",
                             fire_at=state.fire_at, wait=wait)
        log.info("will client_id=%s recovered after restart (%s): published in %gs unless the client "
                 "reconnects", session.client_id, ended.detail, wait)

    def kept_at_shutdown(self, session: Session, now: float) -> None:
        """The broker shuts down with ``shutdown_wills = keep``: the will stays stored, unpublished, and
        is recovered as pending at the next start."""
        if session.will is not None:
            self.timeline.record(session.client_id, now, _CONNECTION_ENDED,
                                 "server shutting down: the will is kept for the next start "
                                 "(shutdown_wills = keep)", "MQTT-3.1.2-8", cause=_SERVER_SHUTDOWN)

    def restored_pending(self, session: Session, now: float) -> None:
        """A will that was already pending when the broker stopped keeps its deadline (which may be past)."""
        fire_at = session.will.fire_at
        self.timers.schedule((_WILL, session.client_id), max(now, fire_at))
        self.timeline.record(session.client_id, now, _RESTORED,
                             f"pending will restored; due in {max(0.0, fire_at - now):.1f}s", "MQTT-3.1.3-9")
        log.info("will client_id=%s restored as pending, due in %.1fs", session.client_id, max(0.0, fire_at - now))

    def session_ending(self, session: Session, now: float, why: str, rule: str | None) -> None:
        """The session ends: a pending will is published at once [MQTT-3.1.2-8]."""
        state = session.will
        if state is not None and state.fire_at is not None:
            self.fire(session, now, why, rule)

    def timer_fired(self, session: Session | None, now: float) -> None:
        state = session.will if session is not None else None
        if state is None or state.fire_at is None:
            return
        if state.fire_at > now:  # rescheduled meanwhile; not due
            self.timers.schedule((_WILL, session.client_id), state.fire_at)
            return
        if state.recovered:  # the broker stopped while the client was connected
            self.fire(session, now, "the client did not reconnect within the recovery grace period",
                      "MQTT-3.1.2-8")
            return
        delay = will_delay_of(state.message)
        expiry = session.expiry_interval
        if expiry != NEVER and expiry < delay:  # the session ends first [MQTT-3.1.3-9]
            why = f"session expiry elapsed (session expiry {expiry}s, before the will delay {delay}s)"
        else:
            why = "will delay elapsed"
        self.fire(session, now, why, "MQTT-3.1.3-9")

    # -- an operator's decisions (the admin API, through core/operator.py) ----------------------------
    def discard_by_operator(self, session: Session, now: float, who: str) -> bool:
        """An operator discards the session's will, armed or pending: never published. Not a rule of the
        protocol but the operator's decision, recorded as such (cause ``operator``, who asked). True if
        there was one."""
        state = session.will
        if state is None:
            return False
        self.timers.cancel((_WILL, session.client_id))
        self._set(session, None)
        self.record(session)  # durable before the broker acts on it (the edge commits before it answers)
        self.cancelled += 1
        _count(self.cancelled_by_cause, _OPERATOR)
        phase = "pending" if state.fire_at is not None else "armed"
        self.timeline.record(session.client_id, now, _CANCELLED,
                             f"discarded by an operator ({who}): the {phase} will on {state.topic!r} is never "
                             f"published", None, cause=_OPERATOR)
        log.info("will client_id=%s on %s discarded by an operator (%s)", session.client_id, state.topic, who)
        return True

    def publish_now_by_operator(self, session: Session, now: float, who: str) -> bool:
        """An operator has a pending will published now instead of at its deadline. False: it was not
        pending (an armed will goes out when its connection ends: disconnect the client instead)."""
        state = session.will
        if state is None or state.fire_at is None:
            return False
        self.fire(session, now, f"published before its deadline by an operator ({who})", None)
        return True

    # -- publishing --------------------------------------------------------------------------
    def fire(self, session: Session, now: float, why: str, rule: str | None) -> None:
        state = session.will
        if state is None:
            return
        # removed from the session before it is published, so it can go out only once [MQTT-3.1.2-10]
        self._set(session, None)
        self.timers.cancel((_WILL, session.client_id))
        self.record(session)
        if not self.firing.claim(session.client_id, state, now):
            return  # fired or cancelled by someone else: it is gone
        will = state.message
        ended = state.ended or _UNKNOWN_END
        cause = ended.cause
        denied = self.authorize(session, will.topic) if self.authorize is not None else None
        if denied:
            # checked again now: the ACL may have been reloaded since the CONNECT, or the will recovered
            # after a restart. Dropped, unpublished (it was removed above: it is never published later)
            self.denied += 1
            self.timeline.record(session.client_id, now, _DENIED,
                                 f"{why}: not published: {denied}", None, cause=cause, topic=will.topic,
                                 reason=_NOT_AUTHORIZED)
            log.warning("will client_id=%s on %s NOT published (%s): %s", session.client_id, will.topic, why,
                        denied)
            return
        receivers, drops = self._publish(session, will, cause, now)
        self.published += 1
        _count(self.published_by_cause, cause)
        if receivers:
            outcome = f"published on {will.topic!r} to {receivers} subscriber(s)"
        else:
            self.published_unreceived += 1
            outcome = f"published on {will.topic!r}, but no subscription matched it: nobody received it"
        if will.retain and will.payload:
            outcome += "; kept as the retained message of its topic"
        # at once after the connection-ended event, the cause is not repeated; otherwise, why now
        self.timeline.record(session.client_id, now, _EK_PUBLISHED,
                             outcome if why == ended.detail else f"{why}: {outcome}", rule,
                             receivers=receivers, cause=cause, topic=will.topic)
        for args, data in drops:
            self.timeline.record(*args, **data)
        log.info("will client_id=%s published to %s: %s; %d receiver(s)%s",
                 session.client_id, will.topic, why, receivers, f" [{rule}]" if rule else "")

    def _publish(self, session: Session, will: Will, cause: Cause, now: float) -> tuple[int, list]:
        """Route the will as an Application Message. Returns the receivers, and the drops reported
        meanwhile: they are recorded after its ``published`` event (they follow from it)."""
        props = {k: v for k, v in will.properties.items()
                 if k not in ("will_delay_interval", "message_expiry_interval")}  # never forwarded
        if self.cause_property:  # after the will's own User Properties, whose order is kept [MQTT-3.1.3-10]
            props["user_property"] = [*props.get("user_property", ()), (CAUSE_PROPERTY, cause.value)]
        mei = will.properties.get("message_expiry_interval")
        message = Message(
            topic=will.topic, payload=will.payload, qos=will.qos,
            retain=will.retain,  # [MQTT-3.1.2-14] [MQTT-3.1.2-15]
            properties=props, origin=session.client_id,
            expiry_at=(now + mei) if mei is not None else None,  # counts from publication
            is_will=True,
        )
        self._firing = []
        try:
            receivers = self.firing.publish(message, now)
        finally:
            drops, self._firing = self._firing, None
        return receivers, drops

    def delivery_dropped(self, message: Message, subscriber: str, reason: DropReason, now: float,
                         detail: str = "", rule: str | None = None) -> None:
        """The delivery of a will (``message.is_will``) to one subscriber was dropped: tell its owner's
        timeline."""
        _count(self.dropped_by_reason, reason)
        owner = message.origin
        if owner is None:
            return
        text = f"delivery to subscriber {subscriber!r} dropped: {detail or DROP_REASONS.get(reason, reason)}"
        args = (owner, now, _DROPPED, text, rule)
        data = {"reason": reason, "subscriber": subscriber}
        if self._firing is not None:
            self._firing.append((args, data))
        else:
            self.timeline.record(*args, **data)
