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

Every decision is written to the timeline and logged with the client id and the rule, and
counted (plain integers, read by the metrics at scrape time): armed, published and cancelled by
cause, deliveries of wills dropped by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..codec.packets import Will
from .message import Message
from .sessions import NEVER, Session
from .timeline import Timeline
from .timers import TimerQueue

log = logging.getLogger("lastwill.will")


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


# Why a connection ended, as short labels: the timeline's data["cause"] and the metrics' cause label
CAUSES = {
    "eof": "the client closed the connection (EOF) without DISCONNECT",
    "reset": "the connection was reset (or the pipe broke)",
    "network_error": "another network error",
    "keep_alive": "nothing received from the client for 1.5 x Keep Alive",
    "protocol_error": "the client broke a rule of the protocol or sent a malformed packet",
    "takeover": "a new connection took the client id over",
    "disconnect_with_will": "the client sent DISCONNECT 0x04 (disconnect with will message)",
    "disconnect_error": "the client sent DISCONNECT with an error reason code",
    "server_shutdown": "the broker shut down",
    "broker_crash": "the broker crashed while the client was connected",
    "broker_restart": "the broker restarted while the client was connected (shutdown_wills = keep)",
    "internal_error": "an internal error in the broker closed the connection",
}
# why a will was discarded unpublished
CANCEL_CAUSES = {
    "disconnect": "the client sent DISCONNECT 0x00 (normal disconnection)",
    "reconnect": "the client reconnected to its session before the will delay elapsed",
    "reconnect_after_restart": "the client reconnected within the recovery grace period after a restart",
}
# why the delivery of a published will to one subscriber was dropped
DROP_REASONS = {
    "queue_full": "the subscriber's queue was full (max_queued_messages)",
    "too_large": "larger than the subscriber's Maximum Packet Size",
    "expired": "its Message Expiry Interval passed before it could be sent",
    "offline_qos0": "QoS 0 to an offline subscriber, and queue_qos0 is off",
    "not_authorized": "the ACL (acl_file) does not let the subscriber read the will's topic",
}


def cause_kind(cause: str) -> str:
    """The label (a key of CAUSES) of a connection-end cause text: the edge's (``EOF (peer closed its
    side)``, ``ConnectionResetError: ...``) or the core's own (``keep-alive timeout ...``)."""
    text = cause.lower()
    if text.startswith("connection lost: "):
        text = text[len("connection lost: "):]
    for needle, kind in (("keep-alive", "keep_alive"), ("protocol error", "protocol_error"),
                         ("malformed", "protocol_error"), ("taken over", "takeover"),
                         ("disconnect 0x04", "disconnect_with_will"), ("sent disconnect", "disconnect_error"),
                         ("crashed", "broker_crash"), ("shut down while", "broker_restart"),
                         ("shutting down", "server_shutdown"), ("internal error", "internal_error")):
        if needle in text:
            return kind
    if text.startswith("eof"):
        return "eof"
    if "reset" in text or "broken pipe" in text or "brokenpipe" in text:
        return "reset"
    return "network_error"


# What ``connection_ended`` decided, for the $SYS disconnected event: (decision, fire_at, rule) with
# decision "published" or "deferred" (fire_at: the monotonic deadline; None when published)
Decision = tuple[str, float | None, str]

CAUSE_PROPERTY = "lastwill-cause"  # the User Property a will carries when will_cause_property is on


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


class WillKeeper:
    """Owns the will state of every session; publishes through ``publish(message, now) -> receivers``."""

    def __init__(self, timers: TimerQueue, timeline: Timeline,
                 publish: Callable[[Message, float], int], record: Callable[[Session], None]):
        self.timers = timers
        self.timeline = timeline
        self.publish = publish
        self.record = record  # tells the store the session's will changed
        self.armed = 0
        self.published = 0
        self.cancelled = 0
        self.published_by_cause: dict[str, int] = {}  # keys of CAUSES
        self.published_unreceived = 0  # published, but no subscription matched
        self.cancelled_by_cause: dict[str, int] = {}  # keys of CANCEL_CAUSES
        self.dropped_by_reason: dict[str, int] = {}  # keys of DROP_REASONS
        self._firing: list | None = None  # drops reported while a will is being published
        self.cause_property = False  # will_cause_property: add User Property ("lastwill-cause", cause)
        # acl_file: why the session's will may not be published now (None: it may); the core sets it
        self.authorize: Callable[[Session, str], str | None] | None = None
        self.denied = 0  # wills not published because the ACL denied them at publication

    # -- arming ---------------------------------------------------------------------------
    def arm(self, session: Session, will: Will | None, now: float) -> None:
        """CONNECT accepted: store its will with the session [MQTT-3.1.2-7].

        A resumed session's pending will was cancelled by ``resume`` first; the new CONNECT's will
        (or none) replaces whatever the session held.
        """
        session.will = will
        session.will_fire_at = None
        session.will_cause = None
        session.will_cause_kind = None
        session.will_recovered = False
        self.record(session)  # durable before the CONNACK goes out
        expiry = session.expiry_interval
        if will is not None:
            self.armed += 1
            self.timeline.record(session.client_id, now, "armed", _armed_detail, "MQTT-3.1.2-7",
                                 topic=will.topic, qos=will.qos, retain=will.retain,
                                 delay=will_delay_of(will), session_expiry=expiry, _payload=len(will.payload))
        elif self.timeline.last_kind(session.client_id) != "no-will":
            # once per run of CONNECTs without a will: a client that reconnects often without one
            # does not fill its timeline (and the store) with the same line
            self.timeline.record(session.client_id, now, "no-will",
                                 "CONNECT accepted without a will (Will Flag 0): nothing is published when "
                                 "this connection ends (recorded once until something else happens)",
                                 session_expiry=expiry)

    def refused(self, client_id: str, now: float, why: str, rule: str | None, will: Will | None = None) -> None:
        """A CONNECT was refused: nothing of it is stored, so no will of it is ever published [MQTT-3.1.2-7]."""
        if client_id:
            what = f"its will ({describe(will)}) is not stored and is never published" if will is not None \
                else "it carried no will"
            self.timeline.record(client_id, now, "refused",
                                 f"CONNECT refused: {why}; nothing of it is stored: {what}", rule or "MQTT-3.1.2-7")

    # -- the connection ends ----------------------------------------------------------------
    def discard(self, session: Session, now: float, why: str, rule: str) -> bool:
        """DISCONNECT 0x00: delete the will without publishing it [MQTT-3.14.4-3]. True if there was one."""
        if session.will is None:
            return False
        session.will = None  # [MQTT-3.1.2-10] removed on DISCONNECT 0x00
        session.will_fire_at = None
        self.record(session)  # the cancellation is durable before the broker acts on it
        self.cancelled += 1
        _count(self.cancelled_by_cause, "disconnect")
        self.timeline.record(session.client_id, now, "cancelled", why, rule, cause="disconnect")
        log.info("will client_id=%s cancelled: %s [%s]", session.client_id, why, rule)
        return True

    def connection_ended(self, session: Session, now: float, cause: str, rule: str | None = None,
                         kind: str | None = None) -> Decision | None:
        """The network connection ended without DISCONNECT 0x00: publish now or defer [MQTT-3.1.2-8].

        ``kind``: the cause as a key of CAUSES (worked out from ``cause`` when not given).
        Returns what was decided (None: the session held no will)."""
        will = session.will
        if will is None:
            return None
        kind = kind or cause_kind(cause)
        self.timeline.record(session.client_id, now, "connection-ended", cause, rule or "MQTT-3.1.2-8",
                             cause=kind)
        delay = will_delay_of(will)
        expiry = session.expiry_interval
        wait = delay if expiry == NEVER else min(delay, expiry)  # [MQTT-3.1.3-9] delay or session end
        session.will_cause = cause
        session.will_cause_kind = kind
        if wait <= 0:
            fire_rule = "MQTT-3.1.2-8" if delay == 0 else "MQTT-3.1.3-9"
            self.fire(session, now, cause, fire_rule)
            return ("published", None, fire_rule)
        session.will_fire_at = now + wait
        self.timers.schedule(("will", session.client_id), session.will_fire_at)
        self.record(session)
        bound = "will delay" if delay <= expiry or expiry == NEVER else "session expiry"
        self.timeline.record(session.client_id, now, "deferred",
                             f"published in {wait}s unless the client reconnects first; the {bound} decides "
                             f"(will delay {delay}s, session expiry {'never' if expiry == NEVER else f'{expiry}s'})",
                             "MQTT-3.1.3-9", fire_at=session.will_fire_at, wait=wait)
        log.info("will client_id=%s deferred %ss (%s) after %s [MQTT-3.1.3-9]",
                 session.client_id, wait, bound, cause)
        return ("deferred", session.will_fire_at, "MQTT-3.1.3-9")

    # -- the session comes back or ends -------------------------------------------------------
    def resume(self, session: Session, now: float) -> None:
        """A new connection to the session (Clean Start 0) before the will fired cancels it [MQTT-3.1.3-9]."""
        if session.will is None or session.will_fire_at is None:
            return
        self.timers.cancel(("will", session.client_id))
        recovered = session.will_recovered
        session.will = None
        session.will_fire_at = None
        session.will_recovered = False
        self.record(session)
        self.cancelled += 1
        cause = "reconnect_after_restart" if recovered else "reconnect"
        _count(self.cancelled_by_cause, cause)
        why = ("client reconnected within the recovery grace period after the broker restarted" if recovered
               else "client reconnected to its session (Clean Start 0) before the will delay elapsed")
        self.timeline.record(session.client_id, now, "cancelled", why, "MQTT-3.1.3-9", cause=cause)
        log.info("will client_id=%s cancelled: %s [MQTT-3.1.3-9]", session.client_id, why)

    def recovered(self, session: Session, now: float, grace: float, why: str, kind: str | None = None) -> None:
        """The broker restarted; the client was connected when it stopped, so its connection ended
        without DISCONNECT. The will is pending: published after ``max(grace, min(will delay, session
        expiry))`` unless the client reconnects first (any reconnect: the client has proved alive)."""
        will = session.will
        if will is None:
            return
        delay = will_delay_of(will)
        expiry = session.expiry_interval
        wait = max(grace, delay if expiry == NEVER else min(delay, expiry))
        kind = kind or cause_kind(why)
        session.will_cause = why
        session.will_cause_kind = kind
        session.will_recovered = True
        session.will_fire_at = now + wait
        self.timers.schedule(("will", session.client_id), session.will_fire_at)
        self.record(session)
        if kind == "broker_crash":  # nothing recorded the end of the connection: the broker died
            self.timeline.record(session.client_id, now, "connection-ended", why, "MQTT-3.1.2-8", cause=kind)
        else:  # the shutdown recorded it (kept_at_shutdown)
            self.timeline.record(session.client_id, now, "restored", f"broker restarted; {why}",
                                 "MQTT-3.1.2-8", cause=kind)
        self.timeline.record(session.client_id, now, "deferred",
                             f"published in {wait:g}s unless the client reconnects first (recovery grace "
                             f"{grace:g}s, will delay {delay}s)", "MQTT-3.1.3-9",
                             fire_at=session.will_fire_at, wait=wait)
        log.info("will client_id=%s recovered after restart (%s): published in %gs unless the client "
                 "reconnects", session.client_id, why, wait)

    def kept_at_shutdown(self, session: Session, now: float) -> None:
        """The broker shuts down with ``shutdown_wills = keep``: the will stays stored, unpublished, and
        is recovered as pending at the next start."""
        if session.will is not None:
            self.timeline.record(session.client_id, now, "connection-ended",
                                 "server shutting down: the will is kept for the next start "
                                 "(shutdown_wills = keep)", "MQTT-3.1.2-8", cause="server_shutdown")

    def restored_pending(self, session: Session, now: float) -> None:
        """A will that was already pending when the broker stopped keeps its deadline (which may be past)."""
        self.timers.schedule(("will", session.client_id), max(now, session.will_fire_at))
        self.timeline.record(session.client_id, now, "restored",
                             f"pending will restored; due in {max(0.0, session.will_fire_at - now):.1f}s",
                             "MQTT-3.1.3-9")
        log.info("will client_id=%s restored as pending, due in %.1fs", session.client_id,
                 max(0.0, session.will_fire_at - now))

    def session_ending(self, session: Session, now: float, why: str, rule: str) -> None:
        """The session ends: a pending will is published at once [MQTT-3.1.2-8]."""
        if session.will is not None and session.will_fire_at is not None:
            self.fire(session, now, why, rule)

    def timer_fired(self, session: Session | None, now: float) -> None:
        if session is None or session.will is None or session.will_fire_at is None:
            return
        if session.will_fire_at > now:  # rescheduled meanwhile; not due
            self.timers.schedule(("will", session.client_id), session.will_fire_at)
            return
        if session.will_recovered:  # the broker stopped while the client was connected
            self.fire(session, now, "the client did not reconnect within the recovery grace period",
                      "MQTT-3.1.2-8")
            return
        delay = will_delay_of(session.will)
        expiry = session.expiry_interval
        if expiry != NEVER and expiry < delay:  # the session ends first [MQTT-3.1.3-9]
            why = f"session expiry elapsed (session expiry {expiry}s, before the will delay {delay}s)"
        else:
            why = "will delay elapsed"
        self.fire(session, now, why, "MQTT-3.1.3-9")

    # -- publishing --------------------------------------------------------------------------
    def fire(self, session: Session, now: float, why: str, rule: str) -> None:
        will = session.will
        if will is None:
            return
        # removed from the session before it is published, so it can go out only once [MQTT-3.1.2-10]
        session.will = None
        session.will_fire_at = None
        session.will_recovered = False
        self.timers.cancel(("will", session.client_id))
        self.record(session)
        kind = session.will_cause_kind or cause_kind(session.will_cause or why)
        denied = self.authorize(session, will.topic) if self.authorize is not None else None
        if denied:
            # checked again now: the ACL may have been reloaded since the CONNECT, or the will recovered
            # after a restart. Dropped, unpublished (it was removed above: it is never published later)
            self.denied += 1
            self.timeline.record(session.client_id, now, "denied",
                                 f"{why}: not published: {denied}", None, cause=kind, topic=will.topic,
                                 reason="not_authorized")
            log.warning("will client_id=%s on %s NOT published (%s): %s", session.client_id, will.topic, why,
                        denied)
            return
        props = {k: v for k, v in will.properties.items()
                 if k not in ("will_delay_interval", "message_expiry_interval")}  # never forwarded
        if self.cause_property:  # after the will's own User Properties, whose order is kept [MQTT-3.1.3-10]
            props["user_property"] = [*props.get("user_property", ()), (CAUSE_PROPERTY, kind)]
        mei = will.properties.get("message_expiry_interval")
        message = Message(
            topic=will.topic, payload=will.payload, qos=will.qos,
            retain=will.retain,  # [MQTT-3.1.2-14] [MQTT-3.1.2-15]
            properties=props, origin=session.client_id,
            expiry_at=(now + mei) if mei is not None else None,  # counts from publication
            is_will=True,
        )
        self._firing = []  # drops during the publication are recorded after it
        try:
            receivers = self.publish(message, now)
        finally:
            drops, self._firing = self._firing, None
        self.published += 1
        _count(self.published_by_cause, kind)
        if receivers:
            outcome = f"published on {will.topic!r} to {receivers} subscriber(s)"
        else:
            self.published_unreceived += 1
            outcome = f"published on {will.topic!r}, but no subscription matched it: nobody received it"
        if will.retain and will.payload:
            outcome += "; kept as the retained message of its topic"
        # at once after the connection-ended event, the cause is not repeated; otherwise, why now
        self.timeline.record(session.client_id, now, "published",
                             outcome if why == session.will_cause else f"{why}: {outcome}", rule,
                             receivers=receivers, cause=kind, topic=will.topic)
        for args, data in drops:
            self.timeline.record(*args, **data)
        log.info("will client_id=%s published to %s: %s; %d receiver(s) [%s]",
                 session.client_id, will.topic, why, receivers, rule)

    def delivery_dropped(self, message: Message, subscriber: str, reason: str, now: float,
                         detail: str = "", rule: str | None = None) -> None:
        """The delivery of a will (``message.is_will``) to one subscriber was dropped: tell its owner's
        timeline. ``reason``: a key of DROP_REASONS."""
        _count(self.dropped_by_reason, reason)
        owner = message.origin
        if owner is None:
            return
        text = f"delivery to subscriber {subscriber!r} dropped: {detail or DROP_REASONS.get(reason, reason)}"
        args = (owner, now, "dropped", text, rule)
        data = {"reason": reason, "subscriber": subscriber}
        if self._firing is not None:
            self._firing.append((args, data))
        else:
            self.timeline.record(*args, **data)
