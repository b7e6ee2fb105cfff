"""Encoder: the golden table, 3.1.1 down-mapping, 5.0 short forms, caller errors."""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
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

from .cases import GOOD, Case

ENCODABLE = [c for c in GOOD if c.encodes]


@pytest.mark.parametrize("case", ENCODABLE, ids=[c.name for c in ENCODABLE])
def test_golden_encodes(case: Case):
    assert encode(case.packet, case.encode_level) == case.raw


def test_every_packet_type_has_a_golden_case_in_each_version():
    for level in (4, 5):
        types = {type(c.packet).__name__ for c in GOOD if c.level == level}
        expected = {
            "Connect", "Connack", "Publish", "Puback", "Pubrec", "Pubrel", "Pubcomp", "Subscribe", "Suback",
            "Unsubscribe", "Unsuback", "Pingreq", "Pingresp", "Disconnect",
        } | ({"Auth"} if level == 5 else set())
        assert expected <= types, expected - types


# ------------------------------------------------------------------------------------------------
# MQTT 3.1 / 3.1.1


@pytest.mark.parametrize(
    "reason, return_code",
    [(0x00, 0), (0x84, 1), (0x85, 2), (0x88, 3), (0x89, 3), (0x86, 4), (0x8C, 4), (0x87, 5), (0x8A, 5),
     (0x80, 3), (0x95, 3)],
)
def test_connack_v311_return_code(reason, return_code):
    assert encode(Connack(reason), 4) == bytes((0x20, 0x02, 0x00, return_code))


def test_connack_v311_drops_properties():
    assert encode(Connack(0, True, {"server_keep_alive": 5}), 4) == b"\x20\x02\x01\x00"


def test_connack_session_present_cleared_on_refusal_v5_MQTT_3_2_2_6():
    assert encode(Connack(0x87, True), 5) == b"\x20\x03\x00\x87\x00"
    assert encode(Connack(0x87, True), 4) == b"\x20\x02\x00\x05"


def test_connack_v31_has_no_session_present():
    assert encode(Connack(0, True), 3) == b"\x20\x02\x00\x00"


def test_suback_v311_failures_become_0x80_MQTT_3_9_3_2():
    assert encode(Suback(3, [0, 1, 2, 0x80, 0x87, 0xA2]), 4) == b"\x90\x08\x00\x03\x00\x01\x02\x80\x80\x80"


def test_unsuback_v311_has_no_payload():
    assert encode(Unsuback(3, [0x11, 0x00], {"reason_string": "x"}), 4) == b"\xb0\x02\x00\x03"


@pytest.mark.parametrize(
    "packet, first", [(Puback, 0x40), (Pubrec, 0x50), (Pubrel, 0x62), (Pubcomp, 0x70)]
)
def test_acks_v311_have_only_the_packet_id(packet, first):
    assert encode(packet(0x1234, 0x80 if packet in (Puback, Pubrec) else 0x92, {"reason_string": "x"}), 4) == (
        bytes((first, 0x02, 0x12, 0x34))
    )


def test_disconnect_v311_has_no_body():
    assert encode(Disconnect(0x8E, {"reason_string": "x"}), 4) == b"\xe0\x00"


def test_auth_does_not_exist_in_v311():
    with pytest.raises(ValueError):
        encode(Auth(0x18), 4)


def test_publish_v311_drops_properties():
    p = Publish("t", b"x", qos=1, packet_id=2, properties={"message_expiry_interval": 5})
    assert encode(p, 4) == b"\x32\x06\x00\x01t\x00\x02x"


def test_subscribe_v311_writes_only_the_qos():
    s = Subscribe(1, [Subscription("a", 1, no_local=True, retain_as_published=True, retain_handling=2)])
    assert encode(s, 4) == b"\x82\x06\x00\x01\x00\x01a\x01"


def test_unsubscribe_v311_drops_properties():
    assert encode(Unsubscribe(1, ["a"], {"user_property": [("k", "v")]}), 4) == b"\xa2\x05\x00\x01\x00\x01a"


def test_connect_v31_uses_mqisdp():
    raw = encode(Connect(client_id="a", protocol_level=3), 3)
    assert raw[2:11] == b"\x00\x06MQIsdp\x03"


def test_connect_v311_password_without_user_name_is_refused_v311_MQTT_3_1_2_22():
    with pytest.raises(ValueError, match="MQTT-3.1.2-22"):
        encode(Connect(client_id="a", password=b"p"), 4)


def test_connect_v311_drops_will_properties():
    c = Connect(client_id="a", protocol_level=4, will=Will("w", b"", properties={"will_delay_interval": 9}))
    assert encode(c, 4) == b"\x10\x12\x00\x04MQTT\x04\x06\x00\x3c\x00\x01a\x00\x01w\x00\x00"


# ------------------------------------------------------------------------------------------------
# MQTT 5.0 short forms


@pytest.mark.parametrize("packet, first", [(Puback, 0x40), (Pubrec, 0x50), (Pubrel, 0x62), (Pubcomp, 0x70)])
def test_acks_v5_short_forms(packet, first):
    assert encode(packet(9), 5) == bytes((first, 2, 0, 9))
    code = 0x92 if packet in (Pubrel, Pubcomp) else 0x10
    assert encode(packet(9, code), 5) == bytes((first, 3, 0, 9, code))
    assert encode(packet(9, 0, {"reason_string": "r"}), 5) == bytes((first, 8, 0, 9, 0, 4, 0x1F, 0, 1)) + b"r"


def test_disconnect_v5_forms():
    assert encode(Disconnect(), 5) == b"\xe0\x00"
    assert encode(Disconnect(0x8D), 5) == b"\xe0\x01\x8d"
    assert encode(Disconnect(0, {"reason_string": "r"}), 5) == b"\xe0\x06\x00\x04\x1f\x00\x01r"


def test_auth_v5_forms():
    assert encode(Auth(), 5) == b"\xf0\x00"
    assert encode(Auth(0x19), 5) == b"\xf0\x02\x19\x00"


def test_publish_remaining_length_multi_byte():
    p = Publish("t", b"x" * 20000)
    raw = encode(p, 5)
    assert raw[:4] == b"\x30\xa4\x9c\x01"  # 20004 = 0x24 + 0x1c*128 + 1*16384
    assert len(raw) == 4 + 20004


def test_publish_subscription_identifier_list_or_int():
    a = encode(Publish("t", b"", properties={"subscription_identifier": [3, 4]}), 5)
    assert a == b"\x30\x08\x00\x01t\x04\x0b\x03\x0b\x04"
    b = encode(Subscribe(1, [Subscription("a")], {"subscription_identifier": 300}), 5)
    assert b == b"\x82\x0a\x00\x01\x03\x0b\xac\x02\x00\x01a\x00"


# ------------------------------------------------------------------------------------------------
# Caller errors


def test_publish_qos1_without_packet_id():
    with pytest.raises(ValueError, match="packet_id"):
        encode(Publish("t", b"", qos=1), 5)


def test_unknown_property_name():
    with pytest.raises(ValueError, match="unknown property"):
        encode(Publish("t", b"", properties={"colour": 1}), 5)


def test_property_not_valid_in_packet():
    with pytest.raises(ValueError, match="not valid in PUBLISH"):
        encode(Publish("t", b"", properties={"reason_string": "x"}), 5)


def test_string_too_long():
    with pytest.raises(ValueError, match="65535"):
        encode(Publish("t" * 65536, b""), 5)
