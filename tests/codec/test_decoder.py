"""Decoder: the golden table, incremental feeding, errors after partial success, limits."""

from __future__ import annotations

import pytest

from lastwill.codec.decoder import Decoder, decode_packet
from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Connect,
    Disconnect,
    PacketType,
    Pingreq,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Will,
)
from lastwill.errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)

from .cases import BAD, CASES, GOOD, Case

CONNECT_311 = encode(Connect(client_id="c", protocol_level=4), 4)
CONNECT_5 = encode(Connect(client_id="c", protocol_level=5), 5)


def _ids(cases):
    return [c.name for c in cases]


def _check_error(case: Case, exc: MqttError) -> None:
    assert type(exc) is case.error, f"{case.name}: {type(exc).__name__}: {exc}"
    assert exc.reason_code == case.reason_code, f"{case.name}: reason code 0x{exc.reason_code:02X}"
    assert exc.rule == case.rule, f"{case.name}: rule {exc.rule}: {exc}"
    if case.match:
        assert case.match in str(exc), f"{case.name}: {exc}"


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_golden_decodes(case: Case):
    decoder = case.decoder()
    assert decoder.feed(case.raw) == [case.packet]
    assert decoder.buffered == 0


@pytest.mark.parametrize("case", BAD, ids=_ids(BAD))
def test_golden_bad_raises(case: Case):
    with pytest.raises(MqttError) as info:
        case.decoder().feed(case.raw)
    _check_error(case, info.value)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_golden_one_byte_at_a_time(case: Case):
    decoder = case.decoder()
    out = []
    try:
        for i in range(len(case.raw)):
            out += decoder.feed(case.raw[i : i + 1])
    except MqttError as exc:
        assert not case.good, f"{case.name}: {exc}"
        _check_error(case, exc)
        return
    assert case.good, f"{case.name}: no error"
    assert out == [case.packet]
    assert decoder.buffered == 0


@pytest.mark.parametrize("case", GOOD, ids=_ids(GOOD))
def test_golden_in_two_chunks_at_every_split(case: Case):
    for cut in range(1, len(case.raw)):
        decoder = case.decoder()
        assert decoder.feed(case.raw[:cut]) + decoder.feed(case.raw[cut:]) == [case.packet]


def test_all_golden_cases_concatenated_in_one_feed():
    for server_side, level in ((True, 4), (True, 5), (False, 4), (False, 5)):
        cases = [
            c for c in GOOD
            if c.server_side == server_side and c.level == level and not isinstance(c.packet, Connect)
        ]
        decoder = Decoder(server_side=server_side, protocol_level=level)
        assert decoder.feed(b"".join(c.raw for c in cases)) == [c.packet for c in cases]


def test_accepts_bytearray_and_memoryview():
    raw = CONNECT_5 + encode(Publish("a", b"x"), 5)
    assert Decoder().feed(bytearray(raw)) == Decoder().feed(memoryview(raw)) == Decoder().feed(raw)


def test_empty_feed_returns_nothing():
    decoder = Decoder()
    assert decoder.feed(b"") == []
    decoder.feed(CONNECT_5[:3])
    assert decoder.feed(b"") == []
    assert decoder.feed(CONNECT_5[3:]) == [Connect(client_id="c", protocol_level=5)]


# ------------------------------------------------------------------------------------------------
# Errors after partial success


def test_packets_before_a_bad_one_are_attached_to_the_error():
    good = encode(Publish("a/b", b"1", qos=1, packet_id=1), 5) + encode(Pingreq(), 5)
    decoder = Decoder(protocol_level=5)
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(good + b"\x36\x00")  # PUBLISH QoS 3
    assert info.value.packets == [Publish("a/b", b"1", qos=1, packet_id=1), Pingreq()]
    assert info.value.packet_type is PacketType.PUBLISH
    assert info.value.protocol_level == 5


def test_error_packets_only_holds_packets_of_the_failing_feed():
    decoder = Decoder(protocol_level=4)
    assert decoder.feed(encode(Pingreq(), 4)) == [Pingreq()]
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(b"\xc0\x01\x00")
    assert info.value.packets == []


def test_connect_then_garbage_in_one_feed_keeps_the_connect_MQTT_3_1_0_1():
    decoder = Decoder()
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(CONNECT_311 + b"\x00\x00")
    assert info.value.packets == [Connect(client_id="c", protocol_level=4)]
    assert decoder.protocol_level == 4


def test_decoder_is_dead_after_an_error():
    decoder = Decoder(protocol_level=5)
    with pytest.raises(ProtocolError) as first:
        decoder.feed(encode(Pingreq(), 5) + b"\x40\x02\x00\x00")
    assert first.value.packets == [Pingreq()]
    with pytest.raises(ProtocolError) as again:
        decoder.feed(encode(Pingreq(), 5))
    assert again.value is first.value
    assert again.value.packets == []


def test_error_type_of_an_invalid_packet_type_is_none():
    with pytest.raises(MalformedPacket) as info:
        Decoder(protocol_level=5).feed(b"\x00\x00")
    assert info.value.packet_type is None


# ------------------------------------------------------------------------------------------------
# Maximum packet size


def test_oversized_packet_rejected_from_the_fixed_header_alone_MQTT_3_2_2_15():
    decoder = Decoder(max_packet_size=1000, protocol_level=5)
    with pytest.raises(PacketTooLarge) as info:
        decoder.feed(b"\x30\xff\xff\xff\x7f")  # only the fixed header: 268435455 bytes announced
    assert info.value.reason_code == 0x95
    assert info.value.rule == "MQTT-3.2.2-15"
    assert decoder.buffered == 0


def test_packet_of_exactly_max_packet_size_is_accepted():
    raw = encode(Publish("t", b"x" * 95), 5)
    assert len(raw) == 101
    assert Decoder(max_packet_size=101, protocol_level=5).feed(raw) == [Publish("t", b"x" * 95)]
    with pytest.raises(PacketTooLarge):
        Decoder(max_packet_size=100, protocol_level=5).feed(raw)


def test_max_packet_size_applies_to_the_connect_too():
    with pytest.raises(PacketTooLarge) as info:
        Decoder(max_packet_size=10).feed(CONNECT_5)
    assert info.value.packet_type is PacketType.CONNECT


def test_large_packet_fed_in_chunks_is_not_reparsed():
    payload = bytes(range(256)) * 400
    raw = encode(Publish("big", payload, qos=1, packet_id=9), 5)
    decoder = Decoder(protocol_level=5)
    out = []
    for i in range(0, len(raw), 1000):
        out += decoder.feed(raw[i : i + 1000])
        if i + 1000 < len(raw):
            assert decoder._need == len(raw)  # header known: feeds only append until complete
    assert out == [Publish("big", payload, qos=1, packet_id=9)]


def test_remaining_length_at_its_largest_is_waited_for():
    decoder = Decoder(protocol_level=5, max_packet_size=268_435_460)
    assert decoder.feed(b"\x30\xff\xff\xff\x7f\x00\x01t\x00") == []
    assert decoder.buffered == 9


def test_remaining_length_incomplete_waits():
    decoder = Decoder(protocol_level=5)
    assert decoder.feed(b"\x30\xff\xff\xff") == []
    with pytest.raises(MalformedPacket):
        decoder.feed(b"\xff")


# ------------------------------------------------------------------------------------------------
# protocol_level and the first packet


def test_protocol_level_is_set_by_the_connect():
    decoder = Decoder()
    assert decoder.protocol_level is None
    assert decoder.feed(CONNECT_5) == [Connect(client_id="c", protocol_level=5)]
    assert decoder.protocol_level == 5


def test_packets_after_the_connect_in_the_same_feed_use_its_level():
    publish_5 = encode(Publish("t", b"x", properties={"user_property": [("a", "b")]}), 5)
    out = Decoder().feed(CONNECT_5 + publish_5)
    assert out[1] == Publish("t", b"x", properties={"user_property": [("a", "b")]})


def test_first_packet_must_be_connect_MQTT_3_1_0_1():
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(encode(Publish("t", b""), 4))
    assert info.value.rule == "MQTT-3.1.0-1"


def test_second_connect_is_decoded_and_level_kept_MQTT_3_1_0_2():
    decoder = Decoder()
    second = encode(Connect(client_id="again", protocol_level=4), 4)
    out = decoder.feed(CONNECT_5 + second)
    assert out == [Connect(client_id="c", protocol_level=5), Connect(client_id="again", protocol_level=4)]
    assert decoder.protocol_level == 5


def test_core_may_set_protocol_level():
    decoder = Decoder()
    decoder.protocol_level = 4
    assert decoder.feed(b"\xc0\x00") == [Pingreq()]


def test_unsupported_protocol_version_carries_the_level_MQTT_3_1_2_2():
    raw = b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01a"
    with pytest.raises(UnsupportedProtocolVersion) as info:
        Decoder().feed(raw)
    assert info.value.reason_code == 0x84
    assert info.value.protocol_level == 7
    assert info.value.packet_type is PacketType.CONNECT


def test_error_in_a_v311_connect_carries_its_level_v311_MQTT_3_1_2_3():
    with pytest.raises(MalformedPacket) as info:
        Decoder().feed(b"\x10\x0d\x00\x04MQTT\x04\x01\x00\x3c\x00\x01a")
    assert info.value.protocol_level == 4
    assert info.value.rule == "MQTT-3.1.2-3"


def test_client_side_decoder_needs_a_level():
    with pytest.raises(ValueError):
        Decoder(server_side=False)
    with pytest.raises(ValueError):
        Decoder(protocol_level=6)


# ------------------------------------------------------------------------------------------------
# Specific rules


def test_utf8_bom_is_kept_MQTT_1_5_4_3():
    raw = encode(Publish("\ufefftopic", b""), 5)
    assert raw[2:7] == b"\x00\x08\xef\xbb\xbf"
    assert Decoder(protocol_level=5).feed(raw)[0].topic == "\ufefftopic"


def test_will_topic_with_wildcards_is_left_to_the_core():
    connect = Connect(client_id="c", protocol_level=4, will=Will("a/#", b""))
    assert Decoder().feed(encode(connect, 4)) == [connect]


def test_v31_allows_dup_on_qos0_publish():
    assert Decoder(protocol_level=3).feed(b"\x38\x03\x00\x01t") == [Publish("t", b"", dup=True)]


def test_v311_dup_on_qos0_publish_is_malformed_MQTT_3_3_1_2():
    with pytest.raises(MalformedPacket):
        Decoder(protocol_level=4).feed(b"\x38\x03\x00\x01t")


def test_subscribe_v5_every_option_bit():
    for opts, expected in (
        (0x00, Subscription("a")),
        (0x02, Subscription("a", qos=2)),
        (0x04, Subscription("a", no_local=True)),
        (0x08, Subscription("a", retain_as_published=True)),
        (0x10, Subscription("a", retain_handling=1)),
        (0x2E, Subscription("a", 2, True, True, 2)),
    ):
        raw = b"\x82\x07\x00\x01\x00\x00\x01a" + bytes((opts,))
        assert Decoder(protocol_level=5).feed(raw) == [Subscribe(1, [expected])]


@pytest.mark.parametrize("bit", [0x40, 0x80])
def test_subscribe_v5_reserved_option_bits_MQTT_3_8_3_5(bit):
    with pytest.raises(MalformedPacket) as info:
        Decoder(protocol_level=5).feed(b"\x82\x07\x00\x01\x00\x00\x01a" + bytes((bit,)))
    assert info.value.rule == "MQTT-3.8.3-5"


def test_puback_v5_length_3_has_no_property_length():
    assert Decoder(protocol_level=5).feed(b"\x40\x03\x00\x05\x83") == [Puback(5, 0x83)]


def test_disconnect_v5_length_1_has_no_property_length():
    assert Decoder(protocol_level=5).feed(b"\xe0\x01\x8e") == [Disconnect(0x8E)]


# ------------------------------------------------------------------------------------------------
# decode_packet


def test_decode_packet_single():
    assert decode_packet(b"\xc0\x00", 4) == Pingreq()


def test_decode_packet_rejects_two_or_partial():
    with pytest.raises(MalformedPacket):
        decode_packet(b"\xc0\x00\xc0\x00", 4)
    with pytest.raises(MalformedPacket):
        decode_packet(b"\x30\x05\x00", 4)
