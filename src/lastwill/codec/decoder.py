"""Incremental decoder: bytes from the network -> packet objects.

One :class:`Decoder` per network connection. It buffers partial packets, rejects an oversized
packet as soon as its fixed header is complete, and parses a packet only once all its bytes are
there. Each packet body is parsed through a ``memoryview`` of exactly that packet, with offsets;
no field is sliced out of the buffer twice.

Protocol levels: 3 = MQTT 3.1 ("MQIsdp"), 4 = MQTT 3.1.1, 5 = MQTT 5.0. Levels 3 and 4 are
decoded alike (no properties, 3.1.1 rules), except that MQTT 3.1 allowed the DUP flag on
PUBREL / SUBSCRIBE / UNSUBSCRIBE retransmissions and on QoS 0 PUBLISH, had no Session Present
bit in CONNACK, and reserved packet type 15 like 3.1.1 does.

Errors are :class:`lastwill.errors.MqttError` subclasses with the MQTT 5 reason code and, where a
numbered requirement is the reason, its id in ``rule`` (the 3.1.1 id on a 3.1/3.1.1 connection
where the two differ). Every error raised by :meth:`Decoder.feed` also carries:

- ``packets``: the packets completely decoded from the same ``feed`` call before the bad one;
- ``packet_type``: the :class:`PacketType` of the bad packet, or None if the type is invalid;
- ``protocol_level``: the protocol level in force; for an error inside a CONNECT, the level the
  CONNECT asked for (so the core can pick the CONNACK format, even for an unsupported level).
"""

from __future__ import annotations

from lastwill.errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)

from .packets import (
    PROTOCOL_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from .primitives import VARINT_MAX, read_binary, read_u8, read_u16, read_utf8
from .properties import WILL, read_properties
from .reason_codes import (
    AUTH_CODES,
    CONNACK_CODES,
    CONNACK_FROM_V311,
    DISCONNECT_CODES,
    PUBACK_CODES,
    PUBCOMP_CODES,
    PUBREC_CODES,
    PUBREL_CODES,
    SUBACK_CODES,
    SUBACK_CODES_V311,
    UNSUBACK_CODES,
)

MAX_PACKET_SIZE = VARINT_MAX  # the largest Remaining Length; the protocol's own limit

_NAMES = ("Reserved",) + tuple(t.name for t in PacketType)

# Packet types by direction of flow (2.1.2, Table 2-1)
_FROM_CLIENT = frozenset({1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15})
_FROM_SERVER = frozenset({2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15})

# Required fixed header flags by packet type (Table 2-2); PUBLISH (3) has its own checks.
_FLAGS = (None, 0, 0, None, 0, 0, 0b0010, 0, 0b0010, 0, 0b0010, 0, 0, 0, 0, 0)
_FLAG_RULES = {
    6: "MQTT-3.6.1-1",
    8: "MQTT-3.8.1-1",
    10: "MQTT-3.10.1-1",
    14: "MQTT-3.14.1-1",
    15: "MQTT-3.15.1-1",
}

# Requirement ids that differ between the 5.0 and the 3.1.1 text, for errors raised by the
# version-neutral primitives.
_V311_RULES = {
    "MQTT-1.5.4-1": "MQTT-1.5.3-1",
    "MQTT-1.5.4-2": "MQTT-1.5.3-2",
    "MQTT-1.5.4-3": "MQTT-1.5.3-3",
}


def _rule(level: int | None, v5: str | None, v311: str | None) -> str | None:
    """The requirement id for the connection's protocol version (None: not connected -> 5.0)."""
    return v311 if level == 3 or level == 4 else v5


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


_NO_BYTES = b""  # Decoder._buf when no partial packet is held


class Decoder:
    """Turns a connection's byte stream into packets.

    ``Decoder(max_packet_size=268435455, server_side=True, protocol_level=None)``

    - ``server_side=True`` decodes what a Client sends (CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL,
      PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH); a CONNACK, SUBACK, UNSUBACK or
      PINGRESP is a ProtocolError. ``server_side=False`` decodes what a Server sends and needs
      ``protocol_level``.
    - ``protocol_level`` is None until a CONNECT was decoded; the CONNECT sets it. While it is
      None (server side) the first packet must be a CONNECT [MQTT-3.1.0-1]. The core may set it
      (or pass it to the constructor) to decode a connection whose CONNECT it already handled.
      A second CONNECT is decoded like any packet and leaves the level alone; rejecting it is
      the core's job [MQTT-3.1.0-2].
    - ``max_packet_size`` bounds the packet size, fixed header included (2.1.4). A bigger
      Remaining Length raises PacketTooLarge (0x95) as soon as the fixed header is complete,
      before any of the body is buffered.

    ``feed(data)`` returns every packet completed by ``data``, in order. On the first bad packet
    it raises the MqttError instead; the packets decoded before the bad one in that same call
    are in ``exc.packets`` (they were well-formed and the caller should act on them before
    closing: e.g. a PUBLISH that came before garbage is still a message the Client sent). The
    decoder is then dead: any later ``feed`` raises the same error again, with
    ``exc.packets == []``.
    """

    __slots__ = ("max_packet_size", "server_side", "protocol_level", "_buf", "_need", "_error")

    def __init__(
        self,
        max_packet_size: int = MAX_PACKET_SIZE,
        server_side: bool = True,
        protocol_level: int | None = None,
    ):
        if not server_side and protocol_level is None:
            raise ValueError("a client-side Decoder needs the protocol_level it sent in CONNECT")
        if protocol_level not in (None, 3, 4, 5):
            raise ValueError(f"protocol_level must be 3, 4 or 5, not {protocol_level!r}")
        self.max_packet_size = max_packet_size
        self.server_side = server_side
        self.protocol_level = protocol_level
        # the bytes of an incomplete packet: _NO_BYTES (shared) until one arrives, and again once it is
        # complete, so that an idle connection holds no buffer
        self._buf: bytearray | bytes = _NO_BYTES
        self._need = 0  # bytes the buffered partial packet needs in all; 0 = header incomplete
        self._error: MqttError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        if self._error is not None:
            self._error.packets = []
            raise self._error
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []  # still inside the same packet: nothing to parse yet
            data = bytes(buf)
            self._buf = _NO_BYTES
        elif type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        packets: list[Packet] = []
        if not n:
            return packets
        mv = memoryview(data)
        off = 0
        need = 0
        first = -1
        max_size = self.max_packet_size
        server_side = self.server_side
        level = self.protocol_level
        valid_first = _valid_first_bytes(level, server_side)
        try:
            while off < n:
                first = data[off]
                if not valid_first[first]:
                    _check_first_byte(first, level, server_side)  # raises the precise error
                # Remaining Length (2.1.4): a Variable Byte Integer of at most four bytes
                i = off + 1
                if i >= n:
                    break  # fixed header incomplete
                rl = data[i]
                i += 1
                if rl & 0x80:
                    rl &= 0x7F
                    shift = 7
                    while True:
                        if i >= n:
                            rl = -1
                            break
                        byte = data[i]
                        i += 1
                        rl |= (byte & 0x7F) << shift
                        if not byte & 0x80:
                            if not byte:
                                raise MalformedPacket(
                                    "Remaining Length is not minimally encoded", rule="MQTT-1.5.5-1"
                                )  # [MQTT-1.5.5-1]
                            break
                        shift += 7
                        if shift == 28:
                            raise MalformedPacket("Remaining Length is longer than four bytes")
                    if rl < 0:
                        break  # fixed header incomplete
                need = i - off + rl
                if need > max_size:
                    raise PacketTooLarge(
                        f"{_NAMES[first >> 4]} packet of {need} bytes exceeds the maximum packet "
                        f"size of {max_size} bytes",
                        rule=(
                            ("MQTT-3.2.2-15" if server_side else "MQTT-3.1.2-24")
                            if level is None or level == PROTOCOL_5
                            else None
                        ),
                    )
                end = i + rl
                if end > n:
                    break  # body incomplete
                packet = _PARSERS[first >> 4](first & 0x0F, mv[i:end], level, server_side)
                if level is None:  # that was the CONNECT (the only packet accepted before one)
                    level = self.protocol_level = packet.protocol_level
                    valid_first = _valid_first_bytes(level, server_side)
                packets.append(packet)
                off = end
                need = 0
        except MqttError as exc:
            ptype = first >> 4 if first >= 0 else 0
            exc.packets = packets
            exc.packet_type = PacketType(ptype) if ptype else None
            if exc.protocol_level is None:
                exc.protocol_level = level
            if exc.protocol_level in (3, 4) and exc.rule in _V311_RULES:
                exc.rule = _V311_RULES[exc.rule]
            self._error = exc
            self._buf = _NO_BYTES
            raise
        if off < n:
            self._buf = bytearray(mv[off:])
            self._need = need
        return packets


def _check_first_byte(first: int, level: int | None, server_side: bool) -> None:
    """Validate byte 1 of the fixed header (2.1.2, 2.1.3) as soon as it arrives."""
    ptype = first >> 4
    flags = first & 0x0F
    name = _NAMES[ptype]
    if ptype == 0:
        raise MalformedPacket("packet type 0 is reserved and forbidden (2.1.2)")
    if server_side:
        if level is None and ptype != 1:
            raise ProtocolError(
                f"the first packet from a Client must be CONNECT, not {name}", rule="MQTT-3.1.0-1"
            )  # [MQTT-3.1.0-1]
        if ptype not in _FROM_CLIENT:
            raise ProtocolError(f"{name} flows from Server to Client; a Client must not send it (2.1.2)")
    elif ptype not in _FROM_SERVER:
        raise ProtocolError(f"{name} flows from Client to Server; a Server must not send it (2.1.2)")
    if ptype == 15 and level != PROTOCOL_5:
        raise MalformedPacket("packet type 15 is reserved before MQTT 5.0 (3.1.1 section 2.2.1)")
    if ptype == 3:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MalformedPacket(
                "PUBLISH QoS is 3 (both QoS bits set)", rule="MQTT-3.3.1-4"
            )  # [MQTT-3.3.1-4]
        if flags & 0b1000 and not qos and level != 3:
            raise MalformedPacket(
                "PUBLISH has the DUP flag set with QoS 0", rule="MQTT-3.3.1-2"
            )  # [MQTT-3.3.1-2]
        return
    expected = _FLAGS[ptype]
    if flags != expected:
        # MQTT 3.1 set DUP on retransmitted PUBREL / SUBSCRIBE / UNSUBSCRIBE.
        if level == 3 and expected == 0b0010 and flags == 0b1010:
            return
        raise MalformedPacket(
            f"{name} fixed header flags are 0b{flags:04b}; they are reserved and must be "
            f"0b{expected:04b}",
            rule=_FLAG_RULES.get(ptype) or _rule(level, "MQTT-2.1.3-1", "MQTT-2.2.2-1"),
        )  # [MQTT-2.1.3-1] / 3.1.1 [MQTT-2.2.2-1]


_VALID_FIRST: dict[tuple[int | None, bool], bytes] = {}


def _valid_first_bytes(level: int | None, server_side: bool) -> bytes:
    """For each value of byte 1, 1 if _check_first_byte accepts it (computed once per kind)."""
    table = _VALID_FIRST.get((level, server_side))
    if table is None:
        ok = bytearray(256)
        for first in range(256):
            try:
                _check_first_byte(first, level, server_side)
            except MqttError:
                continue
            ok[first] = 1
        table = _VALID_FIRST[(level, server_side)] = bytes(ok)
    return table


# ---------------------------------------------------------------------------------------------
# Packet bodies. Each parser gets (fixed header flags, memoryview of the body, protocol level,
# server_side) and returns the packet. len(body) is the Remaining Length.


def _no_trailing(kind: str, body, off: int) -> None:
    if off != len(body):
        raise MalformedPacket(f"{kind} has {len(body) - off} unexpected byte(s) at its end")


def _parse_connect(flags: int, b, _level, server_side: bool) -> Connect:
    name_len, off = read_u16(b, 0, "CONNECT protocol name length")
    end = off + name_len
    if end > len(b):
        raise MalformedPacket(f"CONNECT protocol name: packet ends {end - len(b)} byte(s) too early")
    raw_name = bytes(b[off:end])
    if raw_name == b"MQTT":
        protocol_name = "MQTT"
    elif raw_name == b"MQIsdp":
        protocol_name = "MQIsdp"
    else:
        raise ProtocolError(
            f"CONNECT protocol name {raw_name[:20]!r} is not 'MQTT' (nor 'MQIsdp' of MQTT 3.1)",
            rule="MQTT-3.1.2-1",
        )  # [MQTT-3.1.2-1]
    level, off = read_u8(b, end, "CONNECT protocol level")
    if not (level == 3 if protocol_name == "MQIsdp" else level in (4, 5)):
        exc = UnsupportedProtocolVersion(
            f"CONNECT protocol level {level} with protocol name {protocol_name!r} is not "
            f"supported (3 with 'MQIsdp', 4 or 5 with 'MQTT')",
            rule="MQTT-3.1.2-2",
        )  # [MQTT-3.1.2-2]
        exc.protocol_level = level
        raise exc
    try:
        return _parse_connect_rest(b, off, level, protocol_name)
    except MqttError as exc:
        exc.protocol_level = level
        raise


def _need_field(b, off: int, what: str, rule: str | None) -> None:
    if off >= len(b):
        raise MalformedPacket(f"CONNECT flags announce a {what} but the payload ends before it", rule=rule)


def _parse_connect_rest(b, off: int, level: int, protocol_name: str) -> Connect:
    v5 = level == PROTOCOL_5
    cf, off = read_u8(b, off, "CONNECT flags")
    if cf & 0x01:
        raise MalformedPacket(
            "CONNECT reserved flag (bit 0) is set", rule="MQTT-3.1.2-3"
        )  # [MQTT-3.1.2-3]
    will_flag = cf & 0x04
    will_qos = (cf >> 3) & 0x03
    will_retain = bool(cf & 0x20)
    has_password = cf & 0x40
    has_username = cf & 0x80
    if will_flag:
        if will_qos == 3:
            raise MalformedPacket(
                "CONNECT will QoS is 3", rule=_rule(level, "MQTT-3.1.2-12", "MQTT-3.1.2-14")
            )  # [MQTT-3.1.2-12] / 3.1.1 [MQTT-3.1.2-14]
    else:
        if will_qos:
            raise MalformedPacket(
                f"CONNECT will QoS is {will_qos} but the will flag is 0",
                rule=_rule(level, "MQTT-3.1.2-11", "MQTT-3.1.2-13"),
            )  # [MQTT-3.1.2-11] / 3.1.1 [MQTT-3.1.2-13]
        if will_retain:
            raise MalformedPacket(
                "CONNECT will retain is 1 but the will flag is 0",
                rule=_rule(level, "MQTT-3.1.2-13", "MQTT-3.1.2-15"),
            )  # [MQTT-3.1.2-13] / 3.1.1 [MQTT-3.1.2-15]
    if has_password and not has_username and not v5:
        # 5.0 allows a password without a user name (3.1.2.9); 3.1.1 does not.
        raise MalformedPacket(
            "CONNECT password flag is 1 but the user name flag is 0", rule="MQTT-3.1.2-22"
        )  # 3.1.1 [MQTT-3.1.2-22]
    keep_alive, off = read_u16(b, off, "CONNECT keep alive")
    props: dict = {}
    if v5:
        props, off = read_properties(b, off, "CONNECT")
        if "authentication_data" in props and "authentication_method" not in props:
            raise ProtocolError(
                "CONNECT has authentication_data without authentication_method (3.1.2.11.10)"
            )
    # Payload, in the order Client Identifier, Will Properties, Will Topic, Will Payload,
    # User Name, Password [MQTT-3.1.3-1]
    client_id, off = read_utf8(b, off, "CONNECT client identifier")  # [MQTT-3.1.3-4]
    will = None
    if will_flag:
        rule = "MQTT-3.1.2-9"  # the same id in 3.1.1
        _need_field(b, off, "will message", rule)  # [MQTT-3.1.2-9]
        will_props: dict = {}
        if v5:
            will_props, off = read_properties(b, off, WILL)
            _check_response_topic(will_props, "CONNECT will")
        _need_field(b, off, "will topic", rule)
        will_topic, off = read_utf8(b, off, "CONNECT will topic")  # [MQTT-3.1.3-11] / 3.1.1 [MQTT-3.1.3-10]
        _need_field(b, off, "will payload", rule)
        will_payload, off = read_binary(b, off, "CONNECT will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    if has_username:
        _need_field(b, off, "user name", _rule(level, "MQTT-3.1.2-17", "MQTT-3.1.2-19"))
        username, off = read_utf8(b, off, "CONNECT user name")  # [MQTT-3.1.3-12] / 3.1.1 [MQTT-3.1.3-11]
    password = None
    if has_password:
        _need_field(b, off, "password", _rule(level, "MQTT-3.1.2-19", "MQTT-3.1.2-21"))
        password, off = read_binary(b, off, "CONNECT password")
    if off != len(b):
        raise MalformedPacket(
            f"CONNECT has {len(b) - off} byte(s) after the last payload field its flags announce",
            rule="MQTT-3.1.4-1",
        )  # [MQTT-3.1.4-1]: the CONNECT must match the format of section 3.1
    return Connect(
        client_id=client_id,
        clean_start=bool(cf & 0x02),
        keep_alive=keep_alive,
        protocol_level=level,
        protocol_name=protocol_name,
        will=will,
        username=username,
        password=password,
        properties=props,
    )


def _check_response_topic(props: dict, kind: str) -> None:
    topic = props.get("response_topic")
    if topic is not None and ("+" in topic or "#" in topic or not topic):
        raise ProtocolError(
            f"{kind} response_topic {_show(topic)} is not a valid Topic Name", rule="MQTT-3.3.2-14"
        )  # [MQTT-3.3.2-14]


def _parse_publish(flags: int, b, level: int, server_side: bool) -> Publish:
    # The hot path: the topic, packet identifier and an empty property set are read inline.
    n = len(b)
    off = 2 + ((b[0] << 8) | b[1]) if n >= 2 else n + 1
    if off > n:
        read_utf8(b, 0, "PUBLISH topic name")  # raises: truncated
    try:
        topic = str(b[2:off], "utf-8")  # [MQTT-3.3.2-1]
    except UnicodeDecodeError:
        topic = ""
        read_utf8(b, 0, "PUBLISH topic name")  # raises with the details  # [MQTT-1.5.4-1]
    if "\x00" in topic:
        read_utf8(b, 0, "PUBLISH topic name")  # raises  # [MQTT-1.5.4-2]
    if "+" in topic or "#" in topic:
        raise TopicNameInvalid(
            f"PUBLISH topic name {_show(topic)} contains wildcard {'+' if '+' in topic else '#'!r}",
            rule="MQTT-3.3.2-2",
        )  # [MQTT-3.3.2-2]
    qos = (flags >> 1) & 0x03
    packet_id = None
    if qos:
        if off + 2 > n:
            read_u16(b, off, "PUBLISH packet identifier")  # raises: truncated
        packet_id = (b[off] << 8) | b[off + 1]
        off += 2
        if not packet_id:
            raise ProtocolError(
                f"PUBLISH with QoS {qos} has packet identifier 0",
                rule=_rule(level, "MQTT-2.2.1-3" if server_side else "MQTT-2.2.1-4", "MQTT-2.3.1-1"),
            )  # [MQTT-2.2.1-3] / [MQTT-2.2.1-4] / 3.1.1 [MQTT-2.3.1-1]
    if level == PROTOCOL_5:
        if off < n and not b[off]:
            props = {}
            off += 1
        else:
            props, off = read_properties(b, off, "PUBLISH")
            if server_side and "subscription_identifier" in props:
                raise ProtocolError(
                    "PUBLISH from a Client contains a subscription_identifier", rule="MQTT-3.3.4-6"
                )  # [MQTT-3.3.4-6]
            if "response_topic" in props:
                _check_response_topic(props, "PUBLISH")
    else:
        props = {}
    if not topic and "topic_alias" not in props:
        # 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no
        # Topic Alias"; in 3.1.1 no Topic Name may be empty [MQTT-4.7.3-1].
        raise ProtocolError(
            "PUBLISH topic name is empty" + (" and there is no topic_alias" if level == PROTOCOL_5 else ""),
            rule="MQTT-4.7.3-1",
        )  # [MQTT-4.7.3-1]
    return Publish(topic, bytes(b[off:]), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id, props)


def _make_ack_parser(cls, kind: str, codes: frozenset[int], code_rule: str):
    def parse(flags: int, b, level: int, server_side: bool):
        n = len(b)
        if level != PROTOCOL_5:
            if n != 2:
                raise MalformedPacket(f"{kind} remaining length is {n}; it must be 2 before MQTT 5.0")
        elif n < 2:
            raise MalformedPacket(f"{kind} remaining length is {n}; it must be at least 2")
        packet_id = (b[0] << 8) | b[1]
        if not packet_id:
            raise ProtocolError(
                f"{kind} packet identifier is 0", rule=_rule(level, "MQTT-2.2.1-5", "MQTT-2.3.1-6")
            )  # [MQTT-2.2.1-5] / 3.1.1 [MQTT-2.3.1-6]: it must be that of a PUBLISH, never 0
        if n == 2:
            return cls(packet_id)  # Reason Code 0x00 and no properties (3.4.2.1)
        code = b[2]
        if code not in codes:
            raise ProtocolError(f"{kind} reason code 0x{code:02X} is not a {kind} reason code", rule=code_rule)
        props: dict = {}
        if n > 3:
            props, off = read_properties(b, 3, kind)
            _no_trailing(kind, b, off)
        return cls(packet_id, code, props)

    parse.__name__ = f"_parse_{kind.lower()}"
    return parse


_parse_puback = _make_ack_parser(Puback, "PUBACK", PUBACK_CODES, "MQTT-3.4.2-1")  # [MQTT-3.4.2-1]
_parse_pubrec = _make_ack_parser(Pubrec, "PUBREC", PUBREC_CODES, "MQTT-3.5.2-1")  # [MQTT-3.5.2-1]
_parse_pubrel = _make_ack_parser(Pubrel, "PUBREL", PUBREL_CODES, "MQTT-3.6.2-1")  # [MQTT-3.6.2-1]
_parse_pubcomp = _make_ack_parser(Pubcomp, "PUBCOMP", PUBCOMP_CODES, "MQTT-3.7.2-1")  # [MQTT-3.7.2-1]


def _read_request_id(b, kind: str, level: int) -> tuple[int, int]:
    packet_id, off = read_u16(b, 0, f"{kind} packet identifier")
    if not packet_id:
        raise ProtocolError(
            f"{kind} packet identifier is 0", rule=_rule(level, "MQTT-2.2.1-3", "MQTT-2.3.1-1")
        )  # [MQTT-2.2.1-3] / 3.1.1 [MQTT-2.3.1-1]
    return packet_id, off


def _parse_subscribe(flags: int, b, level: int, server_side: bool) -> Subscribe:
    packet_id, off = _read_request_id(b, "SUBSCRIBE", level)
    props: dict = {}
    v5 = level == PROTOCOL_5
    if v5:
        props, off = read_properties(b, off, "SUBSCRIBE")
    n = len(b)
    if off == n:
        raise ProtocolError(
            "SUBSCRIBE contains no topic filter", rule=_rule(level, "MQTT-3.8.3-2", "MQTT-3.8.3-3")
        )  # [MQTT-3.8.3-2] / 3.1.1 [MQTT-3.8.3-3]
    subs = []
    while off < n:
        topic_filter, off = read_utf8(b, off, "SUBSCRIBE topic filter")  # [MQTT-3.8.3-1]
        if not topic_filter:
            raise ProtocolError("SUBSCRIBE topic filter is empty", rule="MQTT-4.7.3-1")  # [MQTT-4.7.3-1]
        if off >= n:
            raise MalformedPacket(f"SUBSCRIBE topic filter {_show(topic_filter)} has no options byte")
        opts = b[off]
        off += 1
        if v5:
            if opts & 0xC0:
                raise MalformedPacket(
                    f"SUBSCRIBE options 0x{opts:02X} for {_show(topic_filter)} set reserved bits 6-7",
                    rule="MQTT-3.8.3-5",
                )  # [MQTT-3.8.3-5]
            qos = opts & 0x03
            if qos == 3:
                raise ProtocolError(f"SUBSCRIBE maximum QoS for {_show(topic_filter)} is 3 (3.8.3.1)")
            retain_handling = (opts >> 4) & 0x03
            if retain_handling == 3:
                raise ProtocolError(f"SUBSCRIBE retain handling for {_show(topic_filter)} is 3 (3.8.3.1)")
            subs.append(Subscription(topic_filter, qos, bool(opts & 0x04), bool(opts & 0x08), retain_handling))
        else:
            if opts & 0xFC or opts == 3:
                raise MalformedPacket(
                    f"SUBSCRIBE requested QoS byte 0x{opts:02X} for {_show(topic_filter)} is not 0, 1 or 2",
                    rule="MQTT-3-8.3-4",
                )  # 3.1.1 [MQTT-3-8.3-4]
            subs.append(Subscription(topic_filter, opts))
    return Subscribe(packet_id, subs, props)


def _parse_unsubscribe(flags: int, b, level: int, server_side: bool) -> Unsubscribe:
    packet_id, off = _read_request_id(b, "UNSUBSCRIBE", level)
    props: dict = {}
    if level == PROTOCOL_5:
        props, off = read_properties(b, off, "UNSUBSCRIBE")
    n = len(b)
    if off == n:
        raise ProtocolError(
            "UNSUBSCRIBE contains no topic filter", rule="MQTT-3.10.3-2"
        )  # [MQTT-3.10.3-2]
    filters = []
    while off < n:
        topic_filter, off = read_utf8(b, off, "UNSUBSCRIBE topic filter")  # [MQTT-3.10.3-1]
        if not topic_filter:
            raise ProtocolError("UNSUBSCRIBE topic filter is empty", rule="MQTT-4.7.3-1")  # [MQTT-4.7.3-1]
        filters.append(topic_filter)
    return Unsubscribe(packet_id, filters, props)


def _parse_pingreq(flags: int, b, level: int, server_side: bool) -> Pingreq:
    if len(b):
        raise MalformedPacket(f"PINGREQ remaining length is {len(b)}; it must be 0")
    return Pingreq()


def _parse_pingresp(flags: int, b, level: int, server_side: bool) -> Pingresp:
    if len(b):
        raise MalformedPacket(f"PINGRESP remaining length is {len(b)}; it must be 0")
    return Pingresp()


def _parse_disconnect(flags: int, b, level: int, server_side: bool) -> Disconnect:
    n = len(b)
    if level != PROTOCOL_5:
        if n:
            raise MalformedPacket(f"DISCONNECT remaining length is {n}; it must be 0 before MQTT 5.0")
        return Disconnect()
    if not n:
        return Disconnect()  # Normal disconnection, no properties (3.14.2.1)
    code = b[0]
    if code not in DISCONNECT_CODES:
        raise ProtocolError(
            f"DISCONNECT reason code 0x{code:02X} is not a DISCONNECT reason code", rule="MQTT-3.14.2-1"
        )  # [MQTT-3.14.2-1]
    props: dict = {}
    if n > 1:
        props, off = read_properties(b, 1, "DISCONNECT")
        _no_trailing("DISCONNECT", b, off)
        if not server_side and "session_expiry_interval" in props:
            raise ProtocolError(
                "DISCONNECT from a Server contains session_expiry_interval", rule="MQTT-3.14.2-2"
            )  # [MQTT-3.14.2-2]
    return Disconnect(code, props)


def _parse_auth(flags: int, b, level: int, server_side: bool) -> Auth:
    n = len(b)
    if not n:
        return Auth()  # Success, no properties (3.15.2.1)
    code = b[0]
    if code not in AUTH_CODES:
        raise ProtocolError(
            f"AUTH reason code 0x{code:02X} is not an AUTH reason code", rule="MQTT-3.15.2-1"
        )  # [MQTT-3.15.2-1]
    props: dict = {}
    if n > 1:
        props, off = read_properties(b, 1, "AUTH")
        _no_trailing("AUTH", b, off)
    return Auth(code, props)


def _parse_connack(flags: int, b, level: int, server_side: bool) -> Connack:
    n = len(b)
    if level != PROTOCOL_5 and n != 2:
        raise MalformedPacket(f"CONNACK remaining length is {n}; it must be 2 before MQTT 5.0")
    if n < 2:
        raise MalformedPacket(f"CONNACK remaining length is {n}; it must be at least 3")
    ack_flags = b[0]
    code = b[1]
    if level == 3:
        session_present = False  # MQTT 3.1 has no Session Present bit; the byte is unused
    else:
        if ack_flags & 0xFE:
            raise MalformedPacket(
                f"CONNACK acknowledge flags 0x{ack_flags:02X} set reserved bits 7-1",
                rule=_rule(level, "MQTT-3.2.2-1", None),
            )  # [MQTT-3.2.2-1]
        session_present = bool(ack_flags & 0x01)
    if level != PROTOCOL_5:
        reason = CONNACK_FROM_V311.get(code)
        if reason is None:
            raise ProtocolError(f"CONNACK return code {code} is reserved (3.1.1 section 3.2.2.3)")
        if session_present and code:
            raise ProtocolError(
                f"CONNACK has Session Present with return code {code}", rule="MQTT-3.2.2-4"
            )  # 3.1.1 [MQTT-3.2.2-4]
        return Connack(reason, session_present)
    if code not in CONNACK_CODES:
        raise ProtocolError(
            f"CONNACK reason code 0x{code:02X} is not a CONNACK reason code", rule="MQTT-3.2.2-8"
        )  # [MQTT-3.2.2-8]
    if session_present and code:
        raise ProtocolError(
            f"CONNACK has Session Present with reason code 0x{code:02X}", rule="MQTT-3.2.2-6"
        )  # [MQTT-3.2.2-6]
    props, off = read_properties(b, 2, "CONNACK")  # the Property Length is not optional [MQTT-2.2.2-1]
    _no_trailing("CONNACK", b, off)
    return Connack(code, session_present, props)


def _parse_suback(flags: int, b, level: int, server_side: bool) -> Suback:
    packet_id, off = read_u16(b, 0, "SUBACK packet identifier")
    if not packet_id:
        raise ProtocolError(
            "SUBACK packet identifier is 0", rule=_rule(level, "MQTT-2.2.1-6", "MQTT-2.3.1-7")
        )  # [MQTT-2.2.1-6] / 3.1.1 [MQTT-2.3.1-7]
    props: dict = {}
    if level == PROTOCOL_5:
        props, off = read_properties(b, off, "SUBACK")
    codes = list(b[off:])
    if not codes:
        raise ProtocolError("SUBACK contains no reason code")
    valid = SUBACK_CODES if level == PROTOCOL_5 else SUBACK_CODES_V311
    for code in codes:
        if code not in valid:
            raise ProtocolError(
                f"SUBACK reason code 0x{code:02X} is not a SUBACK reason code", rule="MQTT-3.9.3-2"
            )  # [MQTT-3.9.3-2]
    return Suback(packet_id, codes, props)


def _parse_unsuback(flags: int, b, level: int, server_side: bool) -> Unsuback:
    n = len(b)
    if level != PROTOCOL_5 and n != 2:
        raise MalformedPacket(f"UNSUBACK remaining length is {n}; it must be 2 before MQTT 5.0")
    packet_id, off = read_u16(b, 0, "UNSUBACK packet identifier")
    if not packet_id:
        raise ProtocolError(
            "UNSUBACK packet identifier is 0", rule=_rule(level, "MQTT-2.2.1-6", "MQTT-2.3.1-7")
        )  # [MQTT-2.2.1-6] / 3.1.1 [MQTT-2.3.1-7]
    if level != PROTOCOL_5:
        return Unsuback(packet_id)
    props, off = read_properties(b, off, "UNSUBACK")
    codes = list(b[off:])
    if not codes:
        raise ProtocolError("UNSUBACK contains no reason code")
    for code in codes:
        if code not in UNSUBACK_CODES:
            raise ProtocolError(
                f"UNSUBACK reason code 0x{code:02X} is not an UNSUBACK reason code", rule="MQTT-3.11.3-2"
            )  # [MQTT-3.11.3-2]
    return Unsuback(packet_id, codes, props)


def _unreachable(flags: int, b, level: int, server_side: bool):  # pragma: no cover
    raise AssertionError("packet type 0 is rejected with the fixed header")


_PARSERS = (
    _unreachable,
    _parse_connect,
    _parse_connack,
    _parse_publish,
    _parse_puback,
    _parse_pubrec,
    _parse_pubrel,
    _parse_pubcomp,
    _parse_subscribe,
    _parse_suback,
    _parse_unsubscribe,
    _parse_unsuback,
    _parse_pingreq,
    _parse_pingresp,
    _parse_disconnect,
    _parse_auth,
)


def decode_packet(
    data: bytes, protocol_level: int | None = None, *, server_side: bool = True
) -> Packet:
    """Decode exactly one complete packet (a convenience over :class:`Decoder`).

    Raises MalformedPacket if ``data`` holds less or more than one packet.
    """
    decoder = Decoder(server_side=server_side, protocol_level=protocol_level)
    packets = decoder.feed(data)
    if len(packets) != 1 or decoder.buffered:
        raise MalformedPacket(
            f"expected exactly one complete packet, got {len(packets)} and {decoder.buffered} "
            f"byte(s) left over"
        )
    return packets[0]
