"""Raw MQTT bytes, assembled by hand: for tests that send packets the encoder would refuse to write
(bad UTF-8, wrong flags, reserved bits), or that must control every byte on the wire. The length-
prefixed pieces, whole CONNECT / SUBSCRIBE / PUBLISH packets built from them, and ``read_vbi`` to
take a Variable Byte Integer apart. tests/rawclient.py sends them over a socket."""

from __future__ import annotations

from lastwill.codec.primitives import encode_varint

PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def s(text: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string or binary field (1.5.3/1.5.4); ``bytes`` are written as given,
    so ill-formed strings can be built."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u16(len(raw)) + raw


def props(*items: bytes) -> bytes:
    """A property block: its Variable Byte Integer length, then the properties as given."""
    body = b"".join(items)
    return encode_varint(len(body)) + body


def packet(first: int, body: bytes) -> bytes:
    """A whole packet: the first fixed-header byte, the Remaining Length, the body."""
    return bytes((first,)) + encode_varint(len(body)) + body


def read_vbi(data: bytes, off: int) -> tuple[int, bytes]:
    """The Variable Byte Integer at ``data[off:]``: (its value, its bytes as they were encoded)."""
    start = off
    value = shift = 0
    while True:
        b = data[off]
        off += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, data[start:off]
        shift += 7


def connect_packet(client_id: str, version: int = 4, *, will: tuple[str, bytes] | None = None, will_qos: int = 0,
                   keep_alive: int = 60, flags: int = 0x02, properties: bytes = b"\x00") -> bytes:
    """A CONNECT with protocol name "MQTT" and level ``version`` (4: 3.1.1, 5: 5.0). ``flags``: the
    Connect Flags before the will's bits (0x02: Clean Session / Clean Start); ``will``: (topic,
    payload) at ``will_qos``, not retained, no will properties; ``properties``: the 5.0 property
    block (ignored for 3.1.1)."""
    v5 = version == 5
    payload = s(client_id)
    if will is not None:
        flags |= 0x04 | (will_qos << 3)
        payload += (b"\x00" if v5 else b"") + s(will[0]) + s(will[1])
    return packet(0x10, s("MQTT") + bytes((version, flags)) + u16(keep_alive) + (properties if v5 else b"") + payload)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 0, version: int = 4) -> bytes:
    """A SUBSCRIBE of one filter (5.0: no properties, the options byte is the QoS)."""
    return packet(0x82, u16(packet_id) + (b"\x00" if version == 5 else b"") + s(topic_filter) + bytes((qos,)))


def publish_packet(topic: str, payload: bytes, version: int = 4, *, qos: int = 0,
                   packet_id: int | None = None) -> bytes:
    """A PUBLISH, not retained, not DUP (5.0: no properties); ``packet_id`` when ``qos`` > 0."""
    pid = u16(packet_id) if qos else b""
    return packet(0x30 | (qos << 1), s(topic) + pid + (b"\x00" if version == 5 else b"") + payload)
