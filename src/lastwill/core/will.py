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

Every decision is written to the timeline and logged with the client id and the rule.
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


def describe(will: Will) -> str:
    delay = will_delay_of(will)
    text = f"topic {will.topic!r} qos {will.qos} retain {int(will.retain)} payload {len(will.payload)} bytes"
    return text + (f" delay {delay}s" if delay else "")


class WillKeeper:
    """Owns the will state of every session; publishes through ``publish(message, now) -> receivers``."""

    def __init__(self, timers: TimerQueue, timeline: Timeline,
                 publish: Callable[[Message, float], int], record: Callable[[Session], None]):
        self.timers = timers
        self.timeline = timeline
        self.publish = publish
        self.record = record  # tells the store the session's will changed
        self.published = 0
        self.cancelled = 0

    # -- arming ---------------------------------------------------------------------------
    def arm(self, session: Session, will: Will | None, now: float) -> None:
        """CONNECT accepted: store its will with the session [MQTT-3.1.2-7].

        A resumed session's pending will was cancelled by ``resume`` first; the new CONNECT's will
        (or none) replaces whatever the session held.
        """
        session.will = will
        session.will_fire_at = None
        session.will_cause = None
        session.will_recovered = False
        self.record(session)  # durable before the CONNACK goes out
        if will is not None:
            self.timeline.record(session.client_id, now, "armed", describe(will), "MQTT-3.1.2-7",
                                 topic=will.topic, qos=will.qos, retain=will.retain,
                                 delay=will_delay_of(will), session_expiry=session.expiry_interval)

    # -- the connection ends ----------------------------------------------------------------
    def discard(self, session: Session, now: float, why: str, rule: str) -> None:
        """DISCONNECT 0x00: delete the will without publishing it [MQTT-3.14.4-3]."""
        if session.will is None:
            return
        session.will = None  # [MQTT-3.1.2-10] removed on DISCONNECT 0x00
        session.will_fire_at = None
        self.record(session)  # the cancellation is durable before the broker acts on it
        self.cancelled += 1
        self.timeline.record(session.client_id, now, "cancelled", why, rule)
        log.info("will client_id=%s cancelled: %s [%s]", session.client_id, why, rule)

    def connection_ended(self, session: Session, now: float, cause: str, rule: str | None = None) -> None:
        """The network connection ended without DISCONNECT 0x00: publish now or defer [MQTT-3.1.2-8]."""
        will = session.will
        if will is None:
            return
        self.timeline.record(session.client_id, now, "connection-ended", cause, rule)
        delay = will_delay_of(will)
        expiry = session.expiry_interval
        wait = delay if expiry == NEVER else min(delay, expiry)  # [MQTT-3.1.3-9] delay or session end
        session.will_cause = cause
        if wait <= 0:
            self.fire(session, now, cause,
                      "MQTT-3.1.2-8" if delay == 0 else "MQTT-3.1.3-9")
            return
        session.will_fire_at = now + wait
        self.timers.schedule(("will", session.client_id), session.will_fire_at)
        self.record(session)
        bound = "will delay" if delay <= expiry or expiry == NEVER else "session expiry"
        self.timeline.record(session.client_id, now, "deferred",
                             f"until +{wait}s ({bound}: will delay {delay}s, session expiry "
                             f"{'never' if expiry == NEVER else f'{expiry}s'})", "MQTT-3.1.3-9",
                             fire_at=session.will_fire_at)
        log.info("will client_id=%s deferred %ss (%s) after %s [MQTT-3.1.3-9]",
                 session.client_id, wait, bound, cause)

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
        why = ("client reconnected within the recovery grace period after the broker restarted" if recovered
               else "client reconnected to its session (Clean Start 0) before the will delay elapsed")
        self.timeline.record(session.client_id, now, "cancelled", why, "MQTT-3.1.3-9")
        log.info("will client_id=%s cancelled: %s [MQTT-3.1.3-9]", session.client_id, why)

    def recovered(self, session: Session, now: float, grace: float, why: str) -> None:
        """The broker restarted; the client was connected when it stopped, so its connection ended
        without DISCONNECT. The will is pending: published after ``max(grace, min(will delay, session
        expiry))`` unless the client reconnects first (any reconnect: the client has proved alive)."""
        will = session.will
        if will is None:
            return
        delay = will_delay_of(will)
        expiry = session.expiry_interval
        wait = max(grace, delay if expiry == NEVER else min(delay, expiry))
        session.will_cause = why
        session.will_recovered = True
        session.will_fire_at = now + wait
        self.timers.schedule(("will", session.client_id), session.will_fire_at)
        self.record(session)
        self.timeline.record(session.client_id, now, "connection-ended", why, "MQTT-3.1.2-8")
        self.timeline.record(session.client_id, now, "deferred",
                             f"until +{wait:g}s (recovery grace {grace:g}s, will delay {delay}s)",
                             "MQTT-3.1.3-9", fire_at=session.will_fire_at)
        log.info("will client_id=%s recovered after restart (%s): published in %gs unless the client "
                 "reconnects", session.client_id, why, wait)

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
        self.fire(session, now, "will delay elapsed", "MQTT-3.1.3-9")

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
        props = {k: v for k, v in will.properties.items()
                 if k not in ("will_delay_interval", "message_expiry_interval")}  # never forwarded
        mei = will.properties.get("message_expiry_interval")
        message = Message(
            topic=will.topic, payload=will.payload, qos=will.qos,
            retain=will.retain,  # [MQTT-3.1.2-14] [MQTT-3.1.2-15]
            properties=props, origin=session.client_id,
            expiry_at=(now + mei) if mei is not None else None,  # counts from publication
            is_will=True,
        )
        receivers = self.publish(message, now)
        self.published += 1
        self.timeline.record(session.client_id, now, "published",
                             f"{why}; delivered to {receivers} subscriber(s)", rule,
                             receivers=receivers, cause=session.will_cause or why)
        log.info("will client_id=%s published to %s: %s; %d receiver(s) [%s]",
                 session.client_id, will.topic, why, receivers, rule)
