"""What the core has decided to do, in order, until the edge takes it: the actions of one call."""

from __future__ import annotations

from ..codec.packets import Packet, Publish
from .actions import Action, Authenticate, Close, Send
from .fit import fit, not_sent
from .sessions import Conn


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
        """Send a packet the broker generated itself (not a PUBLISH: see core/delivery.py). Raises
        fit.TooLargeForClient for an answer the client waits for that cannot fit its Maximum Packet Size."""
        maximum = conn.maximum_packet_size
        if maximum is not None and type(packet) is not Publish:
            # never above the client's Maximum Packet Size [MQTT-3.1.2-24]: without Reason String / User
            # Property if that fits [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.14.2-3] ..., else not at all
            fitted = fit(packet, conn.protocol_level, maximum)
            if fitted is None:
                not_sent(conn.client_id or f"<conn {conn.conn_id}>", packet, conn.protocol_level, maximum)
                return  # a CONNACK or DISCONNECT: the connection closes next (an acknowledgement raised)
            packet = fitted
        self.actions.append(Send(conn.conn_id, packet))

    def close(self, conn_id: int, reason: str) -> None:
        self.actions.append(Close(conn_id, reason))

    def authenticate(self, conn_id: int, username: str, password: bytes | None) -> None:
        self.actions.append(Authenticate(conn_id, username, password))

    @staticmethod
    def reason(conn: Conn, text: str) -> dict:
        """The Reason String property, if the client wants problem information."""
        return {"reason_string": text[:200]} if conn.request_problem_information else {}
