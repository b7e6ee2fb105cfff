"""Raw MQTT bytes for tests that send packets the encoder would refuse to write (bad UTF-8, wrong
flags, reserved bits): the length-prefixed pieces, assembled by hand."""

from __future__ import annotations

from lastwill.codec.primitives import encode_varint


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
