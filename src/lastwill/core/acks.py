"""Acknowledgements from a client: PUBACK, PUBREC, PUBCOMP for what the server sent (4.3.2, 4.3.3), and
PUBREL for a QoS 2 message the client sent (the server answers PUBCOMP)."""

from __future__ import annotations

from ..codec.packets import PROTOCOL_5, Puback, Pubcomp, Pubrec, Pubrel
from ..codec.reason_codes import ReasonCode
from ..errors import ProtocolError
from .delivery import Deliverer
from .outbox import Outbox
from .persistence import Recorder
from .sessions import AWAIT_PUBACK, AWAIT_PUBCOMP, AckState, Conn


def _wrong_ack(conn: Conn, kind: str, packet_id: int, state: AckState) -> ProtocolError:
    """A packet identifier in flight acknowledged with another kind than the one it awaits (``state``):
    a protocol violation. MQTT 5: DISCONNECT 0x82 Protocol Error, then close [MQTT-4.13.1-1]; 3.1.1:
    close [MQTT-4.8.0-1]. Not a normal disconnect: the will is published [MQTT-3.1.2-8]."""
    v5 = conn.protocol_level == PROTOCOL_5
    return ProtocolError(f"{kind} for packet id {packet_id}, which awaits {state.value.upper()}",
                         rule="MQTT-4.13.1-1" if v5 else "MQTT-4.8.0-1")


class AckHandler:
    __slots__ = ("outbox", "recorder", "deliverer")

    def __init__(self, outbox: Outbox, recorder: Recorder, deliverer: Deliverer) -> None:
        self.outbox = outbox
        self.recorder = recorder
        self.deliverer = deliverer

    def on_puback(self, conn: Conn, p: Puback, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is not None and f.state == AWAIT_PUBACK:
            session.drop_inflight(p.packet_id)
            if conn.resend:
                conn.resend.pop(p.packet_id, None)  # acknowledged before it was re-sent
            self.recorder.delivery_done(session, f.delivery)
            if session.queue or conn.resend:
                self.deliverer.pump(session, now)
        elif f is not None:  # a QoS 2 message (unknown ids are ignored: a duplicate, a resumed session)
            raise _wrong_ack(conn, "PUBACK", p.packet_id, f.state)

    def on_pubrec(self, conn: Conn, p: Pubrec, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is None:  # not in flight (a duplicate, a resumed session): PUBREL all the same
            if conn.protocol_level == PROTOCOL_5:
                self.outbox.send(conn, Pubrel(p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            else:
                self.outbox.send(conn, Pubrel(p.packet_id))
            return
        if f.state == AWAIT_PUBACK:  # a QoS 1 message (a repeated PUBREC for PUBCOMP gets PUBREL again)
            raise _wrong_ack(conn, "PUBREC", p.packet_id, f.state)
        if conn.resend:
            conn.resend.pop(p.packet_id, None)  # answered before it was re-sent
        if p.reason_code >= 0x80:  # refused by the receiver: discard, no PUBREL [MQTT-4.3.3-4] [MQTT-4.8.2-6]
            session.drop_inflight(p.packet_id)
            self.recorder.delivery_done(session, f.delivery)
            self.deliverer.pump(session, now)
            return
        f.state = AWAIT_PUBCOMP
        if f.delivery.seq or f.delivery.message.ref is not None:  # (stored, or in the cluster's engine)
            self.recorder.delivery(session, f.delivery, p.packet_id, AWAIT_PUBCOMP)
        self.outbox.send(conn, Pubrel(p.packet_id))

    def on_pubcomp(self, conn: Conn, p: Pubcomp, now: float) -> None:
        session = conn.session
        f = session.inflight.get(p.packet_id)
        if f is not None and f.state == AWAIT_PUBCOMP:
            session.drop_inflight(p.packet_id)
            self.recorder.delivery_done(session, f.delivery)
            if session.queue or conn.resend:
                self.deliverer.pump(session, now)
        elif f is not None:  # QoS 1, or QoS 2 before PUBREL (unknown ids are ignored)
            raise _wrong_ack(conn, "PUBCOMP", p.packet_id, f.state)

    def on_pubrel(self, conn: Conn, p: Pubrel, now: float) -> None:
        session = conn.session
        if p.packet_id in session.awaiting_pubrel:
            session.awaiting_pubrel.discard(p.packet_id)
            self.recorder.session(session)
            self.outbox.send(conn, Pubcomp(p.packet_id))
        elif conn.protocol_level == PROTOCOL_5:
            self.outbox.send(conn, Pubcomp(p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
        else:
            self.outbox.send(conn, Pubcomp(p.packet_id))
