"""PINGREQ, DISCONNECT, AUTH, and a second CONNECT: the packets that keep a connection alive or end it."""

from __future__ import annotations

from ..codec.packets import PROTOCOL_5, Auth, Connect, Disconnect, Pingreq, Pingresp
from ..codec.reason_codes import ReasonCode
from ..config import Config
from ..errors import ProtocolError
from .causes import Cause, ConnectionEnded
from .connection import Connections
from .outbox import Outbox
from .persistence import Recorder
from .sessions import Conn
from .will import WillKeeper

_NORMAL = ConnectionEnded(Cause.NORMAL, "client sent DISCONNECT 0x00", "MQTT-3.14.4-3", 0x00)
_WITH_WILL = ConnectionEnded(Cause.DISCONNECT_WITH_WILL, "client sent DISCONNECT 0x04 (disconnect with will message)",
                             "MQTT-3.14.2-1", 0x04)

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_DISCONNECT_WITH_WILL_MESSAGE = ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
_SUCCESS = ReasonCode.SUCCESS


class DisconnectHandler:
    __slots__ = ("config", "outbox", "connections", "wills", "recorder")

    def __init__(self, config: Config, outbox: Outbox, connections: Connections, wills: WillKeeper,
                 recorder: Recorder) -> None:
        self.config = config
        self.outbox = outbox
        self.connections = connections
        self.wills = wills
        self.recorder = recorder

    def on_pingreq(self, conn: Conn, p: Pingreq, now: float) -> None:
        self.outbox.send(conn, Pingresp())  # [MQTT-3.12.4-1]

    def on_disconnect(self, conn: Conn, p: Disconnect, now: float) -> None:
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
        if code == _SUCCESS:
            # [MQTT-3.14.4-3] normal disconnection: the will is discarded, never published
            cancelled = self.wills.discard(session, now, "DISCONNECT with reason 0x00 (normal disconnection)",
                                           "MQTT-3.14.4-3")
            self.connections.end(conn, now, _NORMAL, will_cancelled=cancelled)
        elif code == _DISCONNECT_WITH_WILL_MESSAGE:
            self.connections.end(conn, now, _WITH_WILL)
        else:
            # any other reason code leaves the will in place: it is published as for a lost connection
            self.connections.end(conn, now, ConnectionEnded(Cause.DISCONNECT_ERROR, f"client sent DISCONNECT 0x{code:02X}",
                                                            "MQTT-3.1.2-8", code))

    def on_auth(self, conn: Conn, p: Auth, now: float) -> None:
        # no Authentication Method at CONNECT: the client must not send AUTH [MQTT-4.12.0-7]
        raise ProtocolError("AUTH received but no enhanced authentication is in progress", rule="MQTT-4.12.0-7")

    def on_connect_again(self, conn: Conn, p: Connect, now: float) -> None:
        # [MQTT-3.1.0-2] a second CONNECT is a Protocol Error: close the connection. No DISCONNECT
        # first (allowed either way by 4.13.1): like mosquitto and the Paho reference broker, since a
        # client that sent a second CONNECT may not expect a DISCONNECT (the Paho interoperability
        # suite's client can hang reading one)
        raise ProtocolError("second CONNECT on one connection", rule="MQTT-3.1.0-2", send_disconnect=False)
