"""CONNECT: validate, authenticate, take over, negotiate, reply (3.1, 3.2; MQTT 3.1.1 3.1, 3.2).

Nothing of a CONNECT is stored before it is accepted, so the will of a refused CONNECT is never
published [MQTT-3.1.2-7]; a refusal is a CONNACK with the reason code (or, in 3.1.1 where no return
code fits, a close) and a line on the client's will timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..codec.packets import PROTOCOL_5, Connack, Connect, Disconnect, Will
from ..codec.reason_codes import ReasonCode
from ..config import MAX_PACKET_LIMIT, Config
from ..errors import MqttError
from ..logs import fast_logger
from .access import Access, AuthOutcome
from .actions import ClaimSession
from .announce import Announcer, is_sys_topic
from .causes import Cause, ConnectionEnded
from .cluster import LOCAL_CLAIM, Claim, ClusterSessions, Unreachable, when_unreachable
from .connection import Connections
from .delivery import Deliverer
from .fit import fit, size
from .limits import Limits
from .outbox import Outbox
from .ownership import SessionOwnership
from .sessions import AUTHENTICATING, CLOSED, CONNECTED, NEVER, NEW, Conn, Session
from .topics import TopicError, validate_topic_name
from .will import WillKeeper, describe

log = fast_logger("lastwill")

_TAKEN_OVER = ConnectionEnded(Cause.TAKEOVER, "session taken over by a new connection", "MQTT-3.1.4-3")

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_ACCEPTED = AuthOutcome.ACCEPTED
_BAD_AUTHENTICATION_METHOD = ReasonCode.BAD_AUTHENTICATION_METHOD
_BAD_USER_NAME_OR_PASSWORD = ReasonCode.BAD_USER_NAME_OR_PASSWORD
_CLIENT_IDENTIFIER_NOT_VALID = ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED
_QOS_NOT_SUPPORTED = ReasonCode.QOS_NOT_SUPPORTED
_REFUSED = AuthOutcome.REFUSED
_RETAIN_NOT_SUPPORTED = ReasonCode.RETAIN_NOT_SUPPORTED
_SESSION_TAKEN_OVER = ReasonCode.SESSION_TAKEN_OVER
_SERVER_UNAVAILABLE = ReasonCode.SERVER_UNAVAILABLE
_SUCCESS = ReasonCode.SUCCESS
_PACKET_TOO_LARGE = ReasonCode.PACKET_TOO_LARGE
_QUOTA_EXCEEDED = ReasonCode.QUOTA_EXCEEDED
_SERVER_BUSY = ReasonCode.SERVER_BUSY
_TOPIC_NAME_INVALID = ReasonCode.TOPIC_NAME_INVALID


class Refused(Exception):
    """A CONNECT is refused: CONNACK ``reason_code`` (None: close without CONNACK, for what MQTT 3.1.1
    has no return code for), ``why`` for the log and the timeline, and the rule."""

    def __init__(self, reason_code: int | None, why: str, rule: str | None = None, logged: bool = False):
        super().__init__(why)
        self.reason_code = reason_code
        self.why = why
        self.rule = rule
        self.logged = logged  # a global bound's refusal: logged (once per interval) by core/limits.py


@dataclass(slots=True)
class Grant:
    """What the server grants a CONNECT (MQTT 5 may lower what the client asked for)."""

    requested_expiry: int
    expiry: int
    keep_alive: int
    server_keep_alive: int | None


class ConnectHandler:
    __slots__ = ("config", "outbox", "connections", "sessions", "wills", "access", "limits", "announce",
                 "deliverer", "stats", "new_client_id", "cluster")

    def __init__(self, config: Config, outbox: Outbox, connections: Connections, sessions: SessionOwnership,
                 wills: WillKeeper, access: Access, limits: Limits, announce: Announcer, deliverer: Deliverer,
                 stats: dict[str, int], new_client_id: Callable[[], str]) -> None:
        self.config = config
        self.outbox = outbox
        self.connections = connections
        self.sessions = sessions
        self.wills = wills
        self.access = access
        self.limits = limits
        self.announce = announce
        self.deliverer = deliverer
        self.stats = stats
        self.new_client_id = new_client_id
        self.cluster: ClusterSessions | None = None  # cluster mode: the engine's claim comes before CONNACK

    def on_connect(self, conn: Conn, p: Connect, now: float) -> None:
        try:
            assigned = self._validate(conn, p, now)
            if not self._authenticate(conn, p):
                return  # waiting for the password check: authenticated() comes back here
            if p.will is not None and self.access.acl is not None:
                self._authorize_will(conn, p)
            grant = self._grant(conn, p)
            ack_props = self._accepting_connack(conn, p, grant, assigned)
            self._admit(conn, p, grant, now)
        except Refused as r:
            self._refuse(conn, r, p.will, now)
            return
        if self.cluster is not None and not conn.claimed:
            self._claim(conn, p, grant)
            return  # waiting for the engine: claimed() comes back here
        # -- accepted from here on
        self._take_over(conn, now)
        session, session_present = self._open_session(conn, p, grant, now)
        self._reply(conn, p, session_present, grant, ack_props)
        self.connections.accepted(conn, now)  # no connect timeout; keep-alive from now on
        if self.cluster is not None:
            self.cluster.connected(session, now)
        if session_present:
            self.deliverer.resend_inflight(conn, session)
            self.deliverer.pump(session, now)
        self.announce.connected(conn, session, p, now)  # presence online, $SYS connected

    # -- the steps ---------------------------------------------------------------------------------
    def _validate(self, conn: Conn, p: Connect, now: float) -> str | None:
        """The CONNECT's own fields. Returns the client identifier the server assigned, if it did."""
        v5 = p.protocol_level == PROTOCOL_5
        conn.protocol_level = p.protocol_level
        if not conn.claimed:  # (a claimed CONNECT keeps the identifier it was claimed with)
            conn.client_id = p.client_id
        if conn.decoder.protocol_level is None:  # a CONNECT handed in already decoded
            conn.decoder.protocol_level = p.protocol_level
        if v5:
            props = p.properties
            conn.request_problem_information = props.get("request_problem_information", 1) == 1
            conn.maximum_packet_size = props.get("maximum_packet_size")  # known before any refusal [MQTT-3.2.2-19]
            if "authentication_method" in props:
                # enhanced authentication is not offered: refuse the method [MQTT-4.12.0-1]
                raise Refused(_BAD_AUTHENTICATION_METHOD, "authentication method not supported",
                              "MQTT-4.12.0-1")
        if p.client_id:
            assigned = None
        elif conn.claimed:
            assigned = conn.client_id if v5 else None
        else:
            assigned = self._client_id(conn, p)
        if p.will is not None:
            self._validate_will(conn.client_id, p.will, v5, now)  # before anything is stored [MQTT-3.1.2-7]
        return assigned

    def _client_id(self, conn: Conn, p: Connect) -> str | None:
        """An empty client identifier: one is assigned, or the CONNECT refused."""
        if p.protocol_level == PROTOCOL_5:
            conn.client_id = self.new_client_id()  # [MQTT-3.2.2-16] returned in CONNACK
            return conn.client_id
        if p.clean_start and p.protocol_level == 4:
            conn.client_id = self.new_client_id()  # [MQTT-3.1.3-6] [MQTT-3.1.3-7]
            return None
        # [MQTT-3.1.3-8] empty id with Clean Session 0: CONNACK 0x02, then close
        raise Refused(_CLIENT_IDENTIFIER_NOT_VALID, "empty client id needs clean session 1", "MQTT-3.1.3-8")

    def _validate_will(self, client_id: str, will: Will, v5: bool, now: float) -> None:
        try:
            validate_topic_name(will.topic)
            over = self.limits.topic_over_limit(will.topic)
            if over is not None:  # max_topic_length, max_topic_levels: refused like an invalid topic
                self.limits.hit(over[0], client_id, now, "client_id=%s will topic refused: %s", client_id, over[1])
                raise TopicError(over[1])
        except TopicError as e:
            # 3.1.1 has no return code for it: close without CONNACK
            raise Refused(_TOPIC_NAME_INVALID if v5 else None, f"will topic: {e}", e.rule) from None
        if will.qos > self.config.maximum_qos:
            # [MQTT-3.2.2-12] a will QoS above the server's maximum: CONNACK 0x9B
            # (3.1.1 has no return code for it: close without CONNACK [MQTT-3.2.2-6])
            why = f"will QoS {will.qos} > maximum {self.config.maximum_qos}"
            raise Refused(_QOS_NOT_SUPPORTED, why, "MQTT-3.2.2-12") if v5 else \
                Refused(None, why, "MQTT-3.2.2-6")
        if will.retain and not self.config.retain_available:
            # [MQTT-3.2.2-13] will retain without retain support: CONNACK 0x9A (3.1.1: close [MQTT-3.2.2-6])
            raise Refused(_RETAIN_NOT_SUPPORTED, "will retain not supported", "MQTT-3.2.2-13") if v5 \
                else Refused(None, "will retain not supported", "MQTT-3.2.2-6")
        if is_sys_topic(will.topic):
            # $SYS is the broker's: a will there could forge its events (README "$SYS events").
            # CONNACK 0x87 Not authorized (3.1.1: return code 5)
            raise Refused(_NOT_AUTHORIZED, f"will topic {will.topic!r}: $SYS topics are the broker's")

    def _authenticate(self, conn: Conn, p: Connect) -> bool:
        """Who the client is (password_file). False: parked until the edge has checked the password."""
        result = self.access.authenticate(conn, p)
        if result.outcome is _ACCEPTED:
            return True
        if result.outcome is _REFUSED:
            self.stats["auth_refused"] += 1
            raise Refused(result.reason_code, result.why, self._auth_rule(p))
        conn.state = AUTHENTICATING
        conn.held = [p]
        self.outbox.authenticate(conn.conn_id, p.username, p.password)
        return False

    @staticmethod
    def _auth_rule(p: Connect) -> str:
        return "MQTT-3.1.4-2" if p.protocol_level == PROTOCOL_5 else "MQTT-3.2.2-5"

    def _authorize_will(self, conn: Conn, p: Connect) -> None:
        will = p.will
        if not self.access.may_publish(conn.username, conn.client_id, will.topic):
            # a will its client may not publish is refused with the CONNECT: CONNACK 0x87 Not authorized
            # (3.1.1: return code 5), rather than accepted and dropped when the client dies
            self.stats["auth_refused"] += 1
            raise Refused(_NOT_AUTHORIZED, f"not authorized to publish the will on {will.topic!r} "
                                                     f"(acl_file, user {conn.username!r})", self._auth_rule(p))

    def _grant(self, conn: Conn, p: Connect) -> Grant:
        """Session expiry and keep-alive as granted; what the client said it can take."""
        cfg = self.config
        v5 = p.protocol_level == PROTOCOL_5
        if v5:
            requested_expiry = p.properties.get("session_expiry_interval", 0)
        else:
            requested_expiry = 0 if p.clean_start else NEVER
        keep_alive = p.keep_alive
        server_keep_alive = None
        if v5 and (keep_alive > cfg.max_keep_alive or (keep_alive == 0 and not cfg.allow_zero_keep_alive)):
            keep_alive = server_keep_alive = cfg.max_keep_alive  # [MQTT-3.2.2-21] the client must use it
        grant = Grant(requested_expiry, min(requested_expiry, cfg.max_session_expiry), keep_alive, server_keep_alive)
        conn.keep_alive = keep_alive
        conn.connect_expiry_interval = grant.expiry
        if v5:
            conn.receive_maximum = p.properties.get("receive_maximum", 65535)
            conn.topic_alias_maximum = p.properties.get("topic_alias_maximum", 0) if cfg.outbound_topic_aliases else 0
        return grant

    def _admit(self, conn: Conn, p: Connect, grant: Grant, now: float) -> None:
        """The global bounds (core/limits.py): a CONNECT that would make one session, one offline session
        or one stored will too many, or store a retained will beyond the retained bounds, is refused with
        CONNACK 0x97 Quota exceeded (3.1.1: return code 3, Server unavailable); nothing of it is stored.
        With offline_session_overflow = "expire_oldest" the oldest offline session makes room instead.
        The last step before acceptance: once it passes, the CONNECT is accepted (and its will, from
        then on, is never refused)."""
        limits = self.limits
        bounds = limits.bounds
        sessions = self.sessions
        existing = sessions.get(conn.client_id)
        evict = self.config.offline_session_overflow == "expire_oldest"
        if existing is None and len(sessions) >= bounds.sessions:
            if not (evict and sessions.end_oldest_offline(now, "max_sessions")):
                self._quota(conn, "max_sessions", f"the broker holds {len(sessions)} sessions (max_sessions "
                                                  f"{bounds.sessions})", now)
        if grant.expiry and (existing is None or existing.expiry_interval == 0) and \
                len(sessions.offline) >= bounds.offline_sessions:
            # a new persistent session could outlive its connection: not beyond max_offline_sessions
            if not (evict and sessions.end_oldest_offline(now, "max_offline_sessions")):
                self._quota(conn, "max_offline_sessions", f"the broker keeps {len(sessions.offline)} offline "
                                                          f"sessions (max_offline_sessions {bounds.offline_sessions})",
                            now)
        will = p.will
        if will is not None:
            had = existing is not None and existing.will is not None
            if not had and self.wills.stored >= bounds.wills:
                self._quota(conn, "max_wills", f"the broker stores {self.wills.stored} wills (max_wills "
                                               f"{bounds.wills})", now)
            if will.retain and will.payload:
                why = limits.retained_over(will.topic, len(will.payload) + len(will.topic))
                if why is not None:
                    # its publication could not be refused later: refused now, with the CONNECT
                    self._quota(conn, why[0], f"its will would be retained: {why[1]}", now)

    def _quota(self, conn: Conn, limit: str, why: str, now: float) -> None:
        self.limits.refused(limit, now, "connect refused client_id=%s from %s: 0x97 quota exceeded: %s",
                            conn.client_id, conn.peer, why)
        raise Refused(_QUOTA_EXCEEDED, f"{limit}: {why}", logged=True)

    def _take_over(self, conn: Conn, now: float) -> None:
        """An existing connection with this client id is taken over [MQTT-3.1.4-3]."""
        session = self.sessions.get(conn.client_id)
        if session is None or session.conn is None:
            return
        old = session.conn
        if old.protocol_level == PROTOCOL_5:
            self.outbox.send(old, Disconnect(_SESSION_TAKEN_OVER))  # [MQTT-3.1.4-3] 0x8E
        log.info("client_id=%s taken over by a new connection from %s", conn.client_id, conn.peer)
        self.connections.end(old, now, _TAKEN_OVER)

    def _open_session(self, conn: Conn, p: Connect, grant: Grant, now: float) -> tuple[Session, bool]:
        """The session this connection takes up: resumed, or new. Returns it and Session Present."""
        client_id = conn.client_id
        session = self.sessions.get(client_id)  # (it may have ended with a taken-over connection)
        if session is not None and session.username != conn.username and not session.username_unknown and \
                (self.access.acl is not None or self.access.passwords):
            # a session is not handed to another user (its subscriptions, queued messages, will):
            # it ends as with Clean Start 1, its pending will published now (docs/security.md)
            log.info("client_id=%s: the session of user %r is not resumed by user %r; it ends",
                     client_id, session.username, conn.username)
            self.sessions.end(session, now, f"session of user {session.username!r} ended by a CONNECT of "
                                            f"user {conn.username!r} with the same client id", "MQTT-3.1.2-4")
            session = None
        if session is not None and session.will is not None and session.will.recovered:
            # its connection was ended by the broker stopping, not by the client: any reconnect
            # within the recovery grace period proves it alive and cancels the recovered will
            self.wills.resume(session, now)
        if session is not None and p.clean_start:
            # [MQTT-3.1.2-4] Clean Start 1 discards the existing session; its pending will fires now
            self.sessions.end(session, now, "session ended by a new connection with Clean Start 1", "MQTT-3.1.2-4")
            session = None
        session_present = session is not None  # [MQTT-3.2.2-3] the server has this session
        if session is None:
            session = self.sessions.create(client_id)
        else:
            self.sessions.resumed(session)
            self.wills.resume(session, now)  # [MQTT-3.1.3-9] reconnected before the will fired
        session.expiry_interval = grant.expiry
        if session.backlog is not None and not grant.expiry:
            # resumed, but it leaves the store (Session Expiry 0): what its queue left there, read now
            self.deliverer.page_all(session)
        session.username = conn.username  # stored with the session: its will is checked against it
        session.username_unknown = False
        session.conn = conn
        session.disconnected_at = None
        conn.session = session
        conn.state = CONNECTED
        conn.connected_at = now
        conn.publish_tokens, conn.publish_tokens_at = max(self.config.max_publish_rate, 1.0), now  # a full bucket
        self.stats["connects"] += 1
        self.wills.arm(session, p.will, now)  # records the session: durable before CONNACK
        return session, session_present

    def _accepting_connack(self, conn: Conn, p: Connect, grant: Grant, assigned: str | None) -> dict:
        """The properties of the CONNACK that accepts the CONNECT. It must fit in the client's Maximum
        Packet Size [MQTT-3.1.2-24]: if it cannot, even without Reason String and User Properties, the
        CONNECT is refused before anything is stored (no will [MQTT-3.1.2-7]), with CONNACK 0x95 Packet
        too large if that one fits (Outbox.send), else with no CONNACK at all."""
        if p.protocol_level != PROTOCOL_5:
            return {}
        ack_props = self._connack_properties(grant, assigned)
        maximum = conn.maximum_packet_size
        if maximum is not None:
            accepting = Connack(_SUCCESS, False, ack_props)
            if fit(accepting, PROTOCOL_5, maximum) is None:
                raise Refused(_PACKET_TOO_LARGE, f"the CONNACK accepting it ({size(accepting, PROTOCOL_5)} bytes) "
                                                 f"exceeds the client's Maximum Packet Size {maximum}", "MQTT-3.1.2-24")
        return ack_props

    def _reply(self, conn: Conn, p: Connect, session_present: bool, grant: Grant, ack_props: dict) -> None:
        """CONNACK [MQTT-3.2.0-1] is the first packet the server sends."""
        self.outbox.send(conn, Connack(_SUCCESS, session_present, ack_props))
        log.info("connect client_id=%s from %s proto=%s clean_start=%d keep_alive=%s session_expiry=%s "
                 "session_present=%d will=%s", conn.client_id, conn.peer, p.protocol_level, p.clean_start,
                 grant.keep_alive, "never" if grant.expiry == NEVER else grant.expiry, session_present,
                 describe(p.will) if p.will else "none")

    def _connack_properties(self, grant: Grant, assigned: str | None) -> dict:
        cfg = self.config
        ack_props: dict = {}
        if assigned is not None:
            ack_props["assigned_client_identifier"] = assigned
        if grant.expiry != grant.requested_expiry:
            ack_props["session_expiry_interval"] = grant.expiry
        if grant.server_keep_alive is not None:
            ack_props["server_keep_alive"] = grant.server_keep_alive
        if cfg.receive_maximum != 65535:
            ack_props["receive_maximum"] = cfg.receive_maximum
        if cfg.maximum_qos < 2:
            ack_props["maximum_qos"] = cfg.maximum_qos
        if not cfg.retain_available:
            ack_props["retain_available"] = 0
        if cfg.max_packet_size < MAX_PACKET_LIMIT:  # absent: no limit beyond the protocol's (3.2.2.3.6)
            ack_props["maximum_packet_size"] = cfg.max_packet_size
        if cfg.topic_alias_maximum:
            ack_props["topic_alias_maximum"] = cfg.topic_alias_maximum
        if not cfg.wildcard_subscription_available:
            ack_props["wildcard_subscription_available"] = 0
        if not cfg.subscription_identifier_available:
            ack_props["subscription_identifier_available"] = 0
        if not cfg.shared_subscription_available:
            ack_props["shared_subscription_available"] = 0
        return ack_props

    # -- refusing -------------------------------------------------------------------------------------
    def _refuse(self, conn: Conn, r: Refused, will: Will | None, now: float) -> None:
        """CONNACK with the reason (or, without one, a bare close), close; nothing stored, nothing published."""
        if r.reason_code is None:  # 3.1.1: no return code for it
            log.info("connect refused client_id=%s: %s [%s]", conn.client_id, r.why, r.rule)
            self.wills.refused(conn.client_id, now, r.why, r.rule)
            self.connections.close(conn, f"CONNECT refused: {r.why}")
            return
        props = self.outbox.reason(conn, r.why) if conn.protocol_level == PROTOCOL_5 else {}
        self.outbox.send(conn, Connack(r.reason_code, properties=props))
        if not r.logged:
            log.info("connect refused client_id=%s from %s: 0x%02X %s%s", conn.client_id or "<empty>",
                     conn.peer, r.reason_code, r.why, f" [{r.rule}]" if r.rule else "")
        self.wills.refused(conn.client_id, conn.last_activity, f"0x{r.reason_code:02X} {r.why}", r.rule, will)
        self.connections.close(conn, f"CONNECT refused: {r.why}")

    # -- cluster mode: the session is the engine's -----------------------------------------------------
    def _claim(self, conn: Conn, p: Connect, grant: Grant) -> None:
        """Park the CONNECT (as for a password check) while the engine gives it the session."""
        conn.state = AUTHENTICATING
        conn.held = [p]
        self.outbox.actions.append(ClaimSession(
            conn.conn_id, conn.client_id, p.clean_start, grant.expiry, p.will, conn.username,
            self.access.acl is not None or bool(self.access.passwords), p.protocol_level))

    def claimed(self, conn_id: int, claim: Claim | None, now: float) -> bool:
        """The engine's answer to ``ClaimSession``: the CONNECT goes on with it. None: the engine could not
        be reached; a CONNECT with a will or a session that outlives it is refused with CONNACK 0x88 Server
        unavailable (3.1.1: return code 3), nothing stored; one with nothing to keep (Clean Start 1, no
        will, Session Expiry 0) is accepted and served by this node alone until the edge claims it
        (``when_unreachable``). False: the connection was gone meanwhile (the claim must be given back)."""
        conn = self.connections.conns.get(conn_id)
        if conn is None or conn.state != AUTHENTICATING:
            return False
        connect, *held = conn.held
        conn.held = None
        conn.state = NEW
        if claim is None:
            if when_unreachable(connect.clean_start, connect.will is not None,
                                conn.connect_expiry_interval) is Unreachable.REFUSED:
                self._refuse(conn, Refused(_SERVER_UNAVAILABLE, "the cluster's engine (Redis) cannot be reached "
                                           "to keep its will or session safe"), connect.will, now)
                return True
            claim = LOCAL_CLAIM  # nothing of it outlives the connection: served here, claimed later
        self.cluster.claims[conn.client_id] = claim
        for why in claim.cancelled:  # pending wills of its earlier connections, discarded [MQTT-3.1.3-9]
            self.wills.cancelled_in_cluster(conn.client_id, now, why)
        conn.claimed = True
        self._go_on(conn, (connect, *held), now)
        return True

    # -- the password check's answer --------------------------------------------------------------------
    def authenticated(self, conn_id: int, ok: bool, now: float, throttled: str | None = None) -> None:
        """The edge's answer to ``Authenticate``: the CONNECT goes on, or is refused with CONNACK 0x86
        (3.1.1: return code 4), the same answer whether the user is unknown or the password wrong.
        ``throttled`` (why; core/throttle.py): no password check was run, its address or user name is
        throttled after failed ones: CONNACK 0x89 Server busy (3.1.1: return code 3)."""
        conn = self.connections.conns.get(conn_id)
        if conn is None or conn.state != AUTHENTICATING:
            return  # closed meanwhile
        connect, *held = conn.held
        conn.held = None
        conn.state = NEW
        if throttled is not None:
            self.stats["auth_refused"] += 1
            self.limits.refused("login_throttled", now, "connect refused client_id=%s from %s: 0x89 server busy: %s",
                                conn.client_id, conn.peer, throttled)
            self._refuse(conn, Refused(_SERVER_BUSY, f"login throttled: {throttled}", logged=True), connect.will, now)
            return
        if not ok:
            self.stats["auth_refused"] += 1
            # [MQTT-3.1.4-2] (3.1.1: [MQTT-3.2.2-5]): CONNACK 0x86 Bad User Name or Password, then close
            self._refuse(conn, Refused(_BAD_USER_NAME_OR_PASSWORD,
                                       f"bad user name or password (user {connect.username!r})",
                                       self._auth_rule(connect)), connect.will, now)
            return
        conn.auth_done = True
        self._go_on(conn, (connect, *held), now)

    def _go_on(self, conn: Conn, items: tuple, now: float) -> None:
        """Handle the parked CONNECT and what arrived after it."""
        for item in items:  # in the order they arrived
            if conn.state == CLOSED:
                break
            if isinstance(item, MqttError):
                self.connections.protocol_error(conn, item, now)
                break
            try:
                self.connections.dispatch(conn, item, now)
            except MqttError as err:
                self.connections.protocol_error(conn, err, now)
