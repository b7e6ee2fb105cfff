"""One network connection's protocol rules: its states, what may arrive in each, how it ends.

* NEW: only a CONNECT may come first [MQTT-3.1.0-1], within connect_timeout;
* AUTHENTICATING: the CONNECT waits for its password check; what follows it is held, in order;
* CONNECTED: packets go to their handler (one module per packet family); Keep Alive is enforced at
  1.5 x [MQTT-3.1.2-22];
* CLOSED: nothing more is read from it.

A protocol error or malformed packet closes the connection (MQTT 5: DISCONNECT with its reason
first [MQTT-4.13.1-1]) and, once the CONNECT was accepted, its will follows [MQTT-3.1.2-8]. So does
every other end of an accepted connection but DISCONNECT 0x00 (``end``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..codec.decoder import Decoder
from ..codec.packets import PROTOCOL_5, Connack, Connect, Disconnect, Packet
from ..codec.reason_codes import DISCONNECT_CODES, ReasonCode
from ..config import Config
from ..errors import MqttError, ProtocolError, UnsupportedProtocolVersion
from ..logs import fast_logger
from .actions import Close
from .announce import Announcer
from .causes import Cause, ConnectionEnded
from .fit import TooLargeForClient
from .limits import Limits
from .outbox import Outbox
from .ownership import SessionOwnership
from .persistence import Recorder
from .sessions import AUTHENTICATING, CLOSED, CONNECTED, NEW, Conn
from .timers import TimerKind, TimerQueue
from .will import WillDecision, WillKeeper, WillOutcome

log = fast_logger("lastwill")

MAX_HELD = 1000  # packets kept while a CONNECT waits for its password check

Handler = Callable[[Conn, Packet, float], None]

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_CONNECT = TimerKind.CONNECT.value
_NORMAL = Cause.NORMAL
# what the $SYS disconnected event says of a will DISCONNECT 0x00 discarded
_DISCARDED = WillDecision(WillOutcome.CANCELLED, None, "MQTT-3.14.4-3")
_C_KEEP_ALIVE = Cause.KEEP_ALIVE
_C_PROTOCOL_ERROR = Cause.PROTOCOL_ERROR
_KEEP_ALIVE_TIMEOUT = ReasonCode.KEEP_ALIVE_TIMEOUT
_PACKET_TOO_LARGE = ReasonCode.PACKET_TOO_LARGE
_RC_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR
_TK_KEEP_ALIVE = TimerKind.KEEP_ALIVE.value
_UNSUPPORTED_PROTOCOL_VERSION = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


class Connections:
    __slots__ = ("config", "conns", "outbox", "timers", "limits", "sessions", "wills", "announce", "recorder",
                 "handlers", "on_connect")

    def __init__(self, config: Config, outbox: Outbox, timers: TimerQueue, limits: Limits,
                 sessions: SessionOwnership, wills: WillKeeper, announce: Announcer, recorder: Recorder) -> None:
        self.config = config
        self.conns: dict[int, Conn] = {}
        self.outbox = outbox
        self.timers = timers
        self.limits = limits
        self.sessions = sessions
        self.wills = wills
        self.announce = announce
        self.recorder = recorder
        # set by the broker: the packet handlers of a CONNECTED connection, by packet type, and the
        # CONNECT handler of a NEW one
        self.handlers: dict[type, Handler] = {}
        self.on_connect: Handler | None = None
        timers.register(TimerKind.KEEP_ALIVE, self._keep_alive_check)
        timers.register(TimerKind.CONNECT, self._connect_timeout)

    # -- opening --------------------------------------------------------------------------------
    def open(self, conn_id: int, now: float, peer: str, sockport: int, cert_username: str | None) -> None:
        limits = self.limits
        limit = limits.max_connections
        if limit and len(self.conns) + limits.pending_connections() >= limit:
            # max_connections counts every open network connection, those still to send CONNECT too;
            # one more is closed at once, before anything is read from it: the limit bounds
            # descriptors and memory, so an extra connection is not kept open to read its CONNECT
            self.limits.hit("max_connections", None, now, "connection from %s closed at accept: "
                            "max_connections (%d) reached", peer, limit)
            self.outbox.close(conn_id, f"max_connections ({limit}) reached")
            return
        conn = Conn(conn_id=conn_id, peer=peer, last_activity=now, sockport=sockport,
                    decoder=Decoder(max_packet_size=self.config.max_packet_size), cert_username=cert_username)
        self.conns[conn_id] = conn
        self.timers.schedule((_CONNECT, conn_id), now + self.config.connect_timeout)

    def accepted(self, conn: Conn, now: float) -> None:
        """Its CONNECT was accepted: no connect timeout any more; the connection ends if nothing
        arrives for 1.5 x Keep Alive (0: never) [MQTT-3.1.2-22]."""
        self.timers.cancel((_CONNECT, conn.conn_id))
        if conn.keep_alive:
            self.timers.schedule((_TK_KEEP_ALIVE, conn.conn_id), now + conn.keep_alive * 1.5)

    # -- packets ---------------------------------------------------------------------------------
    def dispatch(self, conn: Conn, packet: Packet, now: float) -> None:
        if conn.state == AUTHENTICATING:
            # packets sent right after CONNECT (allowed: 3.1.4) wait for its password check, in order.
            # The edge stops reading meanwhile, so few arrive; a bound keeps an embedder safe too
            if len(conn.held) >= MAX_HELD:
                log.warning("connection %s from %s closed: more than %d packets sent while its password "
                            "was being checked", conn.conn_id, conn.peer, MAX_HELD)
                conn.held = None
                self.close(conn, "too many packets before the CONNECT was authenticated")
                return
            conn.held.append(packet)
            return
        if conn.state == NEW:
            if not isinstance(packet, Connect):
                # [MQTT-3.1.0-1] the first packet from the client must be CONNECT
                raise ProtocolError(f"first packet was {type(packet).__name__.upper()}, not CONNECT",
                                    rule="MQTT-3.1.0-1")
            self.on_connect(conn, packet, now)
            return
        handler = self.handlers.get(type(packet))
        if handler is None:
            raise ProtocolError(f"unexpected {type(packet).__name__.upper()} from a client")
        handler(conn, packet, now)

    def run(self, conn: Conn, packets: list[Packet], now: float) -> None:
        """Handle packets in order; the first that breaks the protocol ends the connection."""
        for packet in packets:
            if conn.state == CLOSED:
                break
            try:
                self.dispatch(conn, packet, now)
            except MqttError as err:
                self.protocol_error(conn, err, now)

    def protocol_error(self, conn: Conn, err: MqttError, now: float) -> None:
        if conn.state == AUTHENTICATING:  # after the CONNECT: handled in order, once it is accepted or not
            conn.held.append(err)
            return
        who = conn.client_id or f"<conn {conn.conn_id} from {conn.peer}>"
        log.warning("client_id=%s protocol error 0x%02X: %s", who, err.reason_code, err)
        if err.reason_code == _PACKET_TOO_LARGE and not isinstance(err, TooLargeForClient):
            # above max_packet_size (the decoder's check), not an answer too large for the client
            self.limits.count("max_packet_size")
        if conn.state == NEW:
            self._refuse_malformed_connect(conn, err)
            return
        if conn.state == CONNECTED:
            if conn.protocol_level == PROTOCOL_5 and err.send_disconnect:
                # [MQTT-4.13.1-1] a Malformed Packet or Protocol Error: DISCONNECT with the reason, then close.
                # Only a DISCONNECT reason code [MQTT-3.14.2-1]: a second CONNECT with an unsupported
                # protocol level (0x84, a CONNACK code) is a Protocol Error here (found by fuzzing)
                code = err.reason_code if err.reason_code in DISCONNECT_CODES else _RC_PROTOCOL_ERROR
                self.outbox.send(conn, Disconnect(code, properties=self.outbox.reason(conn, str(err))))
            self.end(conn, now, ConnectionEnded(_C_PROTOCOL_ERROR, f"protocol error 0x{err.reason_code:02X}: {err}",
                                                err.rule, err.reason_code))

    def _refuse_malformed_connect(self, conn: Conn, err: MqttError) -> None:
        """An error in or before the CONNECT: CONNACK with the reason where the client can read one."""
        # for an error inside a CONNECT, the decoder tells the level that CONNECT asked for
        level = err.protocol_level or conn.decoder.protocol_level
        if isinstance(err, UnsupportedProtocolVersion):
            # [MQTT-3.1.2-2] CONNACK 0x84 (3.1.1: return code 0x01), then close
            conn.protocol_level = level if level in (3, 4, 5) else 4
            self.outbox.send(conn, Connack(_UNSUPPORTED_PROTOCOL_VERSION))
        elif level == PROTOCOL_5:
            conn.protocol_level = PROTOCOL_5
            self.outbox.send(conn, Connack(err.reason_code, properties=self.outbox.reason(conn, str(err))))
        self.close(conn, f"protocol error before CONNACK: {err}")

    # -- closing and ending ------------------------------------------------------------------------
    def close(self, conn: Conn, reason: str) -> None:
        if conn.state != CLOSED:
            conn.state = CLOSED
            self.timers.cancel((_TK_KEEP_ALIVE, conn.conn_id))
            self.timers.cancel((_CONNECT, conn.conn_id))
        self.outbox.actions.append(Close(conn.conn_id, reason))

    def lost(self, conn_id: int, ended: ConnectionEnded, now: float) -> None:
        """The socket closed under us."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        if conn.state in (NEW, AUTHENTICATING):  # nothing of it was accepted: no will to publish
            conn.state = CLOSED
            conn.held = None
            self.timers.cancel((_CONNECT, conn_id))
        elif conn.state == CONNECTED:
            # the network connection closed without DISCONNECT [MQTT-3.1.2-8] (3.1.1: [MQTT-3.1.2-8] too)
            self.end(conn, now, ended, send_close=False)

    def end(self, conn: Conn, now: float, ended: ConnectionEnded, *, send_close: bool = True,
            will_cancelled: bool = False) -> None:
        """Close ``conn``; unless the client sent DISCONNECT 0x00 (``ended.normal``), its will follows
        [MQTT-3.1.2-8]. ``will_cancelled``: the DISCONNECT 0x00 discarded a will (for the $SYS event)."""
        if send_close:
            self.close(conn, ended.detail)
        else:
            conn.state = CLOSED
            self.timers.cancel((_TK_KEEP_ALIVE, conn.conn_id))
        # the Conn stays in self.conns (its protocol level encodes what is still queued for it)
        # until the edge reports the socket closed: lost() removes it
        session = conn.session
        conn.session = None
        if session is None or session.conn is not conn:
            return
        session.conn = None
        session.disconnected_at = now
        self.recorder.session(session)
        log.info("disconnect client_id=%s: %s", session.client_id, ended.detail)
        self.announce.offline(session.client_id, now)  # presence first, then the will
        decision: WillDecision | None
        if ended.cause is not _NORMAL:
            decision = self.wills.connection_ended(session, now, ended)
        else:
            decision = _DISCARDED if will_cancelled else None
        self.announce.disconnected(conn, session, now, ended, decision)
        self.sessions.disconnected(session, now, ended)

    # -- timers ----------------------------------------------------------------------------------------
    def _keep_alive_check(self, conn_id: int, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or conn.state != CONNECTED or not conn.keep_alive:
            return
        deadline = conn.last_activity + conn.keep_alive * 1.5
        if now < deadline:
            self.timers.schedule((_TK_KEEP_ALIVE, conn_id), deadline)
            return
        # [MQTT-3.1.2-22] nothing received for 1.5 x Keep Alive: close as if the network failed
        if conn.protocol_level == PROTOCOL_5:
            self.outbox.send(conn, Disconnect(_KEEP_ALIVE_TIMEOUT))
        self.end(conn, now, ConnectionEnded(_C_KEEP_ALIVE, f"keep-alive timeout ({conn.keep_alive}s x 1.5 "
                                                              f"without a packet)", "MQTT-3.1.2-22"))

    def _connect_timeout(self, conn_id: int, now: float) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None and conn.state == NEW:
            self.limits.count("connect_timeout")
            log.info("connection %s from %s closed: no CONNECT within %ss",
                     conn_id, conn.peer, self.config.connect_timeout)
            self.close(conn, "no CONNECT within connect_timeout")
        elif conn is not None and conn.state == AUTHENTICATING:
            # the password check did not answer in time (the edge's threads are all busy):
            # the client is told nothing it could learn from, the connection just closes
            self.limits.count("connect_timeout")
            log.warning("connection %s from %s closed: its password check took more than "
                        "connect_timeout (%ss)", conn_id, conn.peer, self.config.connect_timeout)
            conn.held = None
            self.close(conn, "password check not done within connect_timeout")
