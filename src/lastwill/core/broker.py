"""The broker's state machine. Pure: it never awaits, never touches a socket, never reads a clock.

The edge calls, each with the monotonic ``now``:

* ``open(conn_id, now, peer)`` when a network connection is accepted,
* ``data_received(conn_id, data, now)`` with the bytes read,
* ``connection_lost(conn_id, cause, now)`` when the socket closed under us,
* ``tick(now)`` when ``next_deadline()`` is reached,

and each call returns the list of actions (``Send``, ``Close``) to carry out, in order.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable

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
)
from ..config import Config
from ..errors import MqttError, ProtocolError, UnsupportedProtocolVersion
from .actions import Action, Close, Send
from .announce import Announcer, is_sys_topic
from .message import Message
from .persistence import Recorder
from .persistence import restore as restore_state
from .retained import RetainedStore
from .sessions import (
    AWAIT_PUBACK,
    AWAIT_PUBCOMP,
    AWAIT_PUBREC,
    CLOSED,
    CONNECTED,
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
RC_SHARED_NOT_SUPPORTED = 0x9E
RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1
RC_WILDCARDS_NOT_SUPPORTED = 0xA2

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
        # wall-clock seconds = monotonic now + wall_offset: the edge sets it (the core reads no clock);
        # used for the times in the $SYS event payloads
        self.wall_offset = 0.0
        self.announce = Announcer(self)  # $SYS events and presence
        self._new_client_id = client_id_factory or _default_client_id
        self._out: list[Action] = []
        self._share_cursor: dict[str, int] = {}
        self._conn_ids = itertools.count(1)
        self.stats = {"messages_in": 0, "messages_out": 0, "dropped_queue_full": 0,
                      "dropped_too_large": 0, "dropped_expired": 0, "connects": 0}

    # ==== entry points (called by the edge) ====================================================
    def new_conn_id(self) -> int:
        return next(self._conn_ids)

    def open(self, conn_id: int, now: float, peer: str = "", sockport: int = 0) -> list[Action]:
        conn = Conn(conn_id=conn_id, peer=peer, last_activity=now, sockport=sockport,
                    decoder=Decoder(max_packet_size=self.config.max_packet_size))
        self.conns[conn_id] = conn
        self.timers.schedule(("connect", conn_id), now + self.config.connect_timeout)
        return []

    def data_received(self, conn_id: int, data: bytes, now: float) -> list[Action]:
        conn = self.conns.get(conn_id)
        if conn is None or conn.state == CLOSED:
            return []
        out = self._out
        try:
            packets = conn.decoder.feed(data)
            if packets:
                # only a whole Control Packet restarts the keep-alive, not a trickle of bytes
                conn.last_activity = now  # [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22])
        except MqttError as err:
            for packet in getattr(err, "packets", ()) or ():
                if conn.state == CLOSED:
                    break
                self._dispatch(conn, packet, now)
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
        if conn.state == NEW:
            conn.state = CLOSED
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
                    log.info("connection %s from %s closed: no CONNECT within %ss",
                             ident, conn.peer, self.config.connect_timeout)
                    self._close(conn, "no CONNECT within connect_timeout")
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
            elif conn.state == NEW:
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
        who = conn.client_id or f"<conn {conn.conn_id} from {conn.peer}>"
        log.warning("client_id=%s protocol error 0x%02X: %s", who, err.reason_code, err)
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
                # [MQTT-4.13.1-1] a Malformed Packet or Protocol Error: DISCONNECT with the reason, then close
                self._send(conn, Disconnect(err.reason_code, properties=self._reason(conn, str(err))))
            self._end_connection(conn, now, f"protocol error 0x{err.reason_code:02X}: {err}", err.rule)

    def _reason(self, conn: Conn, text: str) -> dict:
        return {"reason_string": text[:200]} if conn.request_problem_information else {}

    # ==== CONNECT =============================================================================
    def _refuse(self, conn: Conn, reason_code: int, why: str, rule: str | None = None) -> None:
        """Refuse a CONNECT: CONNACK with the reason, close; nothing stored, nothing published."""
        props = self._reason(conn, why) if conn.protocol_level == PROTOCOL_5 else {}
        self._send(conn, Connack(reason_code, properties=props))
        log.info("connect refused client_id=%s from %s: 0x%02X %s%s", conn.client_id or "<empty>",
                 conn.peer, reason_code, why, f" [{rule}]" if rule else "")
        self.wills.refused(conn.client_id, conn.last_activity, f"0x{reason_code:02X} {why}", rule)
        self._close(conn, f"CONNECT refused: {why}")

    def _on_connect(self, conn: Conn, p: Connect, now: float) -> None:
        cfg = self.config
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
        session.conn = conn
        session.disconnected_at = None
        conn.session = session
        conn.state = CONNECTED
        conn.connected_at = now
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
        session.subscriptions.clear()
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
        else:
            self._route(message, now)
        if qos == 1:
            self._send(conn, Puback(p.packet_id))
        elif qos == 2:
            session.awaiting_pubrel.add(p.packet_id)
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
        if len(session.queue) >= self.config.max_queued_messages:
            session.dropped += 1
            self.stats["dropped_queue_full"] += 1
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, "queue_full", now,
                                            f"its queue is full ({len(session.queue)} messages, "
                                            f"max_queued_messages)")
            if session.dropped == 1 or session.dropped % 1000 == 0:
                log.warning("client_id=%s queue full (%d messages): %d message(s) dropped so far%s",
                            session.client_id, len(session.queue), session.dropped,
                            " (a will)" if message.is_will else "")
            return
        d = Delivery(message, qos, retain, sub_ids)
        session.queue.append(d)
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
            return False
        if qos:
            state = AWAIT_PUBACK if qos == 1 else AWAIT_PUBREC
            session.inflight[pid] = InFlight(d, packet, state)
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
            self._resend_publish(conn, session, pid, session.inflight[pid])
        queue = session.queue
        while queue and (queue[0].qos == 0 or len(session.inflight) < conn.receive_maximum):
            self._transmit(conn, session, queue.popleft(), now)

    def _resend_inflight(self, conn: Conn, session: Session) -> None:
        """On a resumed session, resend unacknowledged PUBLISH (DUP 1) and PUBREL [MQTT-4.4.0-1].

        PUBRELs go at once; the PUBLISHes are held in ``conn.resend`` and sent by ``_pump`` (called
        next) within the new connection's Receive Maximum [MQTT-4.9.0-1]."""
        for pid, f in session.inflight.items():
            if f.state == AWAIT_PUBCOMP:
                self._send(conn, Pubrel(pid))
            else:
                conn.resend[pid] = None

    def _resend_publish(self, conn: Conn, session: Session, pid: int, f: InFlight) -> None:
        old = f.packet
        props = old.properties if conn.protocol_level == PROTOCOL_5 else {}
        if "topic_alias" in props:  # aliases do not survive the connection [MQTT-3.3.2-7]
            props = {k: v for k, v in props.items() if k != "topic_alias"}
        f.packet = Publish(f.delivery.message.topic, old.payload, old.qos, old.retain, True,
                           pid, props)  # [MQTT-3.3.1-1] DUP 1 on a re-delivery
        if conn.maximum_packet_size is not None and \
                len(encode(f.packet, conn.protocol_level)) > conn.maximum_packet_size:
            # the new connection allows less: discarded as if sent [MQTT-3.1.2-24] [MQTT-3.1.2-25]
            del session.inflight[pid]
            self.stats["dropped_too_large"] += 1
            return
        self._send(conn, f.packet)

    # ==== acknowledgements =====================================================================
    def _on_puback(self, conn: Conn, p: Puback, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is not None and f.state == AWAIT_PUBACK:
            del session.inflight[p.packet_id]
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
            granted = min(sub.qos, cfg.maximum_qos)  # [MQTT-3.2.2-10] [MQTT-3.8.4-8] granted may be lower
            opts = SubOptions(granted, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id)
            existed = sub.topic_filter in session.subscriptions
            session.subscriptions[sub.topic_filter] = opts  # [MQTT-3.8.4-3] replaces an identical filter
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
            # a retained message sent because of a new subscription has RETAIN 1 [MQTT-3.3.1-8]
            self._deliver(session, msg, min(msg.qos, opts.qos), True,
                          (opts.subscription_id,) if opts.subscription_id else (), now)

    def _on_unsubscribe(self, conn: Conn, p: Unsubscribe, now: float) -> None:
        session = conn.session
        codes = []
        for topic_filter in p.topic_filters:
            if session.subscriptions.pop(topic_filter, None) is not None:
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
