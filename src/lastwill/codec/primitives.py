"""The MQTT data representations (MQTT 5.0 section 1.5, MQTT 3.1.1 section 1.5).

Readers are pure functions over a bytes-like buffer (``bytes``, ``bytearray`` or ``memoryview``)
and an offset. They return ``(value, next_offset)`` and treat ``len(buf)`` as the end of the
packet: the decoder hands them a ``memoryview`` of exactly one packet body, so reading past its
end is a Malformed Packet rather than a peek into the next packet.

``what`` names the field in error messages ("PUBLISH topic name", ...).

Writers return ``bytes`` and raise ``ValueError`` for values the wire format cannot carry; the
encoder calls them with values the core built, so those errors are programming errors.
"""

from __future__ import annotations

from struct import Struct

from lastwill.errors import MalformedPacket

VARINT_MAX = 268_435_455  # 0xFF 0xFF 0xFF 0x7F, Table 1-1
UTF8_MAX = 65_535

_U16 = Struct("!H")
_U32 = Struct("!I")
pack_u16 = _U16.pack
pack_u32 = _U32.pack

# One-byte encodings, shared: most remaining lengths and every property length < 128.
_VARINT_1 = tuple(bytes((i,)) for i in range(128))


def _truncated(what: str, need: int, have: int) -> MalformedPacket:
    return MalformedPacket(f"{what}: packet ends {need - have} byte(s) too early")


# ---------------------------------------------------------------------------------------------
# Readers


def read_u8(buf, off: int, what: str = "byte") -> tuple[int, int]:
    """A Byte (1.5.1)."""
    if off >= len(buf):
        raise _truncated(what, off + 1, len(buf))
    return buf[off], off + 1


def read_u16(buf, off: int, what: str = "two byte integer") -> tuple[int, int]:
    """A Two Byte Integer, big-endian (1.5.2)."""
    end = off + 2
    if end > len(buf):
        raise _truncated(what, end, len(buf))
    return (buf[off] << 8) | buf[off + 1], end


def read_u32(buf, off: int, what: str = "four byte integer") -> tuple[int, int]:
    """A Four Byte Integer, big-endian (1.5.3)."""
    end = off + 4
    if end > len(buf):
        raise _truncated(what, end, len(buf))
    return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3], end


def read_varint(buf, off: int, what: str = "variable byte integer") -> tuple[int, int]:
    """A Variable Byte Integer (1.5.5): at most four bytes, minimally encoded.

    A continuation bit on the fourth byte is malformed (the spec's decoding algorithm throws
    "Malformed Variable Byte Integer"); so is an encoding longer than necessary, e.g.
    ``0x80 0x00`` for 0 [MQTT-1.5.5-1].
    """
    n = len(buf)
    value = 0
    shift = 0
    while True:
        if off >= n:
            raise MalformedPacket(f"{what}: packet ends inside a variable byte integer")
        byte = buf[off]
        off += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise MalformedPacket(
                    f"{what}: variable byte integer is not minimally encoded", rule="MQTT-1.5.5-1"
                )  # [MQTT-1.5.5-1]
            return value, off
        shift += 7
        if shift == 28:
            raise MalformedPacket(f"{what}: variable byte integer is longer than four bytes")


def _describe_bad_utf8(raw: bytes) -> str:
    """Name the problem in ill-formed UTF-8 for the error message (error path only)."""
    for i in range(len(raw) - 1):
        if raw[i] == 0xED and raw[i + 1] >= 0xA0:
            return f"encodes a UTF-16 surrogate (U+D800..U+DFFF) at byte {i}"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not well-formed UTF-8 ({exc.reason} at byte {exc.start})"
    return "is not well-formed UTF-8"  # pragma: no cover - caller only calls on failure


def read_utf8(buf, off: int, what: str = "UTF-8 string") -> tuple[str, int]:
    """A UTF-8 Encoded String (1.5.4): two byte length, then well-formed UTF-8.

    Ill-formed UTF-8, including encoded surrogates U+D800..U+DFFF, is malformed [MQTT-1.5.4-1];
    so is U+0000 [MQTT-1.5.4-2]. A leading 0xEF 0xBB 0xBF is U+FEFF and is kept [MQTT-1.5.4-3]
    (Python's "utf-8" codec, unlike "utf-8-sig", never strips it).
    """
    n = len(buf)
    if off + 2 > n:
        raise _truncated(f"{what} length", off + 2, n)
    end = off + 2 + ((buf[off] << 8) | buf[off + 1])
    if end > n:
        raise _truncated(what, end, n)
    raw = buf[off + 2 : end]
    try:
        text = str(raw, "utf-8")  # strict: rejects surrogates and overlong forms  # [MQTT-1.5.4-1]
    except UnicodeDecodeError:
        raise MalformedPacket(
            f"{what} {_describe_bad_utf8(bytes(raw))}", rule="MQTT-1.5.4-1"
        ) from None  # [MQTT-1.5.4-1]
    if "\x00" in text:
        raise MalformedPacket(
            f"{what} contains the null character U+0000 at character {text.index(chr(0))}",
            rule="MQTT-1.5.4-2",
        )  # [MQTT-1.5.4-2]
    return text, end  # U+FEFF is left in place  # [MQTT-1.5.4-3]


def read_binary(buf, off: int, what: str = "binary data") -> tuple[bytes, int]:
    """Binary Data (1.5.6): two byte length, then that many bytes."""
    n = len(buf)
    if off + 2 > n:
        raise _truncated(f"{what} length", off + 2, n)
    end = off + 2 + ((buf[off] << 8) | buf[off + 1])
    if end > n:
        raise _truncated(what, end, n)
    return bytes(buf[off + 2 : end]), end


def read_string_pair(buf, off: int, what: str = "UTF-8 string pair") -> tuple[tuple[str, str], int]:
    """A UTF-8 String Pair (1.5.7): both strings follow the UTF-8 string rules [MQTT-1.5.7-1]."""
    name, off = read_utf8(buf, off, f"{what} name")  # [MQTT-1.5.7-1]
    value, off = read_utf8(buf, off, f"{what} value")  # [MQTT-1.5.7-1]
    return (name, value), off


# ---------------------------------------------------------------------------------------------
# Writers


def encode_u8(value: int) -> bytes:
    return bytes((value,))


def encode_u16(value: int) -> bytes:
    return pack_u16(value)


def encode_u32(value: int) -> bytes:
    return pack_u32(value)


def encode_varint(value: int) -> bytes:
    """Minimal Variable Byte Integer encoding [MQTT-1.5.5-1]."""
    if value < 128:
        if value < 0:
            raise ValueError(f"variable byte integer must not be negative: {value}")
        return _VARINT_1[value]
    if value > VARINT_MAX:
        raise ValueError(f"variable byte integer {value} exceeds {VARINT_MAX}")
    out = bytearray()
    while value > 127:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_size(value: int) -> int:
    """Number of bytes ``encode_varint(value)`` produces."""
    if value < 128:
        return 1
    if value < 16_384:
        return 2
    if value < 2_097_152:
        return 3
    return 4


def encode_utf8(text: str) -> bytes:
    """A UTF-8 Encoded String with its two byte length prefix."""
    raw = text.encode("utf-8")
    if len(raw) > UTF8_MAX:
        raise ValueError(f"UTF-8 string is {len(raw)} bytes long, the maximum is {UTF8_MAX}")
    return pack_u16(len(raw)) + raw


def encode_binary(data: bytes) -> bytes:
    """Binary Data with its two byte length prefix."""
    if len(data) > UTF8_MAX:
        raise ValueError(f"binary data is {len(data)} bytes long, the maximum is {UTF8_MAX}")
    return pack_u16(len(data)) + bytes(data)


def encode_string_pair(name: str, value: str) -> bytes:
    return encode_utf8(name) + encode_utf8(value)
