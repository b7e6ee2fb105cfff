"""MQTT 5.0 properties (section 2.2.2, Table 2-4).

In packets, properties are a dict keyed by the snake_case of the spec name. Values are ``int``
for Byte / Two Byte / Four Byte / Variable Byte Integer properties, ``str`` for UTF-8 strings,
``bytes`` for Binary Data. ``user_property`` is a list of ``(name, value)`` pairs in wire order;
``subscription_identifier`` is a ``list[int]`` in a PUBLISH (a Server may send several, 3.3.4)
and a single ``int`` in a SUBSCRIBE.

Packet kinds are the packet type names ("CONNECT", "PUBLISH", ...) plus "WILL" for the Will
Properties of a CONNECT.

Errors on decoding:

- an identifier that is not in Table 2-4: Malformed Packet;
- an identifier not valid for the packet: Malformed Packet. Section 2.2.2.2: "A Control Packet
  which contains an Identifier which is not valid for its packet type, or contains a value not of
  the specified data type, is a Malformed Packet." (no requirement id);
- a property other than User Property (and Subscription Identifier in PUBLISH) present twice:
  Protocol Error, as each property's section says ("It is a Protocol Error to include ... more
  than once");
- values the spec rules out ("It is a Protocol Error ... to have a value other than 0 or 1",
  "... for it to have the value 0"): Protocol Error;
- a Property Length that runs past the end of the packet, or a value that runs past the end of
  the properties: Malformed Packet.
"""

from __future__ import annotations

from typing import NamedTuple

from lastwill.errors import MalformedPacket, ProtocolError

from .primitives import (
    encode_binary,
    encode_utf8,
    encode_varint,
    pack_u16,
    pack_u32,
    read_binary,
    read_u16,
    read_u32,
    read_utf8,
    read_varint,
)

# Data types (1.5)
BYTE = "Byte"
U16 = "Two Byte Integer"
U32 = "Four Byte Integer"
VARINT = "Variable Byte Integer"
UTF8 = "UTF-8 Encoded String"
BINARY = "Binary Data"
PAIR = "UTF-8 String Pair"

WILL = "WILL"

KINDS = (
    "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE",
    "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH", WILL,
)


class PropertyDef(NamedTuple):
    ident: int
    name: str
    type: str
    kinds: frozenset[str]


def _p(ident: int, name: str, type_: str, kinds: str) -> PropertyDef:
    return PropertyDef(ident, name, type_, frozenset(kinds.split()))


_ACKS = "PUBACK PUBREC PUBREL PUBCOMP"

# Table 2-4 - Properties
PROPERTIES: dict[int, PropertyDef] = {
    d.ident: d
    for d in (
        _p(0x01, "payload_format_indicator", BYTE, "PUBLISH WILL"),
        _p(0x02, "message_expiry_interval", U32, "PUBLISH WILL"),
        _p(0x03, "content_type", UTF8, "PUBLISH WILL"),
        _p(0x08, "response_topic", UTF8, "PUBLISH WILL"),
        _p(0x09, "correlation_data", BINARY, "PUBLISH WILL"),
        _p(0x0B, "subscription_identifier", VARINT, "PUBLISH SUBSCRIBE"),
        _p(0x11, "session_expiry_interval", U32, "CONNECT CONNACK DISCONNECT"),
        _p(0x12, "assigned_client_identifier", UTF8, "CONNACK"),
        _p(0x13, "server_keep_alive", U16, "CONNACK"),
        _p(0x15, "authentication_method", UTF8, "CONNECT CONNACK AUTH"),
        _p(0x16, "authentication_data", BINARY, "CONNECT CONNACK AUTH"),
        _p(0x17, "request_problem_information", BYTE, "CONNECT"),
        _p(0x18, "will_delay_interval", U32, "WILL"),
        _p(0x19, "request_response_information", BYTE, "CONNECT"),
        _p(0x1A, "response_information", UTF8, "CONNACK"),
        _p(0x1C, "server_reference", UTF8, "CONNACK DISCONNECT"),
        _p(0x1F, "reason_string", UTF8, f"CONNACK {_ACKS} SUBACK UNSUBACK DISCONNECT AUTH"),
        _p(0x21, "receive_maximum", U16, "CONNECT CONNACK"),
        _p(0x22, "topic_alias_maximum", U16, "CONNECT CONNACK"),
        _p(0x23, "topic_alias", U16, "PUBLISH"),
        _p(0x24, "maximum_qos", BYTE, "CONNACK"),
        _p(0x25, "retain_available", BYTE, "CONNACK"),
        _p(
            0x26, "user_property", PAIR,
            f"CONNECT CONNACK PUBLISH WILL {_ACKS} SUBSCRIBE SUBACK UNSUBSCRIBE UNSUBACK DISCONNECT AUTH",
        ),
        _p(0x27, "maximum_packet_size", U32, "CONNECT CONNACK"),
        _p(0x28, "wildcard_subscription_available", BYTE, "CONNACK"),
        _p(0x29, "subscription_identifier_available", BYTE, "CONNACK"),
        _p(0x2A, "shared_subscription_available", BYTE, "CONNACK"),
    )
}

BY_NAME: dict[str, PropertyDef] = {d.name: d for d in PROPERTIES.values()}

# kind -> {identifier -> definition} for the properties valid in that kind of packet
ALLOWED: dict[str, dict[int, PropertyDef]] = {
    kind: {i: d for i, d in PROPERTIES.items() if kind in d.kinds} for kind in KINDS
}

# Byte properties limited to 0/1, with the section that says so.
_ZERO_OR_ONE = {
    "payload_format_indicator": "3.3.2.3.2",
    "request_problem_information": "3.1.2.11.7",
    "request_response_information": "3.1.2.11.6",
    "maximum_qos": "3.2.2.3.4",
    "retain_available": "3.2.2.3.5",
    "wildcard_subscription_available": "3.2.2.3.11",
    "subscription_identifier_available": "3.2.2.3.12",
    "shared_subscription_available": "3.2.2.3.13",
}
# Integer properties for which 0 is a Protocol Error: name -> (section, rule id or None).
_NON_ZERO = {
    "receive_maximum": ("3.1.2.11.3", None),
    "maximum_packet_size": ("3.1.2.11.4", None),
    "subscription_identifier": ("3.3.2.3.8 / 3.8.2.1.2", None),
    "topic_alias": ("3.3.2.3.4", "MQTT-3.3.2-8"),
}


def _check_value(name: str, value: int, kind: str) -> None:
    if name in _ZERO_OR_ONE:
        if value > 1:
            raise ProtocolError(
                f"{_label(kind)} property {name} is {value}; it must be 0 or 1 ({_ZERO_OR_ONE[name]})"
            )
    elif value == 0 and name in _NON_ZERO:
        section, rule = _NON_ZERO[name]
        # topic_alias: [MQTT-3.3.2-8]
        raise ProtocolError(f"{_label(kind)} property {name} is 0, which is not allowed ({section})", rule=rule)


def _label(kind: str) -> str:
    return "CONNECT Will Properties" if kind == WILL else kind


# Field names for error messages, built once rather than per property read.
_WHAT = {
    kind: {i: f"{_label(kind)} property {d.name}" for i, d in allowed.items()}
    for kind, allowed in ALLOWED.items()
}
_LENGTH_WHAT = {kind: f"{_label(kind)} property length" for kind in KINDS}


def read_properties(buf, off: int, kind: str) -> tuple[dict, int]:
    """Read a Property Length and the properties after it (2.2.2). Returns (dict, next offset).

    ``kind`` is the packet type name, or "WILL" for the Will Properties of a CONNECT.
    """
    plen, off = read_varint(buf, off, _LENGTH_WHAT[kind])
    if plen == 0:
        return {}, off
    end = off + plen
    if end > len(buf):
        raise MalformedPacket(
            f"{_label(kind)} property length {plen} runs {end - len(buf)} byte(s) past the end of "
            f"the packet"
        )
    view = buf[:end]  # values must not run past the properties
    allowed = ALLOWED[kind]
    whats = _WHAT[kind]
    props: dict = {}
    try:
        while off < end:
            # The identifier is a Variable Byte Integer, but every defined one is below 128 (2.2.2.2
            # non-normative comment): a byte with the continuation bit starts an unknown one.
            ident = view[off]
            off += 1
            d = allowed.get(ident)
            if d is None:
                known = PROPERTIES.get(ident)
                if known is None:
                    raise MalformedPacket(f"{_label(kind)}: unknown property identifier 0x{ident:02X}")
                raise MalformedPacket(
                    f"{_label(kind)}: property {known.name} (0x{ident:02X}) is not valid in "
                    f"{'Will Properties' if kind == WILL else 'a ' + kind} (2.2.2.2)"
                )
            name = d.name
            what = whats[ident]
            t = d.type
            if t == UTF8:
                value, off = read_utf8(view, off, what)
            elif t == BYTE:
                if off >= end:
                    raise MalformedPacket(f"{what}: the properties end before its value")
                value = view[off]
                off += 1
                _check_value(name, value, kind)
            elif t == U32:
                value, off = read_u32(view, off, what)
                if value == 0 and name == "maximum_packet_size":
                    _check_value(name, value, kind)
            elif t == U16:
                value, off = read_u16(view, off, what)
                if value == 0:
                    _check_value(name, value, kind)
            elif t == PAIR:
                k, off = read_utf8(view, off, f"{what} name")  # [MQTT-1.5.7-1]
                v, off = read_utf8(view, off, f"{what} value")  # [MQTT-1.5.7-1]
                user = props.get(name)
                if user is None:
                    props[name] = [(k, v)]
                else:
                    user.append((k, v))
                continue
            elif t == BINARY:
                value, off = read_binary(view, off, what)
            else:  # VARINT: only subscription_identifier
                value, off = read_varint(view, off, what)
                if value == 0:
                    _check_value(name, value, kind)
                if kind == "PUBLISH":
                    ids = props.get(name)
                    if ids is None:
                        props[name] = [value]
                    else:
                        ids.append(value)  # one per matching subscription (3.3.2.3.8)
                    continue
            if name in props:
                raise ProtocolError(
                    f"{_label(kind)}: property {name} appears more than once (it is a Protocol "
                    f"Error to include the same property more than once)"
                )
            props[name] = value
    except MalformedPacket as exc:
        if exc.rule is None and end < len(buf) and "too early" in str(exc):
            raise MalformedPacket(
                f"{exc.args[0]}: the value runs past the property length of {plen}"
            ) from None
        raise
    return props, end


def encode_properties(props: dict, kind: str | None = None) -> bytes:
    """Property Length followed by the properties, in dict order.

    ``user_property`` pairs and ``subscription_identifier`` lists are written in list order.
    With ``kind``, a property not valid for that packet raises ValueError (a caller bug).
    """
    if not props:
        return b"\x00"
    out = []
    for name, value in props.items():
        d = BY_NAME.get(name)
        if d is None:
            raise ValueError(f"unknown property {name!r}")
        if kind is not None and kind not in d.kinds:
            raise ValueError(f"property {name} is not valid in {kind}")
        ident = _IDENT_BYTES[d.ident]
        t = d.type
        if t == PAIR:
            for k, v in value:
                out.append(ident)
                out.append(encode_utf8(k))
                out.append(encode_utf8(v))
        elif t == UTF8:
            out.append(ident)
            out.append(encode_utf8(value))
        elif t == BYTE:
            out.append(ident)
            out.append(bytes((value,)))
        elif t == U32:
            out.append(ident)
            out.append(pack_u32(value))
        elif t == U16:
            out.append(ident)
            out.append(pack_u16(value))
        elif t == BINARY:
            out.append(ident)
            out.append(encode_binary(value))
        else:  # VARINT
            for v in value if isinstance(value, (list, tuple)) else (value,):
                out.append(ident)
                out.append(encode_varint(v))
    body = b"".join(out)
    return encode_varint(len(body)) + body


# All identifiers are below 128, so their Variable Byte Integer encoding is one byte.
_IDENT_BYTES = {i: bytes((i,)) for i in PROPERTIES}
