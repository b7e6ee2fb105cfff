"""Packet objects -> bytes, for a given protocol level (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0).

``encode(packet, protocol_level)`` writes any packet type in either direction (the broker
writes server->client packets; tests and a client side write the others).

For 3.1 / 3.1.1 there are no properties (they are dropped), a CONNACK reason code becomes a
Connect Return code (:func:`reason_codes.connack_return_code_v311`), SUBACK codes >= 0x80 are
written as 0x80 (Failure), an UNSUBACK has no payload, PUBACK / PUBREC / PUBREL / PUBCOMP carry
only the packet identifier, DISCONNECT has no body and AUTH does not exist (ValueError).
MQTT 3.1 CONNECT uses the protocol name "MQIsdp" and its CONNACK has no Session Present bit.
A CONNECT's protocol name and level byte follow the ``protocol_level`` argument ("MQIsdp"/3,
"MQTT"/4, "MQTT"/5); its ``protocol_name`` / ``protocol_level`` fields are not consulted.

For 5.0 the short forms are used whenever the spec allows them: PUBACK / PUBREC / PUBREL /
PUBCOMP with reason 0x00 and no properties have Remaining Length 2 (3.4.2.1), with another
reason and no properties 3 (3.4.2.2.1); DISCONNECT 0 or 1 (3.14.2.1, 3.14.2.2.1); AUTH with
reason 0x00 and no properties 0 (3.15.2.1).

The encoder trusts the core for the semantics (it does not re-check topic names or QoS
rules). A CONNACK with a non-zero reason code is always written with Session Present 0
[MQTT-3.2.2-6]. Values the wire format cannot carry (a string over 65,535 bytes, a QoS>0
PUBLISH without a packet identifier, a 3.1.1 CONNECT with a password but no user name
[MQTT-3.1.2-22], an unknown property name) raise ValueError.
"""

from __future__ import annotations

from .packets import PROTOCOL_5, Packet
from .primitives import (
    UTF8_MAX,
    encode_binary,
    encode_utf8,
    encode_varint,
    pack_u16,
)
from .properties import WILL, encode_properties
from .reason_codes import connack_return_code_v311


def encode(packet: Packet, protocol_level: int) -> bytes:
    """The bytes of ``packet`` for a connection speaking ``protocol_level``."""
    return _ENCODERS[packet.type](packet, protocol_level)


def _fixed_header(first: int, remaining_length: int) -> bytes:
    if remaining_length < 128:
        return bytes((first, remaining_length))
    return bytes((first,)) + encode_varint(remaining_length)


def _encode_publish(p, level: int) -> bytes:
    # The hot path: no dict building, no per-call allocation beyond the output.
    topic = p.topic.encode()
    tlen = len(topic)
    if tlen > UTF8_MAX:
        raise ValueError(f"PUBLISH topic name is {tlen} bytes long, the maximum is {UTF8_MAX}")
    qos = p.qos
    first = 0x30 | (qos << 1)
    if p.retain:
        first |= 0x01
    if p.dup:
        first |= 0x08
    if level == PROTOCOL_5:
        props = p.properties
        vh_props = encode_properties(props, "PUBLISH") if props else b"\x00"
    else:
        vh_props = b""
    if qos:
        packet_id = p.packet_id
        if not packet_id:
            raise ValueError(f"PUBLISH with QoS {qos} needs a non-zero packet_id, got {packet_id!r}")
        vh = pack_u16(tlen) + topic + pack_u16(packet_id) + vh_props
    else:
        vh = pack_u16(tlen) + topic + vh_props
    payload = p.payload
    rl = len(vh) + len(payload)
    if rl < 128:
        return bytes((first, rl)) + vh + payload
    return bytes((first,)) + encode_varint(rl) + vh + payload


def _encode_connect(p, level: int) -> bytes:
    v5 = level == PROTOCOL_5
    flags = 0x02 if p.clean_start else 0
    will = p.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3)
        if will.retain:
            flags |= 0x20
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        if p.username is None and not v5:
            raise ValueError("a 3.1.1 CONNECT cannot carry a password without a user name [MQTT-3.1.2-22]")
        flags |= 0x40
    parts = [
        b"\x00\x06MQIsdp" if level == 3 else b"\x00\x04MQTT",
        bytes((level, flags)),
        pack_u16(p.keep_alive),
    ]
    if v5:
        parts.append(encode_properties(p.properties, "CONNECT"))
    parts.append(encode_utf8(p.client_id))
    if will is not None:
        if v5:
            parts.append(encode_properties(will.properties, WILL))
        parts.append(encode_utf8(will.topic))
        parts.append(encode_binary(will.payload))
    if p.username is not None:
        parts.append(encode_utf8(p.username))
    if p.password is not None:
        parts.append(encode_binary(p.password))
    body = b"".join(parts)
    return _fixed_header(0x10, len(body)) + body


def _encode_connack(p, level: int) -> bytes:
    code = p.reason_code
    # No Session Present with a refusal [MQTT-3.2.2-6]; MQTT 3.1 has no such bit at all.
    session_present = 1 if p.session_present and not code and level != 3 else 0
    if level != PROTOCOL_5:
        return bytes((0x20, 0x02, session_present, connack_return_code_v311(code)))
    body = bytes((session_present, code)) + encode_properties(p.properties, "CONNACK")
    return _fixed_header(0x20, len(body)) + body


def _make_ack_encoder(first: int, kind: str):
    short = bytes((first, 0x02))
    with_code = bytes((first, 0x03))

    def enc(p, level: int) -> bytes:
        packet_id = pack_u16(p.packet_id)
        code = p.reason_code
        props = p.properties
        if level != PROTOCOL_5 or (not code and not props):
            return short + packet_id
        if not props:
            return with_code + packet_id + bytes((code,))
        body = packet_id + bytes((code,)) + encode_properties(props, kind)
        return _fixed_header(first, len(body)) + body

    enc.__name__ = f"_encode_{kind.lower()}"
    return enc


def _encode_subscribe(p, level: int) -> bytes:
    v5 = level == PROTOCOL_5
    parts = [pack_u16(p.packet_id)]
    if v5:
        parts.append(encode_properties(p.properties, "SUBSCRIBE"))
    for s in p.subscriptions:
        parts.append(encode_utf8(s.topic_filter))
        if v5:
            opts = s.qos | (s.retain_handling << 4)
            if s.no_local:
                opts |= 0x04
            if s.retain_as_published:
                opts |= 0x08
            parts.append(bytes((opts,)))
        else:
            parts.append(bytes((s.qos,)))
    body = b"".join(parts)
    return _fixed_header(0x82, len(body)) + body


def _encode_suback(p, level: int) -> bytes:
    if level == PROTOCOL_5:
        body = pack_u16(p.packet_id) + encode_properties(p.properties, "SUBACK") + bytes(p.reason_codes)
    else:
        # 3.1.1 knows granted QoS 0-2 and 0x80 Failure only [MQTT-3.9.3-2]
        body = pack_u16(p.packet_id) + bytes(0x80 if c >= 0x80 else c for c in p.reason_codes)
    return _fixed_header(0x90, len(body)) + body


def _encode_unsubscribe(p, level: int) -> bytes:
    parts = [pack_u16(p.packet_id)]
    if level == PROTOCOL_5:
        parts.append(encode_properties(p.properties, "UNSUBSCRIBE"))
    parts.extend(encode_utf8(f) for f in p.topic_filters)
    body = b"".join(parts)
    return _fixed_header(0xA2, len(body)) + body


def _encode_unsuback(p, level: int) -> bytes:
    if level != PROTOCOL_5:
        return b"\xb0\x02" + pack_u16(p.packet_id)
    body = pack_u16(p.packet_id) + encode_properties(p.properties, "UNSUBACK") + bytes(p.reason_codes)
    return _fixed_header(0xB0, len(body)) + body


def _encode_pingreq(p, level: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(p, level: int) -> bytes:
    return b"\xd0\x00"


def _encode_disconnect(p, level: int) -> bytes:
    code = p.reason_code
    props = p.properties
    if level != PROTOCOL_5 or (not code and not props):
        return b"\xe0\x00"
    if not props:
        return bytes((0xE0, 0x01, code))
    body = bytes((code,)) + encode_properties(props, "DISCONNECT")
    return _fixed_header(0xE0, len(body)) + body


def _encode_auth(p, level: int) -> bytes:
    if level != PROTOCOL_5:
        raise ValueError(f"AUTH does not exist before MQTT 5.0 (protocol level {level})")
    code = p.reason_code
    props = p.properties
    if not code and not props:
        return b"\xf0\x00"
    body = bytes((code,)) + encode_properties(props, "AUTH")
    return _fixed_header(0xF0, len(body)) + body


def _unknown(p, level: int) -> bytes:  # pragma: no cover
    raise ValueError(f"cannot encode {p!r}")


_ENCODERS = (
    _unknown,
    _encode_connect,
    _encode_connack,
    _encode_publish,
    _make_ack_encoder(0x40, "PUBACK"),
    _make_ack_encoder(0x50, "PUBREC"),
    _make_ack_encoder(0x62, "PUBREL"),
    _make_ack_encoder(0x70, "PUBCOMP"),
    _encode_subscribe,
    _encode_suback,
    _encode_unsubscribe,
    _encode_unsuback,
    _encode_pingreq,
    _encode_pingresp,
    _encode_disconnect,
    _encode_auth,
)
