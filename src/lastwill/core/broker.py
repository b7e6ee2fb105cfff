"""The broker's state machine. Pure: it never awaits, never touches a socket, never reads a clock.

The edge calls, each with the monotonic ``now``:

* ``open(conn_id, now, peer)`` when a network connection is accepted,
* ``data_received(conn_id, data, now)`` with the bytes read,
* ``connection_lost(conn_id, cause, now)`` when the socket closed under us,
* ``tick(now)`` when ``next_deadline()`` is reached,
* ``authenticated(conn_id, ok, now)`` with the answer to an ``Authenticate`` action (password_file),

and each call returns the list of actions (``Send``, ``Close``, ``Authenticate``) to carry out, in order.
``set_acl(acl)`` gives it the rules of acl_file (parsed by lastwill.auth; the core reads no file).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable

from ..auth import READ, WRITE, Acl
from ..codec.decoder import Decoder
from ..codec.encoder import encode
from ..codec.packets import (
    PROTOCOL_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from ..codec.reason_codes import DISCONNECT_CODES
from ..config import Config
from ..errors import MqttError, ProtocolError, UnsupportedProtocolVersion
from .actions import Action, Authenticate, Close, Send
from .announce import Announcer, is_sys_topic
from .message import Message
from .persistence import Recorder
from .persistence import restore as restore_state
from .retained import RetainedStore
from .sessions import (
    AUTHENTICATING,
    AWAIT_PUBACK,
    AWAIT_PUBCOMP,
    AWAIT_PUBREC,
    CLOSED,
    CONNECTED,
    EMPTY_MAP,
    NEVER,
    NEW,
    Conn,
    Delivery,
    InFlight,
    Session,
)
from .timeline import Timeline
from .timers import TimerQueue
from .topics import (
    SubOptions,
    SubscriptionTree,
    TopicError,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)
from .will import WillKeeper, describe

log = logging.getLogger("lastwill")

# reason codes used here (MQTT 5 numbering; the encoder maps them for 3.1.1)
RC_SUCCESS = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_PROTOCOL_ERROR = 0x82
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_NOT_AUTHORIZED = 0x87
RC_BAD_AUTH_METHOD = 0x8C
RC_BAD_USER_NAME_OR_PASSWORD = 0x86
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_PACKET_TOO_LARGE = 0x95
RC_QUOTA_EXCEEDED = 0x97
RC_SHARED_NOT_SUPPORTED = 0x9E
RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1
RC_WILDCARDS_NOT_SUPPORTED = 0xA2

_MAX_HELD = 1000  # packets kept while a CONNECT waits for its password check

_STRIP_ON_FORWARD = ("topic_alias", "subscription_identifier", "message_expiry_interval")


class _NoRecorder:
    """Stands in for the Recorder when nothing is persisted: every call is a no-op."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def session(self, session) -> None:
        pass

    def session_deleted(self, client_id) -> None:
        pass

    def delivery(self, session, d, packet_id=None, state=None) -> None:
        pass

    def delivery_done(self, session, d) -> None:
        pass

    def retained_changed(self, topic, message) -> None:
        pass


def _default_client_id() -> str:
    return "lastwill-" + secrets.token_hex(8)


class BrokerCore:
    def __init__(self, config: Config | None = None, *, client_id_factory: Callable[[], str] | None = None,
                 persist: bool = False):
        self.config = config or Config()
        # what changed since the last commit; a no-op recorder when nothing is persisted
        self.recorder = Recorder() if persist else _NoRecorder()
        self.conns: dict[int, Conn] = {}
        self.sessions: dict[str, Session] = {}
        self.tree = SubscriptionTree()
        self.retained = RetainedStore()
        self.timers = TimerQueue()
        self.timeline = Timeline(sink=self.recorder if persist else None)  # persisted with the rest
        self.wills = WillKeeper(self.timers, self.timeline, self._route, self.recorder.session)
        self.wills.cause_property = self.config.will_cause_property
        # authorization (docs/security.md): the rules of acl_file, set (and replaced on SIGHUP) by the
        # edge; None: everything is allowed. Wills are checked again when they are published
        self.acl: Acl | None = None
        self.wills.authorize = self._will_denied
        self._anonymous_allowed = self.config.anonymous_allowed()
        # wall-clock seconds = monotonic now + wall_offset: the edge sets it (the core reads no clock);
        # used for the times in the $SYS event payloads
        self.wall_offset = 0.0
        self.announce = Announcer(self)  # $SYS events and presence
        self._new_client_id = client_id_factory or _default_client_id
        self._out: list[Action] = []
        self._connect_will: Will | None = None  # the will of the CONNECT being handled (for _refuse)
        self._share_cursor: dict[str, int] = {}
        self._conn_ids = itertools.count(1)
        self.stats = {"messages_in": 0, "messages_out": 0, "dropped_queue_full": 0,
                      "dropped_too_large": 0, "dropped_expired": 0, "connects": 0, "dropped_queue_bytes": 0}
        # authentication and authorization: CONNECTs refused, PUBLISHes refused, deliveries not made (ACL)
        self.stats.update(auth_refused=0, publish_denied=0, dropped_not_authorized=0)
        # limits (docs/security.md "Limits"): how often each was enforced (the admin API's
        # lastwill_limit_hits_total), and the throttle of their log lines
        self.limit_hits: dict[str, int] = {}
        self._limit_log: dict = {}
        # max_connections as enforced: the edge lowers it below the process's descriptor limit
        self.max_connections = self.config.max_connections

    # ==== entry points (called by the edge) ====================================================
    def new_conn_id(self) -> int:
        return next(self._conn_ids)

    def open(self, conn_id: int, now: float, peer: str = "", sockport: int = 0,
             cert_username: str | None = None) -> list[Action]:
        # cert_username: the Common Name of the client's verified TLS certificate, when
        # tls_cert_cn_as_username is on (edge/tls.py); see Conn.cert_username
        limit = self.max_connections
        if limit and len(self.conns) >= limit:
            # max_connections counts every open network connection, those still to send CONNECT too;
            # one more is closed at once, before anything is read from it: the limit bounds
            # descriptors and memory, so an extra connection is not kept open to read its CONNECT
            self._limit_hit("max_connections", None, now, "connection from %s closed at accept: "
                            "max_connections (%d) reached", peer, limit)
            return [Close(conn_id, f"max_connections ({limit}) reached")]
        conn = Conn(conn_id=conn_id, peer=peer, last_activity=now, sockport=sockport,
                    decoder=Decoder(max_packet_size=self.config.max_packet_size), cert_username=cert_username)
        self.conns[conn_id] = conn
        self.timers.schedule(("connect", conn_id), now + self.config.connect_timeout)
        return []

    def data_received(self, conn_id: int, data: bytes, now: float) -> list[Action]:
        conn = self.conns.get(conn_id)
        if conn is None or conn.state == CLOSED:
            return []
        if conn.held and isinstance(conn.held[-1], MqttError):
            return []  # authenticating, and what came after the CONNECT already broke the protocol
        out = self._out
        try:
            packets = conn.decoder.feed(data)
            if packets:
                # only a whole Control Packet restarts the keep-alive, not a trickle of bytes
                conn.last_activity = now  # [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22])
        except MqttError as err:
            for packet in getattr(err, "packets", ()) or ():  # the whole packets before the bad one
                if conn.state == CLOSED:
                    break
                try:
                    self._dispatch(conn, packet, now)
                except MqttError as first:  # one of them broke the protocol first (found by fuzzing)
                    self._protocol_error(conn, first, now)
            if conn.state != CLOSED:
                self._protocol_error(conn, err, now)
            return self._take()
        for packet in packets:
            if conn.state == CLOSED:
                break
            try:
                self._dispatch(conn, packet, now)
            except MqttError as err:
                self._protocol_error(conn, err, now)
        return self._take() if out else []

    def handle(self, conn_id: int, packet, now: float) -> list[Action]:
        """Process one already-decoded packet (used by tests and by embedders)."""
        conn = self.conns[conn_id]
        conn.last_activity = now
        try:
            self._dispatch(conn, packet, now)
        except MqttError as err:
            self._protocol_error(conn, err, now)
        return self._take()

    def connection_lost(self, conn_id: int, cause: str, now: float) -> list[Action]:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return []
        if conn.state in (NEW, AUTHENTICATING):  # nothing of it was accepted: no will to publish
            conn.state = CLOSED
            conn.held = None
            self.timers.cancel(("connect", conn_id))
        elif conn.state == CONNECTED:
            # the network connection closed without DISCONNECT [MQTT-3.1.2-8] (3.1.1: [MQTT-3.1.2-8] too)
            self._end_connection(conn, now, f"connection lost: {cause}", None, send_close=False)
        return self._take()

    def tick(self, now: float) -> list[Action]:
        for key in self.timers.pop_due(now):
            kind, ident = key
            if kind == "ka":
                self._keep_alive_check(ident, now)
            elif kind == "will":
                self.wills.timer_fired(self.sessions.get(ident), now)
            elif kind == "session":
                self._session_expired(ident, now)
            elif kind == "connect":
                conn = self.conns.get(ident)
                if conn is not None and conn.state == NEW:
                    self.limit_hits["connect_timeout"] = self.limit_hits.get("connect_timeout", 0) + 1
                    log.info("connection %s from %s closed: no CONNECT within %ss",
                             ident, conn.peer, self.config.connect_timeout)
                    self._close(conn, "no CONNECT within connect_timeout")
                elif conn is not None and conn.state == AUTHENTICATING:
                    # the password check did not answer in time (the edge's threads are all busy):
                    # the client is told nothing it could learn from, the connection just closes
                    self.limit_hits["connect_timeout"] = self.limit_hits.get("connect_timeout", 0) + 1
                    log.warning("connection %s from %s closed: its password check took more than "
                                "connect_timeout (%ss)", ident, conn.peer, self.config.connect_timeout)
                    conn.held = None
                    self._close(conn, "password check not done within connect_timeout")
            elif kind == "retained":
                msg = self.retained.get(ident)
                if msg is not None and msg.expired(now):
                    self.retained.remove_if(ident, msg)
                    self.recorder.retained_changed(ident, None)
            elif kind == "recovered":  # the recovery grace period after a restart is over
                self.announce.recovery_ended(ident, now)
        return self._take()

    def writing_paused(self, conn_id: int) -> None:
        """The connection's socket buffer is above its high-water mark: stop writing to it."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            conn.paused = True

    def writing_resumed(self, conn_id: int, now: float) -> list[Action]:
        conn = self.conns.get(conn_id)
        if conn is not None and conn.paused:
            conn.paused = False
            if conn.session is not None and conn.state == CONNECTED:
                self._pump(conn.session, now)
        return self._take()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def take_batch(self, wall_offset: float):
        """What changed since the last call, as a storage Batch (None if nothing or not persisting)."""
        recorder = self.recorder
        if not recorder:
            return None
        return recorder.take_batch(wall_offset)

    def restore(self, state, now: float, wall_now: float, crashed: bool) -> list[Action]:
        """Load what the store holds (start-up only). Wills of clients connected when the broker
        stopped become pending, with the recovery grace period."""
        self.wall_offset = wall_now - now
        restore_state(self, state, now, wall_now, crashed)
        return self._take()

    def protocol_level(self, conn_id: int) -> int:
        conn = self.conns.get(conn_id)
        return conn.protocol_level if conn is not None else 4

    def shutdown(self, now: float, keep_wills: bool = False) -> list[Action]:
        """Close every connection (DISCONNECT 0x8B in MQTT 5).

        ``keep_wills`` (a persistent store, ``shutdown_wills = "keep"``): the sessions stay stored as
        connected, so that at the next start their wills are recovered as pending, with the grace
        period. Otherwise the wills follow the normal rules now; connections holding a will are
        closed first, so that subscribers still connected get them.
        """
        conns = sorted(self.conns.values(), key=lambda c: c.session is None or c.session.will is None)
        for conn in conns:
            if conn.state == CONNECTED:
                if conn.protocol_level == PROTOCOL_5:
                    self._send(conn, Disconnect(RC_SERVER_SHUTTING_DOWN))
                if keep_wills:
                    self.wills.kept_at_shutdown(conn.session, now)
                    self._close(conn, "server shutting down")
                    continue
                self._end_connection(conn, now, "server shutting down", None)
            elif conn.state in (NEW, AUTHENTICATING):
                self._close(conn, "server shutting down")
        return self._take()

    # ==== plumbing ============================================================================
    def _take(self) -> list[Action]:
        out = self._out
        self._out = []
        return out

    def _send(self, conn: Conn, packet) -> None:
        if conn.maximum_packet_size is not None and type(packet) is not Publish:
            props = getattr(packet, "properties", None)
            if props and ("reason_string" in props or "user_property" in props) and \
                    len(encode(packet, conn.protocol_level)) > conn.maximum_packet_size:
                # no Reason String / User Property that would take the packet beyond the client's
                # Maximum Packet Size [MQTT-3.1.2-24] [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.14.2-3]
                packet.properties = {k: v for k, v in props.items() if k not in ("reason_string", "user_property")}
        self._out.append(Send(conn.conn_id, packet))

    def _close(self, conn: Conn, reason: str) -> None:
        if conn.state != CLOSED:
            conn.state = CLOSED
            self.timers.cancel(("ka", conn.conn_id))
            self.timers.cancel(("connect", conn.conn_id))
        self._out.append(Close(conn.conn_id, reason))

    def _dispatch(self, conn: Conn, packet, now: float) -> None:
        if conn.state == AUTHENTICATING:
            # packets sent right after CONNECT (allowed: 3.1.4) wait for its password check, in order.
            # The edge stops reading meanwhile, so few arrive; a bound keeps an embedder safe too
            if len(conn.held) >= _MAX_HELD:
                log.warning("connection %s from %s closed: more than %d packets sent while its password "
                            "was being checked", conn.conn_id, conn.peer, _MAX_HELD)
                conn.held = None
                self._close(conn, "too many packets before the CONNECT was authenticated")
                return
            conn.held.append(packet)
            return
        if conn.state == NEW:
            if not isinstance(packet, Connect):
                # [MQTT-3.1.0-1] the first packet from the client must be CONNECT
                raise ProtocolError(f"first packet was {type(packet).__name__.upper()}, not CONNECT",
                                    rule="MQTT-3.1.0-1")
            self._on_connect(conn, packet, now)
            return
        handler = self._handlers.get(type(packet))
        if handler is None:
            raise ProtocolError(f"unexpected {type(packet).__name__.upper()} from a client")
        handler(self, conn, packet, now)

    def _protocol_error(self, conn: Conn, err: MqttError, now: float) -> None:
        if conn.state == AUTHENTICATING:  # after the CONNECT: handled in order, once it is accepted or not
            conn.held.append(err)
            return
        who = conn.client_id or f"<conn {conn.conn_id} from {conn.peer}>"
        log.warning("client_id=%s protocol error 0x%02X: %s", who, err.reason_code, err)
        if err.reason_code == RC_PACKET_TOO_LARGE:  # above max_packet_size (the decoder's check)
            self.limit_hits["max_packet_size"] = self.limit_hits.get("max_packet_size", 0) + 1
        if conn.state == NEW:
            # for an error inside a CONNECT, the decoder tells the level that CONNECT asked for
            level = getattr(err, "protocol_level", None) or getattr(conn.decoder, "protocol_level", None)
            if isinstance(err, UnsupportedProtocolVersion):
                # [MQTT-3.1.2-2] CONNACK 0x84 (3.1.1: return code 0x01), then close
                conn.protocol_level = level if level in (3, 4, 5) else 4
                self._send(conn, Connack(RC_UNSUPPORTED_PROTOCOL_VERSION))
            elif level == PROTOCOL_5:
                conn.protocol_level = PROTOCOL_5
                self._send(conn, Connack(err.reason_code, properties=self._reason(conn, str(err))))
            self._close(conn, f"protocol error before CONNACK: {err}")
            return
        if conn.state == CONNECTED:
            if conn.protocol_level == PROTOCOL_5 and getattr(err, "send_disconnect", True):
                # [MQTT-4.13.1-1] a Malformed Packet or Protocol Error: DISCONNECT with the reason, then close.
                # Only a DISCONNECT reason code [MQTT-3.14.2-1]: a second CONNECT with an unsupported
                # protocol level (0x84, a CONNACK code) is a Protocol Error here (found by fuzzing)
                code = err.reason_code if err.reason_code in DISCONNECT_CODES else RC_PROTOCOL_ERROR
                self._send(conn, Disconnect(code, properties=self._reason(conn, str(err))))
            self._end_connection(conn, now, f"protocol error 0x{err.reason_code:02X}: {err}", err.rule)

    def _reason(self, conn: Conn, text: str) -> dict:
        return {"reason_string": text[:200]} if conn.request_problem_information else {}

    # ==== limits (docs/security.md "Limits") =====================================================
    def _limit_hit(self, limit: str, client_id: str | None, now: float, fmt: str, *args) -> None:
        """Count one enforcement of ``limit`` and log it (WARNING). A limit hit again by the same client
        (or, for max_connections, by anyone) within a second is counted, not logged; the next line
        says how many were not."""
        hits = self.limit_hits
        hits[limit] = hits.get(limit, 0) + 1
        key = (limit, client_id)
        last = self._limit_log.get(key)
        if last is not None and now - last[0] < 1.0:
            last[1] += 1
            return
        if last is not None and last[1]:
            fmt += f" ({last[1]} more not logged)"
        if len(self._limit_log) > 10_000:
            self._limit_log.clear()
        self._limit_log[key] = [now, 0]
        log.warning(fmt, *args)

    def _topic_over_limit(self, topic: str, levels_of: str | None = None) -> tuple[str, str] | None:
        """(limit, why) if ``topic`` (a name or a filter) is above max_topic_length bytes or has more than
        max_topic_levels levels (counted in ``levels_of``: a shared subscription's inner filter)."""
        cfg = self.config
        if len(topic) * 4 > cfg.max_topic_length and len(topic.encode("utf-8")) > cfg.max_topic_length:
            return "max_topic_length", f"topic of {len(topic.encode('utf-8'))} bytes > max_topic_length {cfg.max_topic_length}"
        levels = (topic if levels_of is None else levels_of).count("/") + 1
        if levels > cfg.max_topic_levels:
            return "max_topic_levels", f"topic of {levels} levels > max_topic_levels {cfg.max_topic_levels}"
        return None

    def _publish_token(self, conn: Conn, now: float) -> bool:
        """max_publish_rate: take one token from the connection's bucket (refilled at the rate, holding
        at most one second's worth, at least 1). False if it is empty."""
        rate = self.config.max_publish_rate
        tokens = conn.publish_tokens + (now - conn.publish_tokens_at) * rate
        cap = rate if rate > 1.0 else 1.0
        if tokens > cap:
            tokens = cap
        conn.publish_tokens_at = now
        if tokens < 1.0:
            conn.publish_tokens = tokens
            return False
        conn.publish_tokens = tokens - 1.0
        return True

    def _refuse_publish(self, conn: Conn, p: Publish, code: int, limit: str, now: float, why: str) -> None:
        """A PUBLISH over a limit is neither routed nor retained. MQTT 5: PUBACK/PUBREC with ``code``
        (0x90 Topic Name invalid, 0x97 Quota exceeded), a QoS 0 one is dropped; the connection stays.
        MQTT 3.1.1 has no negative acknowledgement and an acknowledgement must not lie: the connection
        is closed, except that a QoS 0 PUBLISH over max_publish_rate is dropped (at most once)."""
        qos = p.qos
        if conn.protocol_level == PROTOCOL_5 or (qos == 0 and limit == "max_publish_rate"):
            if qos and conn.protocol_level == PROTOCOL_5:
                self._limit_hit(limit, conn.client_id, now, "client_id=%s PUBLISH to %r refused with 0x%02X: %s",
                                conn.client_id, p.topic[:200], code, why)
                self._send(conn, (Puback if qos == 1 else Pubrec)(p.packet_id, code, self._reason(conn, why)))
            else:
                self._limit_hit(limit, conn.client_id, now, "client_id=%s QoS 0 PUBLISH to %r dropped: %s",
                                conn.client_id, p.topic[:200], why)
            return
        self.limit_hits[limit] = self.limit_hits.get(limit, 0) + 1  # logged as the connection closes
        raise MqttError(f"PUBLISH to {p.topic[:200]!r}: {why}; MQTT 3.1.1 cannot refuse a PUBLISH", code)

    # ==== CONNECT =============================================================================
    def _refuse(self, conn: Conn, reason_code: int, why: str, rule: str | None = None) -> None:
        """Refuse a CONNECT: CONNACK with the reason, close; nothing stored, nothing published."""
        props = self._reason(conn, why) if conn.protocol_level == PROTOCOL_5 else {}
        self._send(conn, Connack(reason_code, properties=props))
        log.info("connect refused client_id=%s from %s: 0x%02X %s%s", conn.client_id or "<empty>",
                 conn.peer, reason_code, why, f" [{rule}]" if rule else "")
        will, self._connect_will = self._connect_will, None
        self.wills.refused(conn.client_id, conn.last_activity, f"0x{reason_code:02X} {why}", rule, will)
        self._close(conn, f"CONNECT refused: {why}")

    def _on_connect(self, conn: Conn, p: Connect, now: float) -> None:
        cfg = self.config
        self._connect_will = p.will  # described in the timeline if this CONNECT is refused
        v5 = p.protocol_level == PROTOCOL_5
        conn.protocol_level = p.protocol_level
        conn.client_id = p.client_id
        if conn.decoder.protocol_level is None:  # a CONNECT handed in already decoded
            conn.decoder.protocol_level = p.protocol_level
        props = p.properties
        if v5:
            conn.request_problem_information = props.get("request_problem_information", 1) == 1
            conn.maximum_packet_size = props.get("maximum_packet_size")  # known before any refusal [MQTT-3.2.2-19]
            if "authentication_method" in props:
                # enhanced authentication is not offered: refuse the method [MQTT-4.12.0-1]
                self._refuse(conn, RC_BAD_AUTH_METHOD, "authentication method not supported", "MQTT-4.12.0-1")
                return

        # -- the client identifier
        client_id = p.client_id
        assigned = None
        if not client_id:
            if v5:
                assigned = client_id = self._new_client_id()  # [MQTT-3.2.2-16] returned in CONNACK
            elif p.clean_start and p.protocol_level == 4:
                client_id = self._new_client_id()  # [MQTT-3.1.3-6] [MQTT-3.1.3-7]
            else:
                # [MQTT-3.1.3-8] empty id with Clean Session 0: CONNACK 0x02, then close
                self._refuse(conn, RC_CLIENT_ID_NOT_VALID, "empty client id needs clean session 1",
                             "MQTT-3.1.3-8")
                return
        conn.client_id = client_id

        # -- the will: checked before anything is stored [MQTT-3.1.2-7]
        will = p.will
        if will is not None:
            try:
                validate_topic_name(will.topic)
                over = self._topic_over_limit(will.topic)
                if over is not None:  # max_topic_length, max_topic_levels: refused like an invalid topic
                    self._limit_hit(over[0], client_id, now, "client_id=%s will topic refused: %s", client_id, over[1])
                    raise TopicError(over[1])
            except TopicError as e:
                if v5:
                    self._refuse(conn, RC_TOPIC_NAME_INVALID, f"will topic: {e}", e.rule)
                else:  # 3.1.1 has no return code for it: close without CONNACK
                    log.info("connect refused client_id=%s: will topic: %s [%s]", client_id, e, e.rule)
                    self.wills.refused(client_id, now, f"will topic: {e}", e.rule)
                    self._close(conn, f"will topic invalid: {e}")
                return
            if will.qos > cfg.maximum_qos:
                # [MQTT-3.2.2-12] a will QoS above the server's maximum: CONNACK 0x9B
                why = f"will QoS {will.qos} > maximum {cfg.maximum_qos}"
                if v5:
                    self._refuse(conn, RC_QOS_NOT_SUPPORTED, why, "MQTT-3.2.2-12")
                else:  # 3.1.1 has no return code for it: close without CONNACK [MQTT-3.2.2-6]
                    log.info("connect refused client_id=%s: %s [MQTT-3.2.2-6]", client_id, why)
                    self.wills.refused(client_id, now, why, "MQTT-3.2.2-6")
                    self._close(conn, f"CONNECT refused: {why}")
                return
            if will.retain and not cfg.retain_available:
                # [MQTT-3.2.2-13] will retain without retain support: CONNACK 0x9A
                if v5:
                    self._refuse(conn, RC_RETAIN_NOT_SUPPORTED, "will retain not supported", "MQTT-3.2.2-13")
                else:  # 3.1.1 has no return code for it: close without CONNACK [MQTT-3.2.2-6]
                    log.info("connect refused client_id=%s: will retain not supported [MQTT-3.2.2-6]", client_id)
                    self.wills.refused(client_id, now, "will retain not supported", "MQTT-3.2.2-6")
                    self._close(conn, "CONNECT refused: will retain not supported")
                return
            if is_sys_topic(will.topic):
                # $SYS is the broker's: a will there could forge its events (README "$SYS events").
                # CONNACK 0x87 Not authorized (3.1.1: return code 5)
                self._refuse(conn, RC_NOT_AUTHORIZED, f"will topic {will.topic!r}: $SYS topics are the broker's")
                return

        # -- who the client is (password_file), then whether its will may be published (acl_file)
        if not self._authenticate(conn, p, v5):
            return  # refused, or waiting for the password check (authenticated() comes back here)
        if will is not None and self.acl is not None and \
                not self.acl.allowed(conn.username, client_id, will.topic, WRITE):
            # a will its client may not publish is refused with the CONNECT: CONNACK 0x87 Not authorized
            # (3.1.1: return code 5), rather than accepted and dropped when the client dies
            self.stats["auth_refused"] += 1
            self._refuse(conn, RC_NOT_AUTHORIZED,
                         f"not authorized to publish the will on {will.topic!r} (acl_file, user "
                         f"{conn.username!r})", "MQTT-3.1.4-2" if v5 else "MQTT-3.2.2-5")
            return

        # -- session expiry and keep-alive as granted
        if v5:
            requested_expiry = props.get("session_expiry_interval", 0)
        else:
            requested_expiry = 0 if p.clean_start else NEVER
        expiry = min(requested_expiry, cfg.max_session_expiry)
        keep_alive = p.keep_alive
        server_keep_alive = None
        if v5 and (keep_alive > cfg.max_keep_alive or (keep_alive == 0 and not cfg.allow_zero_keep_alive)):
            keep_alive = server_keep_alive = cfg.max_keep_alive  # [MQTT-3.2.2-21] the client must use it
        conn.keep_alive = keep_alive
        conn.connect_expiry_interval = expiry
        if v5:
            conn.receive_maximum = props.get("receive_maximum", 65535)
            conn.topic_alias_maximum = props.get("topic_alias_maximum", 0) if cfg.outbound_topic_aliases else 0

        # -- accepted from here on. An existing connection with this id is taken over [MQTT-3.1.4-3]
        self.timers.cancel(("connect", conn.conn_id))
        session = self.sessions.get(client_id)
        if session is not None and session.conn is not None:
            old = session.conn
            if old.protocol_level == PROTOCOL_5:
                self._send(old, Disconnect(RC_SESSION_TAKEN_OVER))  # [MQTT-3.1.4-3] 0x8E
            log.info("client_id=%s taken over by a new connection from %s", client_id, conn.peer)
            self._end_connection(old, now, "session taken over by a new connection", "MQTT-3.1.4-3")
            session = self.sessions.get(client_id)  # it may have ended (expiry 0)

        session_present = False
        if session is not None and session.username != conn.username and not session.username_unknown and \
                (self.acl is not None or cfg.password_file):
            # a session is not handed to another user (its subscriptions, queued messages, will):
            # it ends as with Clean Start 1, its pending will published now (docs/security.md)
            log.info("client_id=%s: the session of user %r is not resumed by user %r; it ends",
                     client_id, session.username, conn.username)
            self._end_session(session, now, f"session of user {session.username!r} ended by a CONNECT of "
                                             f"user {conn.username!r} with the same client id", "MQTT-3.1.2-4")
            session = None
        if session is not None and session.will_recovered:
            # its connection was ended by the broker stopping, not by the client: any reconnect
            # within the recovery grace period proves it alive and cancels the recovered will
            self.wills.resume(session, now)
        if session is not None and p.clean_start:
            # [MQTT-3.1.2-4] Clean Start 1 discards the existing session; its pending will fires now
            self._end_session(session, now, "session ended by a new connection with Clean Start 1",
                              "MQTT-3.1.2-4")
            session = None
        if session is None:
            session = self.sessions[client_id] = Session(client_id)
        else:
            session_present = True  # [MQTT-3.2.2-3] the server has this session
            self.timers.cancel(("session", client_id))
            self.wills.resume(session, now)  # [MQTT-3.1.3-9] reconnected before the will fired
        session.expiry_interval = expiry
        session.username = conn.username  # stored with the session: its will is checked against it
        session.username_unknown = False
        session.conn = conn
        session.disconnected_at = None
        conn.session = session
        conn.state = CONNECTED
        conn.connected_at = now
        conn.publish_tokens, conn.publish_tokens_at = max(cfg.max_publish_rate, 1.0), now  # a full bucket
        self.stats["connects"] += 1
        self.wills.arm(session, will, now)  # records the session: durable before CONNACK

        # -- CONNACK [MQTT-3.2.0-1] is the first packet the server sends
        ack_props: dict = {}
        if v5:
            if assigned is not None:
                ack_props["assigned_client_identifier"] = assigned
            if expiry != requested_expiry:
                ack_props["session_expiry_interval"] = expiry
            if server_keep_alive is not None:
                ack_props["server_keep_alive"] = server_keep_alive
            if cfg.receive_maximum != 65535:
                ack_props["receive_maximum"] = cfg.receive_maximum
            if cfg.maximum_qos < 2:
                ack_props["maximum_qos"] = cfg.maximum_qos
            if not cfg.retain_available:
                ack_props["retain_available"] = 0
            ack_props["maximum_packet_size"] = cfg.max_packet_size
            if cfg.topic_alias_maximum:
                ack_props["topic_alias_maximum"] = cfg.topic_alias_maximum
            if not cfg.wildcard_subscription_available:
                ack_props["wildcard_subscription_available"] = 0
            if not cfg.subscription_identifier_available:
                ack_props["subscription_identifier_available"] = 0
            if not cfg.shared_subscription_available:
                ack_props["shared_subscription_available"] = 0
        self._send(conn, Connack(RC_SUCCESS, session_present, ack_props))
        log.info("connect client_id=%s from %s proto=%s clean_start=%d keep_alive=%s session_expiry=%s "
                 "session_present=%d will=%s", client_id, conn.peer, p.protocol_level, p.clean_start,
                 keep_alive, "never" if expiry == NEVER else expiry, session_present,
                 describe(will) if will else "none")

        if keep_alive:
            self.timers.schedule(("ka", conn.conn_id), now + keep_alive * 1.5)
        if session_present:
            self._resend_inflight(conn, session)
            self._pump(session, now)
        self.announce.connected(conn, session, p, now)  # presence online, $SYS connected

    # ==== authentication and authorization (docs/security.md) =====================================
    def _authenticate(self, conn: Conn, p: Connect, v5: bool) -> bool:
        """Who is the client? True: go on with the CONNECT. False: refused, or parked until the
        edge has checked the password (the check is slow by design, so the core only asks for it)."""
        if conn.auth_done:  # the CONNECT handed back by authenticated(): its password was right
            return True
        rule = "MQTT-3.1.4-2" if v5 else "MQTT-3.2.2-5"
        if conn.cert_username is not None:  # proved by the client's TLS certificate (edge/tls.py)
            conn.username = conn.cert_username
            return True
        conn.username = p.username
        if p.username is None:  # anonymous (a password without a user name is ignored, as mosquitto does)
            if self._anonymous_allowed:
                return True
            # [MQTT-3.1.4-2] (3.1.1: [MQTT-3.2.2-5]) CONNACK 0x87 Not authorized (3.1.1: return code 5)
            self.stats["auth_refused"] += 1
            self._refuse(conn, RC_NOT_AUTHORIZED, "clients without a user name are not allowed "
                                                  "(allow_anonymous)", rule)
            return False
        if not self.config.password_file:
            return True  # the user name is taken as given (docs/security.md)
        conn.state = AUTHENTICATING
        conn.held = [p]
        self._out.append(Authenticate(conn.conn_id, p.username, p.password))
        return False

    def authenticated(self, conn_id: int, ok: bool, now: float) -> list[Action]:
        """The edge's answer to ``Authenticate``: the CONNECT goes on, or is refused with CONNACK 0x86
        (3.1.1: return code 4), the same answer whether the user is unknown or the password wrong."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.state != AUTHENTICATING:
            return []  # closed meanwhile
        connect, *held = conn.held
        conn.held = None
        conn.state = NEW
        if not ok:
            self.stats["auth_refused"] += 1
            v5 = connect.protocol_level == PROTOCOL_5
            self._connect_will = connect.will
            # [MQTT-3.1.4-2] (3.1.1: [MQTT-3.2.2-5]): CONNACK 0x86 Bad User Name or Password, then close
            self._refuse(conn, RC_BAD_USER_NAME_OR_PASSWORD,
                         f"bad user name or password (user {connect.username!r})",
                         "MQTT-3.1.4-2" if v5 else "MQTT-3.2.2-5")
            return self._take()
        conn.auth_done = True
        for item in (connect, *held):  # in the order they arrived
            if conn.state == CLOSED:
                break
            if isinstance(item, MqttError):
                self._protocol_error(conn, item, now)
                break
            try:
                self._dispatch(conn, item, now)
            except MqttError as err:
                self._protocol_error(conn, err, now)
        return self._take()

    def _readers(self, message: Message, normal: list, shared: list, now: float) -> tuple[list, list]:
        """The matching subscriptions whose client may read ``message`` (new lists: the tree's are cached).
        The others are not delivered to, counted, and for a will written on its timeline."""
        topic = message.topic
        may_read = self._may_read
        kept = [(cid, o) for cid, o in normal if may_read(cid, topic)]
        denied = {cid for cid, _ in normal} - {cid for cid, _ in kept}
        kept_shared = []
        for share_key, group, members in shared:
            allowed = {cid: o for cid, o in members.items() if may_read(cid, topic)}
            if allowed:
                kept_shared.append((share_key, group, allowed))
            else:
                denied.add(f"$share/{share_key}")
        if denied:
            self.stats["dropped_not_authorized"] += len(denied)
            if message.is_will:
                for subscriber in sorted(denied):
                    self.wills.delivery_dropped(message, subscriber, "not_authorized", now)
        return kept, kept_shared

    def set_acl(self, acl: Acl | None) -> None:
        """Use these ACL rules from now on (start-up, SIGHUP). Connections are kept; what they do next,
        what is delivered to them next and wills published from now on are checked against them."""
        self.acl = acl

    def _may_read(self, client_id: str, topic: str) -> bool:
        session = self.sessions.get(client_id)
        return self.acl.allowed(session.username if session is not None else None, client_id, topic, READ)

    def _will_denied(self, session: Session, topic: str) -> str | None:
        """Why the session's will may not be published now (None: it may): checked again at publication,
        since the ACL may have been reloaded since the CONNECT, or the will recovered after a restart."""
        if self.acl is None or self.acl.allowed(session.username, session.client_id, topic, WRITE):
            return None
        return (f"the ACL (acl_file) does not let user {session.username!r} (client {session.client_id!r}) "
                f"publish on {topic!r}")

    # ==== ending connections and sessions =========================================================
    def _end_connection(self, conn: Conn, now: float, cause: str, rule: str | None,
                        *, normal: bool = False, send_close: bool = True, will_cancelled: bool = False) -> None:
        """Close ``conn``; unless ``normal`` (DISCONNECT 0x00), its will follows [MQTT-3.1.2-8].
        ``will_cancelled``: the DISCONNECT 0x00 discarded a will (for the $SYS disconnected event)."""
        if send_close:
            self._close(conn, cause)
        else:
            conn.state = CLOSED
            self.timers.cancel(("ka", conn.conn_id))
        # the Conn stays in self.conns (its protocol level encodes what is still queued for it)
        # until the edge reports the socket closed: connection_lost removes it
        session = conn.session
        conn.session = None
        if session is None or session.conn is not conn:
            return
        session.conn = None
        session.disconnected_at = now
        self.recorder.session(session)
        log.info("disconnect client_id=%s: %s", session.client_id, cause)
        self.announce.offline(session.client_id, now)  # presence first, then the will
        if not normal:
            decision = self.wills.connection_ended(session, now, cause, rule)
        else:
            decision = ("cancelled", None, "MQTT-3.14.4-3") if will_cancelled else None
        self.announce.disconnected(conn, session, now, cause, normal, decision)
        if session.expiry_interval == 0:
            self._end_session(session, now, "session expired at disconnect (Session Expiry Interval 0)",
                              "MQTT-3.1.2-23")
        elif session.expiry_interval != NEVER:
            self.timers.schedule(("session", session.client_id), now + session.expiry_interval)

    def _session_expired(self, client_id: str, now: float) -> None:
        session = self.sessions.get(client_id)
        if session is None or session.conn is not None:
            return
        self._end_session(session, now, "session expired", "MQTT-3.1.2-23")

    def _end_session(self, session: Session, now: float, why: str, rule: str) -> None:
        # the session's end publishes a pending will first [MQTT-3.1.2-8]
        self.wills.session_ending(session, now, why, rule)
        self.timers.cancel(("session", session.client_id))
        for topic_filter in session.subscriptions:
            self.tree.remove(session.client_id, topic_filter)
        session.clear_subscriptions()
        if session.queue or session.inflight:
            log.info("session client_id=%s ended with %d queued and %d in-flight message(s) discarded",
                     session.client_id, len(session.queue), len(session.inflight))
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self.recorder.session_deleted(session.client_id)

    def _keep_alive_check(self, conn_id: int, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or conn.state != CONNECTED or not conn.keep_alive:
            return
        deadline = conn.last_activity + conn.keep_alive * 1.5
        if now < deadline:
            self.timers.schedule(("ka", conn_id), deadline)
            return
        # [MQTT-3.1.2-22] nothing received for 1.5 x Keep Alive: close as if the network failed
        if conn.protocol_level == PROTOCOL_5:
            self._send(conn, Disconnect(RC_KEEP_ALIVE_TIMEOUT))
        self._end_connection(conn, now, f"keep-alive timeout ({conn.keep_alive}s x 1.5 without a packet)",
                             "MQTT-3.1.2-22")

    # ==== PUBLISH in ===========================================================================
    def _on_publish(self, conn: Conn, p: Publish, now: float) -> None:
        cfg = self.config
        topic = p.topic
        props = p.properties
        if conn.protocol_level == PROTOCOL_5:
            alias = props.get("topic_alias")
            if alias is not None:
                if alias == 0 or alias > cfg.topic_alias_maximum:
                    # [MQTT-3.3.2-8] [MQTT-3.2.2-17] alias 0 or above our Topic Alias Maximum
                    raise MqttError(f"topic alias {alias} outside 1..{cfg.topic_alias_maximum}",
                                    RC_TOPIC_ALIAS_INVALID, "MQTT-3.3.2-8")
                if topic:
                    if conn.aliases_in is EMPTY_MAP:
                        conn.aliases_in = {}
                    conn.aliases_in[alias] = topic  # [MQTT-3.3.2-12] set or replace the mapping
                else:
                    topic = conn.aliases_in.get(alias)
                    if topic is None:
                        raise ProtocolError(f"topic alias {alias} used before it was set (3.3.2.3.4)")
            elif not topic:
                raise ProtocolError("PUBLISH with an empty topic and no topic alias", rule="MQTT-3.3.2-1")
            if "subscription_identifier" in props:
                # [MQTT-3.3.4-6] a client must not send a Subscription Identifier
                raise ProtocolError("PUBLISH from a client carries a Subscription Identifier", rule="MQTT-3.3.4-6")
        qos = p.qos
        if qos > cfg.maximum_qos:
            raise MqttError(f"PUBLISH QoS {qos} above maximum {cfg.maximum_qos}", RC_QOS_NOT_SUPPORTED,
                            "MQTT-3.2.2-11")
        if p.retain and not cfg.retain_available:
            raise MqttError("retained PUBLISH but retain is not available", RC_RETAIN_NOT_SUPPORTED,
                            "MQTT-3.2.2-14")
        if p.topic:  # max_topic_length, max_topic_levels (a topic from a Topic Alias was checked when set)
            over = self._topic_over_limit(p.topic)
            if over is not None:
                if "topic_alias" in props and conn.aliases_in:  # no alias to a refused topic
                    conn.aliases_in.pop(props["topic_alias"], None)
                self._refuse_publish(conn, p, RC_TOPIC_NAME_INVALID, over[0], now, over[1])
                return
        session = conn.session
        if qos == 2:
            pid = p.packet_id
            if pid in session.awaiting_pubrel:
                # duplicate of a QoS 2 message not yet released: PUBREC again, no second delivery [MQTT-4.3.3-10]
                self._send(conn, Pubrec(pid))
                return
            if len(session.awaiting_pubrel) >= cfg.receive_maximum:
                # [MQTT-3.3.4-7] more unacknowledged QoS 2 PUBLISHes than our Receive Maximum
                raise MqttError(f"more than {cfg.receive_maximum} QoS 2 messages awaiting PUBREL",
                                RC_RECEIVE_MAXIMUM_EXCEEDED, "MQTT-3.3.4-7")
        elif qos == 1 and len(session.awaiting_pubrel) >= cfg.receive_maximum:
            # [MQTT-3.3.4-7] a QoS 1 PUBLISH counts too: it arrives while Receive Maximum QoS 2 are unanswered
            raise MqttError(f"QoS 1 PUBLISH while {cfg.receive_maximum} QoS 2 messages await PUBREL",
                            RC_RECEIVE_MAXIMUM_EXCEEDED, "MQTT-3.3.4-7")
        if cfg.max_publish_rate and not self._publish_token(conn, now):
            self._refuse_publish(conn, p, RC_QUOTA_EXCEEDED, "max_publish_rate", now,
                                 f"more than {cfg.max_publish_rate:g} PUBLISH per second")
            return
        self.stats["messages_in"] += 1
        if props:
            fwd = {k: v for k, v in props.items() if k not in _STRIP_ON_FORWARD}
            mei = props.get("message_expiry_interval")
        else:
            fwd = props
            mei = None
        message = Message(topic, p.payload, qos, p.retain, fwd, conn.client_id,
                          (now + mei) if mei is not None else None)
        if topic[:1] == "$" and is_sys_topic(topic):
            # $SYS is the broker's: a client's PUBLISH there is dropped, neither routed nor retained
            # (as mosquitto does). MQTT 5 says so: PUBACK/PUBREC 0x87 Not authorized; 3.1.1 has no
            # way to, so the normal positive acknowledgement [MQTT-3.3.5-2]
            log.info("client_id=%s PUBLISH to %r dropped: $SYS topics are the broker's", conn.client_id, topic)
            if qos and conn.protocol_level == PROTOCOL_5:
                self._send(conn, (Puback if qos == 1 else Pubrec)(p.packet_id, RC_NOT_AUTHORIZED))
                return
        elif self.acl is not None and not self.acl.allowed(conn.username, conn.client_id, topic, WRITE):
            # acl_file does not let this client publish here: dropped, neither routed nor retained.
            # MQTT 5: PUBACK/PUBREC 0x87 Not authorized [MQTT-3.4.2-1] [MQTT-3.5.2-1] (QoS 0: just dropped);
            # 3.1.1 cannot say so: the normal positive acknowledgement [MQTT-3.3.5-2]
            self.stats["publish_denied"] += 1
            conn.acl_denied += 1
            if conn.acl_denied == 1 or conn.acl_denied % 1000 == 0:
                log.info("client_id=%s user=%r PUBLISH to %r dropped: not authorized by acl_file (%d so far on "
                         "this connection)", conn.client_id, conn.username, topic[:200], conn.acl_denied)
            if qos and conn.protocol_level == PROTOCOL_5:
                self._send(conn, (Puback if qos == 1 else Pubrec)(p.packet_id, RC_NOT_AUTHORIZED,
                                                                  self._reason(conn, "not authorized")))
                return
        else:
            self._route(message, now)
        if qos == 1:
            self._send(conn, Puback(p.packet_id))
        elif qos == 2:
            session.add_awaiting_pubrel(p.packet_id)
            self.recorder.session(session)
            self._send(conn, Pubrec(p.packet_id))

    def _route(self, message: Message, now: float) -> int:
        """Deliver ``message`` to every matching subscription; store it if retained. Returns receivers."""
        if message.retain:
            if self.retained.store(message):  # [MQTT-3.3.1-5]
                self.recorder.retained_changed(message.topic, message if message.payload else None)
            if message.expiry_at is not None and message.payload:
                self.timers.schedule(("retained", message.topic), message.expiry_at)
        normal, shared = self.tree.match(message.topic)
        if not normal and not shared:
            return 0
        if self.acl is not None:  # every receiver must be allowed to read it (acl_file), checked now
            normal, shared = self._readers(message, normal, shared, now)
            if not normal and not shared:
                return 0
        sessions = self.sessions
        origin = message.origin
        receivers = 0
        if len(normal) == 1 and not shared:
            client_id, opts = normal[0]
            if opts.no_local and client_id == origin:  # [MQTT-3.8.3-3]
                return 0
            self._deliver(sessions[client_id], message, min(message.qos, opts.qos),
                          message.retain and opts.retain_as_published,
                          (opts.subscription_id,) if opts.subscription_id else (), now)
            return 1
        merged: dict[str, list] = {}
        for client_id, opts in normal:
            if opts.no_local and client_id == origin:  # [MQTT-3.8.3-3] not to its own publisher
                continue
            entry = merged.get(client_id)
            if entry is None:
                merged[client_id] = [opts.qos, opts.retain_as_published,
                                     [opts.subscription_id] if opts.subscription_id else []]
            else:
                # overlapping subscriptions: one delivery, highest QoS, every identifier [MQTT-3.3.4-2]
                # [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5]
                if opts.qos > entry[0]:
                    entry[0] = opts.qos
                entry[1] = entry[1] or opts.retain_as_published
                if opts.subscription_id:
                    entry[2].append(opts.subscription_id)
        for client_id, (sub_qos, rap, ids) in merged.items():
            self._deliver(sessions[client_id], message, min(message.qos, sub_qos),
                          message.retain and rap, tuple(ids), now)
            receivers += 1
        for share_key, _group, members in shared:
            chosen = self._pick_member(share_key, members)
            if chosen is None:
                continue
            client_id, opts = chosen
            self._deliver(sessions[client_id], message, min(message.qos, opts.qos),
                          message.retain and opts.retain_as_published,
                          (opts.subscription_id,) if opts.subscription_id else (), now)
            receivers += 1
        return receivers

    def _pick_member(self, share_key: str, members: dict[str, SubOptions]):
        """Round robin over the group, preferring members that are connected."""
        items = list(members.items())
        if not items:
            return None
        start = self._share_cursor.get(share_key, 0)
        n = len(items)
        for i in range(n):
            client_id, opts = items[(start + i) % n]
            session = self.sessions.get(client_id)
            if session is not None and session.conn is not None:
                self._share_cursor[share_key] = (start + i + 1) % n
                return client_id, opts
        self._share_cursor[share_key] = (start + 1) % n
        return items[start % n]

    # ==== PUBLISH out ==========================================================================
    def _deliver(self, session: Session, message: Message, qos: int, retain: bool,
                 sub_ids: tuple[int, ...], now: float) -> None:
        conn = session.conn
        if conn is not None and not conn.paused and \
                (qos == 0 or (not session.queue and len(session.inflight) < conn.receive_maximum)):
            self._transmit(conn, session, Delivery(message, qos, retain, sub_ids), now)
            return
        # a slow subscriber (its socket buffer is full: conn.paused) gets its messages, QoS 0 too,
        # through the session queue, which is bounded by max_queued_messages: beyond that they
        # are dropped and counted, never buffered without bound
        if qos == 0 and conn is None and not self.config.queue_qos0:
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, "offline_qos0", now)
            return
        size = len(message.payload) + len(message.topic)
        over_bytes = session.queued_bytes + size > self.config.max_queued_bytes
        if over_bytes or len(session.queue) >= self.config.max_queued_messages:
            session.dropped += 1
            self.stats["dropped_queue_bytes" if over_bytes else "dropped_queue_full"] += 1
            limit = "max_queued_bytes" if over_bytes else "max_queued_messages"
            self.limit_hits[limit] = self.limit_hits.get(limit, 0) + 1
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, "queue_full", now,
                                            f"its queue is full ({len(session.queue)} messages, "
                                            f"{session.queued_bytes} bytes, {limit})")
            if session.dropped == 1 or session.dropped % 1000 == 0:
                log.warning("client_id=%s queue full (%d messages, %d bytes; %s): %d message(s) dropped so far%s",
                            session.client_id, len(session.queue), session.queued_bytes, limit, session.dropped,
                            " (a will)" if message.is_will else "")
            return
        d = Delivery(message, qos, retain, sub_ids)
        session.enqueue(d)
        session.queued_bytes += size
        if session.expiry_interval:
            self.recorder.delivery(session, d)

    def _transmit(self, conn: Conn, session: Session, d: Delivery, now: float) -> bool:
        """Send one delivery now. Returns False if it was dropped (expired or too large)."""
        message = d.message
        if message.expiry_at is not None and now >= message.expiry_at:
            self.stats["dropped_expired"] += 1  # [MQTT-3.3.2-5] an expired message is not delivered
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, "expired", now,
                                            "its Message Expiry Interval passed before it could be sent",
                                            "MQTT-3.3.2-5")
            self.recorder.delivery_done(session, d)
            return False
        v5 = conn.protocol_level == PROTOCOL_5
        topic = message.topic
        if v5:
            props = message.properties
            extra = None
            if message.expiry_at is not None:
                extra = {"message_expiry_interval": message.remaining_expiry(now)}  # [MQTT-3.3.2-6]
            if d.subscription_ids:
                extra = extra or {}
                extra["subscription_identifier"] = list(d.subscription_ids)  # [MQTT-3.3.4-3]
            if conn.topic_alias_maximum:
                alias = conn.aliases_out.get(topic)
                extra = extra or {}
                if alias is not None:
                    extra["topic_alias"] = alias
                    topic = ""
                elif len(conn.aliases_out) < conn.topic_alias_maximum:  # [MQTT-3.1.2-26]
                    if conn.aliases_out is EMPTY_MAP:
                        conn.aliases_out = {}
                    alias = conn.aliases_out[topic] = len(conn.aliases_out) + 1
                    extra["topic_alias"] = alias
            if extra:
                props = {**props, **extra}
        else:
            props = {}
        qos = d.qos
        if qos:
            pid = session.allocate_packet_id()
            packet = Publish(topic, message.payload, qos, d.retain, False, pid, props)
        else:
            packet = Publish(topic, message.payload, 0, d.retain, False, None, props)
        if conn.maximum_packet_size is not None and \
                len(encode(packet, conn.protocol_level)) > conn.maximum_packet_size:
            # [MQTT-3.1.2-24] [MQTT-3.1.2-25] too large for this client: discarded for it, not sent
            self.stats["dropped_too_large"] += 1
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, "too_large", now,
                                            f"larger than its Maximum Packet Size {conn.maximum_packet_size}",
                                            "MQTT-3.1.2-24")
            log.info("client_id=%s: message on %r dropped, larger than the client's Maximum Packet Size %d",
                     session.client_id, message.topic, conn.maximum_packet_size)
            if "topic_alias" in props and topic:  # the alias was not established after all
                conn.aliases_out.pop(topic, None)
            self.recorder.delivery_done(session, d)  # a queued one is gone from the store too
            return False
        if qos:
            state = AWAIT_PUBACK if qos == 1 else AWAIT_PUBREC
            session.set_inflight(pid, InFlight(d, packet, state))
            if session.expiry_interval:
                self.recorder.delivery(session, d, pid, state)
        elif d.seq:
            self.recorder.delivery_done(session, d)
        self._out.append(Send(conn.conn_id, packet))
        self.stats["messages_out"] += 1
        return True

    def _pump(self, session: Session, now: float) -> None:
        """Move queued deliveries into flight while the client's Receive Maximum allows [MQTT-4.9.0-2]."""
        conn = session.conn
        if conn is None or conn.paused:
            return
        resend = conn.resend
        # held-back re-sends first, while the send quota allows: the in-flight ones not held count
        # against the client's Receive Maximum [MQTT-4.9.0-1]
        while resend and len(session.inflight) - len(resend) < conn.receive_maximum:
            pid = next(iter(resend))
            del resend[pid]
            self._resend_publish(conn, session, pid, session.inflight[pid], now)
        queue = session.queue
        while queue and (queue[0].qos == 0 or len(session.inflight) < conn.receive_maximum):
            d = queue.popleft()
            session.queued_bytes -= len(d.message.payload) + len(d.message.topic)
            self._transmit(conn, session, d, now)

    def _resend_inflight(self, conn: Conn, session: Session) -> None:
        """On a resumed session, resend unacknowledged PUBLISH (DUP 1) and PUBREL [MQTT-4.4.0-1].

        PUBRELs go at once; the PUBLISHes are held in ``conn.resend`` and sent by ``_pump`` (called
        next) within the new connection's Receive Maximum [MQTT-4.9.0-1]."""
        for pid, f in session.inflight.items():
            if f.state == AWAIT_PUBCOMP:
                self._send(conn, Pubrel(pid))
            else:
                if conn.resend is EMPTY_MAP:
                    conn.resend = {}
                conn.resend[pid] = None

    def _resend_publish(self, conn: Conn, session: Session, pid: int, f: InFlight, now: float) -> None:
        old = f.packet
        d = f.delivery
        props: dict = {}
        if conn.protocol_level == PROTOCOL_5:
            # the message's properties as forwarded the first time [MQTT-3.3.2-17] [MQTT-3.3.2-20] (also for a
            # delivery restored from the store, whose packet was not kept), with the expiry counted down to
            # now [MQTT-3.3.2-6] and its subscription identifiers [MQTT-3.3.4-3]; no topic alias: aliases
            # do not survive the connection [MQTT-3.3.2-7]
            props = dict(d.message.properties)
            remaining = d.message.remaining_expiry(now)
            if remaining is not None:
                props["message_expiry_interval"] = remaining
            if d.subscription_ids:
                props["subscription_identifier"] = list(d.subscription_ids)
        f.packet = Publish(d.message.topic, old.payload, old.qos, old.retain, True,
                           pid, props)  # [MQTT-3.3.1-1] DUP 1 on a re-delivery
        if conn.maximum_packet_size is not None and \
                len(encode(f.packet, conn.protocol_level)) > conn.maximum_packet_size:
            # the new connection allows less: discarded as if sent [MQTT-3.1.2-24] [MQTT-3.1.2-25]
            del session.inflight[pid]
            self.recorder.delivery_done(session, f.delivery)  # or a restart would bring it back
            self.stats["dropped_too_large"] += 1
            return
        self._send(conn, f.packet)

    # ==== acknowledgements =====================================================================
    def _on_puback(self, conn: Conn, p: Puback, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is not None and f.state == AWAIT_PUBACK:
            del session.inflight[p.packet_id]
            if conn.resend:
                conn.resend.pop(p.packet_id, None)  # acknowledged before it was re-sent
            self.recorder.delivery_done(session, f.delivery)
            if session.queue or conn.resend:
                self._pump(session, now)

    def _on_pubrec(self, conn: Conn, p: Pubrec, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is None or f.state == AWAIT_PUBACK:
            if conn.protocol_level == PROTOCOL_5:
                self._send(conn, Pubrel(p.packet_id, RC_PACKET_ID_NOT_FOUND))
            else:
                self._send(conn, Pubrel(p.packet_id))
            return
        if conn.resend:
            conn.resend.pop(p.packet_id, None)  # answered before it was re-sent
        if p.reason_code >= 0x80:  # refused by the receiver: discard, no PUBREL [MQTT-4.3.3-4] [MQTT-4.8.2-6]
            del session.inflight[p.packet_id]
            self.recorder.delivery_done(session, f.delivery)
            self._pump(session, now)
            return
        f.state = AWAIT_PUBCOMP
        if f.delivery.seq:
            self.recorder.delivery(session, f.delivery, p.packet_id, AWAIT_PUBCOMP)
        self._send(conn, Pubrel(p.packet_id))

    def _on_pubcomp(self, conn: Conn, p: Pubcomp, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is not None and f.state == AWAIT_PUBCOMP:
            del session.inflight[p.packet_id]
            self.recorder.delivery_done(session, f.delivery)
            if session.queue or conn.resend:
                self._pump(session, now)

    def _on_pubrel(self, conn: Conn, p: Pubrel, now: float) -> None:
        session = conn.session
        if p.packet_id in session.awaiting_pubrel:
            session.awaiting_pubrel.discard(p.packet_id)
            self.recorder.session(session)
            self._send(conn, Pubcomp(p.packet_id))
        elif conn.protocol_level == PROTOCOL_5:
            self._send(conn, Pubcomp(p.packet_id, RC_PACKET_ID_NOT_FOUND))
        else:
            self._send(conn, Pubcomp(p.packet_id))

    # ==== SUBSCRIBE / UNSUBSCRIBE ================================================================
    def _on_subscribe(self, conn: Conn, p: Subscribe, now: float) -> None:
        cfg = self.config
        v5 = conn.protocol_level == PROTOCOL_5
        session = conn.session
        sub_id = p.properties.get("subscription_identifier") if v5 else None
        if sub_id is not None and not cfg.subscription_identifier_available:
            raise MqttError("subscription identifiers are not supported", RC_SUBSCRIPTION_IDS_NOT_SUPPORTED)
        codes = []
        retained_to_send: list[tuple[Message, SubOptions]] = []
        for sub in p.subscriptions:
            try:
                group, inner = parse_shared(sub.topic_filter)
                validate_topic_filter(inner)
            except TopicError as e:
                log.info("client_id=%s subscribe %r refused: %s [%s]", session.client_id, sub.topic_filter, e, e.rule)
                codes.append(RC_TOPIC_FILTER_INVALID)  # 3.1.1: 0x80 Failure
                continue
            if group is not None:
                if not cfg.shared_subscription_available:
                    codes.append(RC_SHARED_NOT_SUPPORTED)
                    continue
                if sub.no_local:
                    # [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error
                    raise ProtocolError(f"No Local set on shared subscription {sub.topic_filter!r}",
                                        rule="MQTT-3.8.3-4")
            if not cfg.wildcard_subscription_available and ("+" in inner or "#" in inner):
                codes.append(RC_WILDCARDS_NOT_SUPPORTED)
                continue
            over = self._topic_over_limit(sub.topic_filter, inner)
            if over is None and sub.topic_filter not in session.subscriptions and \
                    len(session.subscriptions) >= cfg.max_subscriptions_per_client:
                over = ("max_subscriptions_per_client",
                        f"the client has {len(session.subscriptions)} subscriptions (max_subscriptions_per_client)")
            if over is not None:
                # 0x8F Topic Filter invalid ("not allowed for this Client") / 0x97 Quota exceeded; 3.1.1: 0x80
                code = RC_QUOTA_EXCEEDED if over[0] == "max_subscriptions_per_client" else RC_TOPIC_FILTER_INVALID
                self._limit_hit(over[0], session.client_id, now, "client_id=%s subscribe %r refused with 0x%02X: %s",
                                session.client_id, sub.topic_filter[:200], code, over[1])
                codes.append(code)
                continue
            if self.acl is not None and not self.acl.may_subscribe(session.username, session.client_id, inner):
                # acl_file: no read rule covers the whole filter (or a deny rule does): 0x87 Not authorized
                # for this filter alone [MQTT-3.8.4-6] [MQTT-3.9.3-2]; 3.1.1: 0x80 Failure [MQTT-3.8.4-5]
                log.info("client_id=%s user=%r subscribe %r refused: not authorized by acl_file",
                         session.client_id, session.username, sub.topic_filter[:200])
                codes.append(RC_NOT_AUTHORIZED)
                continue
            granted = min(sub.qos, cfg.maximum_qos)  # [MQTT-3.2.2-10] [MQTT-3.8.4-8] granted may be lower
            opts = SubOptions(granted, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id)
            existed = sub.topic_filter in session.subscriptions
            session.set_subscription(sub.topic_filter, opts)  # [MQTT-3.8.4-3] replaces an identical filter
            self.tree.add(session.client_id, sub.topic_filter, opts)
            codes.append(granted)
            # retained messages [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]; never to a shared subscription (4.8.2)
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed)):
                for msg in self.retained.matching(inner, now):
                    retained_to_send.append((msg, opts))
        self.recorder.session(session)
        self._send(conn, Suback(p.packet_id, codes))  # [MQTT-3.8.4-1] [MQTT-3.8.4-5]
        for msg, opts in retained_to_send:
            if opts.no_local and msg.origin == session.client_id:
                continue
            if self.acl is not None and not self._may_read(session.client_id, msg.topic):
                self.stats["dropped_not_authorized"] += 1  # acl_file: a retained message it may not read
                continue
            # a retained message sent because of a new subscription has RETAIN 1 [MQTT-3.3.1-8]
            self._deliver(session, msg, min(msg.qos, opts.qos), True,
                          (opts.subscription_id,) if opts.subscription_id else (), now)

    def _on_unsubscribe(self, conn: Conn, p: Unsubscribe, now: float) -> None:
        session = conn.session
        codes = []
        for topic_filter in p.topic_filters:
            if session.subscriptions and session.subscriptions.pop(topic_filter, None) is not None:
                self.tree.remove(session.client_id, topic_filter)
                codes.append(RC_SUCCESS)
            else:
                codes.append(RC_NO_SUBSCRIPTION_EXISTED)
        self.recorder.session(session)
        self._send(conn, Unsuback(p.packet_id, codes))  # [MQTT-3.10.4-4] [MQTT-3.10.4-5]

    # ==== PINGREQ, DISCONNECT, AUTH =============================================================
    def _on_pingreq(self, conn: Conn, p: Pingreq, now: float) -> None:
        self._send(conn, Pingresp())  # [MQTT-3.12.4-1]

    def _on_disconnect(self, conn: Conn, p: Disconnect, now: float) -> None:
        session = conn.session
        if conn.protocol_level == PROTOCOL_5:
            new_expiry = p.properties.get("session_expiry_interval")
            if new_expiry is not None:
                if conn.connect_expiry_interval == 0 and new_expiry != 0:
                    # 3.14.2.2.2: expiry 0 at CONNECT cannot be raised at DISCONNECT: a Protocol Error,
                    # and not a valid DISCONNECT, so the will is not discarded
                    raise ProtocolError("DISCONNECT sets a non-zero Session Expiry Interval after CONNECT "
                                        "had 0 (3.14.2.2.2)")
                session.expiry_interval = min(new_expiry, self.config.max_session_expiry)
                self.recorder.session(session)
        code = p.reason_code
        if code == RC_SUCCESS:
            # [MQTT-3.14.4-3] normal disconnection: the will is discarded, never published
            cancelled = self.wills.discard(session, now, "DISCONNECT with reason 0x00 (normal disconnection)",
                                           "MQTT-3.14.4-3")
            self._end_connection(conn, now, "client sent DISCONNECT 0x00", "MQTT-3.14.4-3", normal=True,
                                 will_cancelled=cancelled)
        elif code == RC_DISCONNECT_WITH_WILL:
            self._end_connection(conn, now, "client sent DISCONNECT 0x04 (disconnect with will message)",
                                 "MQTT-3.14.2-1")
        else:
            # any other reason code leaves the will in place: it is published as for a lost connection
            self._end_connection(conn, now, f"client sent DISCONNECT 0x{code:02X}", "MQTT-3.1.2-8")

    def _on_auth(self, conn: Conn, p: Auth, now: float) -> None:
        # no Authentication Method at CONNECT: the client must not send AUTH [MQTT-4.12.0-7]
        raise ProtocolError("AUTH received but no enhanced authentication is in progress", rule="MQTT-4.12.0-7")

    def _on_connect_again(self, conn: Conn, p: Connect, now: float) -> None:
        # [MQTT-3.1.0-2] a second CONNECT is a Protocol Error: close the connection. No DISCONNECT
        # first (allowed either way by 4.13.1): like mosquitto and the Paho reference broker, since a
        # client that sent a second CONNECT may not expect a DISCONNECT (the Paho interoperability
        # suite's client can hang reading one)
        err = ProtocolError("second CONNECT on one connection", rule="MQTT-3.1.0-2")
        err.send_disconnect = False
        raise err

    _handlers = {
        Publish: _on_publish,
        Puback: _on_puback,
        Pubrec: _on_pubrec,
        Pubrel: _on_pubrel,
        Pubcomp: _on_pubcomp,
        Subscribe: _on_subscribe,
        Unsubscribe: _on_unsubscribe,
        Pingreq: _on_pingreq,
        Disconnect: _on_disconnect,
        Auth: _on_auth,
        Connect: _on_connect_again,
    }
