"""What the core has decided to do, in order, until the edge takes it: the actions of one call."""

from __future__ import annotations

from ..codec.encoder import encode
from ..codec.packets import Packet, Publish
from .actions import Action, Authenticate, Close, Send
from .sessions import Conn

_DROPPABLE = ("reason_string", "user_property")


class Outbox:
    __slots__ = ("actions",)

    def __init__(self) -> None:
        # appended to directly on the delivery path (core/delivery.py), through send() elsewhere
        self.actions: list[Action] = []

    def take(self) -> list[Action]:
        out = self.actions
        self.actions = []
        return out

    def send(self, conn: Conn, packet: Packet) -> None:
        """Send a packet the broker generated itself (not a PUBLISH: see core/delivery.py)."""
        if conn.maximum_packet_size is not None and type(packet) is not Publish:
            props = getattr(packet, "properties", None)
            if props and ("reason_string" in props or "user_property" in props) and \
                    len(encode(packet, conn.protocol_level)) > conn.maximum_packet_size:
                # no Reason String / User Property that would take the packet beyond the client's
                # Maximum Packet Size [MQTT-3.1.2-24] [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.14.2-3]
                packet.properties = {k: v for k, v in props.items() if k not in _DROPPABLE}
        self.actions.append(Send(conn.conn_id, packet))

    def close(self, conn_id: int, reason: str) -> None:
        self.actions.append(Close(conn_id, reason))

    def authenticate(self, conn_id: int, username: str, password: bytes | None) -> None:
        self.actions.append(Authenticate(conn_id, username, password))

    @staticmethod
    def reason(conn: Conn, text: str) -> dict:
        """The Reason String property, if the client wants problem information."""
        return {"reason_string": text[:200]} if conn.request_problem_information else {}
