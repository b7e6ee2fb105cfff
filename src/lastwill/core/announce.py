"""What the broker itself publishes about its clients: ``$SYS`` events and presence.

* ``$SYS/brokers/<node_name>/clients/<client id>/connected`` and ``.../disconnected`` (``sys_events``):
  EMQX's topics and JSON fields (``emqx_sys.erl``: clientid, username, ipaddress, sockport, protocol,
  proto_name, proto_ver, connected_at, ts; keepalive, clean_start, expiry_interval when connected;
  reason, disconnected_at when disconnected), plus lastwill's ``will``: what the will rule decided when
  the connection ended (``published``, ``deferred`` with ``fire_at``, ``cancelled``, ``none``) and the
  rule. QoS 0, not retained, from the broker (origin None); ``#`` and ``+`` never match them
  [MQTT-4.7.2-1]. The JSON is built only when some subscription lies under ``$SYS``.
* ``presence_topic`` (e.g. ``presence/{client_id}``): a retained QoS 1 ``online`` at CONNECT and
  ``offline`` when the connection ends, whatever the will delay: presence says whether the client
  is connected, the will says what the client wanted said.
* After a restart, a client that was connected (or whose presence the store still says ``online``)
  is *recovering* until the recovery grace period ends: reconnecting ends that, with a
  ``disconnected`` event for the connection the restart ended (its will ``cancelled``) just before the
  ``connected`` one; otherwise, at its end, presence turns ``offline`` (its recovered will, due then too
  unless its Will Delay is longer, follows at once) and a ``disconnected`` event with reason
  ``broker_crash`` / ``broker_restart`` goes out, when subscribers have had time to come back.

Times in the payloads are wall-clock milliseconds, ``now + core.wall_offset``: the edge sets the
offset, the core reads no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from ..codec.packets import Connect
from ..config import Config
from ..logs import fast_logger
from .causes import Cause, ConnectionEnded
from .message import Message
from .sessions import Conn, Session
from .timers import TimerKind, TimerQueue
from .topics import TopicError, validate_topic_name
from .will import WillDecision, WillKeeper, WillOutcome

log = fast_logger("lastwill")

ONLINE, OFFLINE = b"online", b"offline"

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_RECOVERED = TimerKind.RECOVERED.value


def is_sys_topic(topic: str) -> bool:
    """``$SYS`` or under it: the broker's own topics; clients do not publish there."""
    return topic == "$SYS" or topic.startswith("$SYS/")


_CANCELLED = WillDecision(WillOutcome.CANCELLED, None, "MQTT-3.1.3-9")
_PUBLISHED = WillDecision(WillOutcome.PUBLISHED, None, "MQTT-3.1.2-8")


class Announcer:
    """``publish(message, now)``: the router; ``wanted(first_level)``: whether any subscription lies
    under a first topic level; ``sessions(client_id)``: the session, if any."""

    def __init__(self, config: Config, timers: TimerQueue, wills: WillKeeper,
                 publish: Callable[[Message, float], int], wanted: Callable[[str], bool],
                 sessions: Callable[[str], Session | None]):
        cfg = config
        self.timers = timers
        self.wills = wills
        self.publish = publish
        self.wanted = wanted
        self.sessions = sessions
        # wall-clock seconds = monotonic now + wall_offset: the edge sets it (the core reads no clock)
        self.wall_offset = 0.0
        self.sys_events = cfg.sys_events
        # a cluster's nodes share a host (and so a default node_name): its events name the cluster node id
        self.node = cfg.cluster_node_id if cfg.cluster else cfg.node_name
        self.presence_topic = cfg.presence_topic
        self._p_prefix, _, self._p_suffix = cfg.presence_topic.partition("{client_id}")
        # presence_offline_expiry: an "offline" message expires (Message Expiry, and out of the retained store)
        self.offline_expiry = cfg.presence_offline_expiry
        # client id -> (restored at, why, had a will) while its recovery grace period runs
        self.recovering: dict[str, tuple[float, Cause, bool]] = {}
        self.changes = None  # core/changes.py ChangeFeed: told of connects and disconnects while someone watches
        timers.register(TimerKind.RECOVERED, self.recovery_ended)

    def wall_ms(self, mono: float) -> int:
        return int(round((mono + self.wall_offset) * 1000))

    # -- connections ---------------------------------------------------------------------------
    def connected(self, conn: Conn, session: Session, p: Connect, now: float) -> None:
        """CONNECT accepted (called after the CONNACK and whatever the resumed session re-sent)."""
        client_id = session.client_id
        entry = self.recovering.pop(client_id, None) if self.recovering else None
        if entry is not None:
            self.timers.cancel((_RECOVERED, client_id))
            # the connection the restart ended, announced before the new one: its recovered will,
            # if it had one, was cancelled by this reconnect [MQTT-3.1.3-9]
            restored_at, reason, had_will = entry
            self._recovered_disconnected(client_id, restored_at, reason,
                                         _CANCELLED if had_will else None, now)
        conn.username = conn.cert_username if conn.cert_username is not None else p.username
        changes = self.changes
        if changes is not None and changes.changed is not None:  # a dashboard watches
            changes.changed.setdefault(client_id, None)
        if self.presence_topic:
            self._presence(client_id, ONLINE, now)
        if self.sys_events and self._sys_wanted():
            payload = self._common(conn, client_id, now)
            payload.update(keepalive=conn.keep_alive, clean_start=bool(p.clean_start),
                           expiry_interval=session.expiry_interval)
            self._sys(client_id, "connected", payload, now)

    def offline(self, client_id: str, now: float) -> None:
        """The connection ended (before the will decision, so that presence goes first)."""
        if self.presence_topic:
            self._presence(client_id, OFFLINE, now)

    def disconnected(self, conn: Conn, session: Session, now: float, ended: ConnectionEnded,
                     decision: WillDecision | None) -> None:
        """The connection ended and the will rule has decided: the $SYS disconnected event."""
        changes = self.changes
        if changes is not None and changes.changed is not None:  # a dashboard watches: how it ended
            changes.changed[session.client_id] = ended
        if self.sys_events and self._sys_wanted():
            payload = self._common(conn, session.client_id, now)
            payload.update(reason=ended.emqx_reason(), disconnected_at=self.wall_ms(now),
                           will=self._will(decision))
            self._sys(session.client_id, "disconnected", payload, now)

    # -- after a restart -------------------------------------------------------------------------
    def recovering_client(self, client_id: str, now: float, grace: float, crashed: bool) -> None:
        """Restore: the client was connected when the broker stopped (called before its will is
        recovered, so that at the same deadline presence goes first)."""
        if not (self.presence_topic or self.sys_events):
            return
        self.recovering[client_id] = (now, Cause.BROKER_CRASH if crashed else Cause.BROKER_RESTART, False)
        self.timers.schedule((_RECOVERED, client_id), now + grace)

    def restored(self, now: float, grace: float, crashed: bool, retained: Iterable[tuple[str, Message]]) -> None:
        """End of restore: presence the store still says ``online`` (the broker stopped before it
        could say otherwise, maybe during an earlier grace period) recovers too; note who had a will.
        ``retained``: the retained messages, by topic."""
        if self.presence_topic:
            prefix, suffix = self._p_prefix, self._p_suffix
            for topic, msg in list(retained):
                if msg.origin is None and msg.payload == ONLINE and topic.startswith(prefix) \
                        and topic.endswith(suffix) and len(topic) >= len(prefix) + len(suffix):
                    client_id = topic[len(prefix):len(topic) - len(suffix)]
                    if client_id not in self.recovering:
                        self.recovering_client(client_id, now, grace, crashed)
        for client_id, (at, reason, _) in self.recovering.items():
            session = self.sessions(client_id)
            self.recovering[client_id] = (at, reason, session is not None and session.will is not None)

    def recovery_ended(self, client_id: str, now: float) -> None:
        """The recovery grace period is over and the client did not reconnect: presence ``offline``,
        its recovered will if due, and the disconnected event."""
        entry = self.recovering.pop(client_id, None)
        if entry is None:
            return
        restored_at, reason, had_will = entry
        session = self.sessions(client_id)
        if session is not None and session.conn is not None:  # pragma: no cover - connected() cancels
            return
        log.info("client_id=%s did not reconnect within the recovery grace period%s", client_id,
                 ": presence offline" if self.presence_topic else "")
        self.offline(client_id, now)
        decision: WillDecision | None = None
        status = self.wills.status(session)
        if status.fire_at is not None:
            if status.fire_at <= now:
                self.wills.timer_fired(session, now)
                decision = _PUBLISHED
            else:  # a Will Delay longer than the grace period
                decision = WillDecision(WillOutcome.DEFERRED, status.fire_at, "MQTT-3.1.3-9")
        elif had_will:  # published already (its deadline, kept from before, came first)
            decision = _PUBLISHED
        self._recovered_disconnected(client_id, restored_at, reason, decision, now)

    def _recovered_disconnected(self, client_id: str, restored_at: float, reason: Cause,
                                decision: WillDecision | None, now: float) -> None:
        """The $SYS disconnected event of a connection that a crash or restart ended (what the
        broker knew of that connection did not survive: only the client id, the reason, the will)."""
        if self.sys_events and self._sys_wanted():
            payload = {"clientid": client_id, "username": None, "ipaddress": None, "sockport": None,
                       "protocol": "mqtt", "proto_name": None, "proto_ver": None, "connected_at": None,
                       "ts": self.wall_ms(now), "reason": reason, "disconnected_at": self.wall_ms(restored_at),
                       "will": self._will(decision)}
            self._sys(client_id, "disconnected", payload, now)

    # -- cluster: a will a survivor published --------------------------------------------------------
    def dead_node_will(self, client_id: str, user: str | None, dead_node: str, ended_ms: int | None,
                       due_ms: int, now: float) -> None:
        """Cluster: this node published the will of a client whose node died [MQTT-3.1.2-8]. No node saw
        that connection end, so the ``disconnected`` event comes from here (this node's id in the topic),
        as after a crash of a single broker: what is known of the connection is the client id, the user,
        the dead node (``node``), its lease end (``disconnected_at``) and the will, published."""
        if self.sys_events and self._sys_wanted():
            payload = {"clientid": client_id, "username": user, "ipaddress": None, "sockport": None,
                       "protocol": "mqtt", "proto_name": None, "proto_ver": None, "connected_at": None,
                       "ts": self.wall_ms(now), "reason": "node_died", "disconnected_at": ended_ms,
                       "node": dead_node, "will": {"decision": WillOutcome.PUBLISHED.value, "fire_at": due_ms,
                                                   "rule": "MQTT-3.1.2-8"}}
            self._sys(client_id, "disconnected", payload, now)

    # -- plumbing ----------------------------------------------------------------------------------
    def _sys_wanted(self) -> bool:
        return self.wanted("$SYS")  # nobody subscribed under $SYS: build nothing

    def _common(self, conn: Conn, client_id: str, now: float) -> dict:
        host = conn.peer.rpartition(":")[0] if ":" in conn.peer else conn.peer
        return {"clientid": client_id, "username": conn.username, "ipaddress": host or None,
                "sockport": conn.sockport or None, "protocol": "mqtt",
                "proto_name": "MQIsdp" if conn.protocol_level == 3 else "MQTT", "proto_ver": conn.protocol_level,
                "connected_at": self.wall_ms(conn.connected_at), "ts": self.wall_ms(now)}

    def _will(self, decision: WillDecision | None) -> dict:
        if decision is None:
            return {"decision": "none", "fire_at": None, "rule": None}
        fire_at = decision.fire_at
        return {"decision": decision.outcome.value, "fire_at": None if fire_at is None else self.wall_ms(fire_at),
                "rule": decision.rule}

    def _sys(self, client_id: str, event: str, payload: dict, now: float) -> None:
        topic = f"$SYS/brokers/{self.node}/clients/{client_id}/{event}"
        if self._valid(topic):
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            self.publish(Message(topic, data, 0, False), now)

    def _presence(self, client_id: str, state: bytes, now: float) -> None:
        topic = self._p_prefix + client_id + self._p_suffix
        if self._valid(topic):
            # retained: late subscribers see it. An "offline" one with presence_offline_expiry lapses: the
            # router forwards what is left of it as the Message Expiry Interval [MQTT-3.3.2-6] and removes
            # it from the retained messages when it expires [MQTT-3.3.2-5]
            expiry_at = now + self.offline_expiry if state is OFFLINE and self.offline_expiry else None
            self.publish(Message(topic, state, 1, True, expiry_at=expiry_at), now)

    @staticmethod
    def _valid(topic: str) -> bool:
        """A client id with '+', '#' or U+0000 makes no valid topic name: nothing is published for it."""
        try:
            validate_topic_name(topic)
        except TopicError as e:
            log.debug("not published on %r: %s", topic, e)
            return False
        return True
