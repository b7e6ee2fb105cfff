"""The data representations of section 1.5."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lastwill.codec.primitives import (
    VARINT_MAX,
    encode_binary,
    encode_string_pair,
    encode_u16,
    encode_u32,
    encode_utf8,
    encode_varint,
    read_binary,
    read_string_pair,
    read_u8,
    read_u16,
    read_u32,
    read_utf8,
    read_varint,
    varint_size,
)
from lastwill.errors import MalformedPacket

from .strategies import examples


def test_integers_big_endian():
    buf = b"\x01\x02\x03\x04\x05"
    assert read_u8(buf, 0) == (1, 1)
    assert read_u16(buf, 1) == (0x0203, 3)
    assert read_u32(buf, 1) == (0x02030405, 5)
    assert encode_u16(0x0203) == b"\x02\x03"
    assert encode_u32(0x02030405) == b"\x02\x03\x04\x05"


@pytest.mark.parametrize("reader, size", [(read_u8, 1), (read_u16, 2), (read_u32, 4)])
def test_reading_past_the_end_is_malformed(reader, size):
    with pytest.raises(MalformedPacket, match="field: packet ends 1 byte"):
        reader(b"\x00" * (size - 1), 0, "field")


@pytest.mark.parametrize(
    "value, raw",
    [
        (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_table_1_1(value, raw):
    assert encode_varint(value) == raw
    assert read_varint(raw + b"\xaa", 0) == (value, len(raw))
    assert varint_size(value) == len(raw)


def test_varint_fifth_byte_is_malformed():
    with pytest.raises(MalformedPacket, match="longer than four bytes"):
        read_varint(b"\x80\x80\x80\x80\x01", 0)


@pytest.mark.parametrize("raw", [b"\x80\x00", b"\xff\x80\x00", b"\x80\x80\x80\x00"])
def test_varint_not_minimal_is_malformed_MQTT_1_5_5_1(raw):
    with pytest.raises(MalformedPacket) as info:
        read_varint(raw, 0)
    assert info.value.rule == "MQTT-1.5.5-1"


def test_varint_truncated_is_malformed():
    with pytest.raises(MalformedPacket):
        read_varint(b"\x80", 0)


def test_varint_out_of_range_cannot_be_encoded():
    with pytest.raises(ValueError):
        encode_varint(VARINT_MAX + 1)
    with pytest.raises(ValueError):
        encode_varint(-1)


@settings(max_examples=examples(200))
@given(st.integers(0, VARINT_MAX))
def test_varint_round_trip(value):
    raw = encode_varint(value)
    assert read_varint(raw, 0) == (value, len(raw)) and varint_size(value) == len(raw)


def test_utf8_reads_example_of_figure_1_2():
    assert read_utf8(b"\x00\x05A\xf0\xaa\x9b\x94", 0) == ("A\U0002a6d4", 7)


def test_utf8_null_is_malformed_MQTT_1_5_4_2():
    with pytest.raises(MalformedPacket, match="null character") as info:
        read_utf8(b"\x00\x03a\x00b", 0, "topic")
    assert info.value.rule == "MQTT-1.5.4-2"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xed\xa0\x80",  # U+D800
        b"\xed\xbf\xbf",  # U+DFFF
        b"\xed\xa0\xbd\xed\xb8\x80",  # a UTF-16 surrogate pair written as CESU-8
    ],
)
def test_utf8_surrogates_are_malformed_MQTT_1_5_4_1(raw):
    with pytest.raises(MalformedPacket, match="surrogate") as info:
        read_utf8(len(raw).to_bytes(2, "big") + raw, 0)
    assert info.value.rule == "MQTT-1.5.4-1"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc0\x80",  # overlong U+0000
        b"\xe0\x80\xaf",  # overlong '/'
        b"\xff",  # never valid
        b"\x80",  # lone continuation byte
        b"\xc3",  # truncated sequence
        b"\xf4\x90\x80\x80",  # above U+10FFFF
    ],
)
def test_utf8_ill_formed_is_malformed_MQTT_1_5_4_1(raw):
    with pytest.raises(MalformedPacket, match="not well-formed UTF-8") as info:
        read_utf8(len(raw).to_bytes(2, "big") + raw, 0)
    assert info.value.rule == "MQTT-1.5.4-1"


def test_utf8_bom_is_kept_MQTT_1_5_4_3():
    assert read_utf8(b"\x00\x04\xef\xbb\xbfx", 0) == ("\ufeffx", 6)
    assert read_utf8(b"\x00\x06x\xef\xbb\xbfyz", 0)[0] == "x\ufeffyz"


def test_utf8_disallowed_code_points_are_accepted():
    # 1.5.4: U+0001..U+001F, U+007F..U+009F and non-characters SHOULD NOT be sent; a receiver
    # MAY treat them as malformed. We accept them (the core may decide otherwise).
    assert read_utf8(encode_utf8("\x01\x7f\x9f\uffff"), 0)[0] == "\x01\x7f\x9f\uffff"


def test_utf8_length_past_the_end_is_malformed():
    with pytest.raises(MalformedPacket, match="client id: packet ends 2 byte"):
        read_utf8(b"\x00\x05abc", 0, "client id")
    with pytest.raises(MalformedPacket, match="length"):
        read_utf8(b"\x00", 0)


def test_utf8_reads_from_a_memoryview_slice():
    mv = memoryview(b"xx\x00\x02hi")[2:]
    assert read_utf8(mv, 0) == ("hi", 4)


def test_utf8_too_long_to_encode():
    with pytest.raises(ValueError):
        encode_utf8("a" * 65536)
    assert len(encode_utf8("a" * 65535)) == 65537


def test_binary():
    assert read_binary(b"\x00\x02\x00\xff", 0) == (b"\x00\xff", 4)
    assert encode_binary(b"\x00\xff") == b"\x00\x02\x00\xff"
    with pytest.raises(MalformedPacket):
        read_binary(b"\x00\x03ab", 0)


def test_string_pair_MQTT_1_5_7_1():
    raw = encode_string_pair("k", "v")
    assert read_string_pair(raw, 0) == (("k", "v"), 6)
    with pytest.raises(MalformedPacket) as info:
        read_string_pair(b"\x00\x01k\x00\x01\x00", 0)
    assert info.value.rule == "MQTT-1.5.4-2"


@settings(max_examples=examples(200))
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_utf8_round_trip(text):
    raw = encode_utf8(text)
    assert read_utf8(raw, 0) == (text, len(raw))
