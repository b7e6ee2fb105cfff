"""The MQTT 5 property table and property decoding rules (2.2.2)."""

from __future__ import annotations

import re

import pytest

from lastwill.codec.properties import (
    ALLOWED,
    BY_NAME,
    PROPERTIES,
    WILL,
    encode_properties,
    read_properties,
)
from lastwill.errors import MalformedPacket, ProtocolError

from .cases import GOOD
from .spec import load


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def test_table_matches_table_2_4_of_the_spec():
    spec = load("5.0")["properties"]
    assert len(spec) == len(PROPERTIES) == 27
    for row in spec:
        d = PROPERTIES[row["id"]]
        assert d.name == _snake(row["name"])
        assert d.type == row["data_type"]
        kinds = {WILL if k == "Will Properties" else k for k in row["packets"]}
        assert d.kinds == kinds, d.name


def test_names_are_the_documented_ones():
    assert set(BY_NAME) == {
        "payload_format_indicator", "message_expiry_interval", "content_type", "response_topic",
        "correlation_data", "subscription_identifier", "session_expiry_interval", "assigned_client_identifier",
        "server_keep_alive", "authentication_method", "authentication_data", "request_problem_information",
        "will_delay_interval", "request_response_information", "response_information", "server_reference",
        "reason_string", "receive_maximum", "topic_alias_maximum", "topic_alias", "maximum_qos",
        "retain_available", "user_property", "maximum_packet_size", "wildcard_subscription_available",
        "subscription_identifier_available", "shared_subscription_available",
    }


def _all_props(packet) -> list[dict]:
    out = [getattr(packet, "properties", {})]
    will = getattr(packet, "will", None)
    if will is not None:
        out.append(will.properties)
    return out


def test_every_property_appears_in_a_golden_case():
    seen = {name for c in GOOD for props in _all_props(c.packet) for name in props}
    assert seen == set(BY_NAME)


def test_user_properties_keep_order_and_duplicates_MQTT_3_3_2_18():
    raw = encode_properties({"user_property": [("b", "2"), ("a", "1"), ("b", "3")]})
    assert read_properties(raw, 0, "PUBLISH") == ({"user_property": [("b", "2"), ("a", "1"), ("b", "3")]}, len(raw))


def test_user_property_interleaved_with_others():
    raw = b"\x11" b"\x26\x00\x01a\x00\x011" b"\x23\x00\x01" b"\x26\x00\x01a\x00\x012"
    props, _ = read_properties(raw, 0, "PUBLISH")
    assert props == {"user_property": [("a", "1"), ("a", "2")], "topic_alias": 1}


def test_subscription_identifier_repeats_in_publish_only():
    raw = b"\x04\x0b\x01\x0b\x02"
    assert read_properties(raw, 0, "PUBLISH")[0] == {"subscription_identifier": [1, 2]}
    with pytest.raises(ProtocolError, match="more than once"):
        read_properties(raw, 0, "SUBSCRIBE")
    assert read_properties(b"\x02\x0b\x01", 0, "SUBSCRIBE")[0] == {"subscription_identifier": 1}


@pytest.mark.parametrize("ident", sorted(PROPERTIES))
def test_every_property_outside_its_packets_is_malformed(ident):
    d = PROPERTIES[ident]
    value = encode_properties({d.name: _sample(d.name)})
    for kind, allowed in ALLOWED.items():
        if ident in allowed:
            assert read_properties(value, 0, kind)[0] == {d.name: _expected(d.name, kind)}
        else:
            with pytest.raises(MalformedPacket, match=d.name):
                read_properties(value, 0, kind)


@pytest.mark.parametrize("ident", sorted(PROPERTIES))
def test_every_single_valued_property_twice_is_a_protocol_error(ident):
    d = PROPERTIES[ident]
    if d.name == "user_property":
        return
    once = encode_properties({d.name: _sample(d.name)})[1:]
    raw = bytes((2 * len(once),)) + once + once
    kind = sorted(d.kinds - {"PUBLISH"} if d.name == "subscription_identifier" else d.kinds)[0]
    with pytest.raises(ProtocolError, match="more than once"):
        read_properties(raw, 0, kind)


def _sample(name):
    d = BY_NAME[name]
    return {
        "Byte": 1, "Two Byte Integer": 7, "Four Byte Integer": 70000, "Variable Byte Integer": 300,
        "UTF-8 Encoded String": "s", "Binary Data": b"\x00b", "UTF-8 String Pair": [("k", "v")],
    }[d.type]


def _expected(name, kind):
    value = _sample(name)
    return [value] if name == "subscription_identifier" and kind == "PUBLISH" else value


@pytest.mark.parametrize(
    "name", ["payload_format_indicator", "request_problem_information", "request_response_information",
             "maximum_qos", "retain_available", "wildcard_subscription_available",
             "subscription_identifier_available", "shared_subscription_available"],
)
def test_zero_or_one_bytes(name):
    d = BY_NAME[name]
    kind = sorted(d.kinds)[0]
    for value in (0, 1):
        assert read_properties(bytes((2, d.ident, value)), 0, kind)[0] == {name: value}
    with pytest.raises(ProtocolError, match=f"{name} is 2"):
        read_properties(bytes((2, d.ident, 2)), 0, kind)


@pytest.mark.parametrize("name", ["receive_maximum", "maximum_packet_size", "subscription_identifier", "topic_alias"])
def test_zero_not_allowed(name):
    d = BY_NAME[name]
    kind = "PUBLISH" if name == "topic_alias" else sorted(d.kinds)[0]
    body = {"Two Byte Integer": b"\x00\x00", "Four Byte Integer": b"\x00\x00\x00\x00", "Variable Byte Integer": b"\x00"}[d.type]
    raw = bytes((1 + len(body), d.ident)) + body
    with pytest.raises(ProtocolError, match=f"{name} is 0") as info:
        read_properties(raw, 0, kind)
    assert info.value.rule == ("MQTT-3.3.2-8" if name == "topic_alias" else None)


def test_topic_alias_zero_MQTT_3_3_2_8():
    with pytest.raises(ProtocolError) as info:
        read_properties(b"\x03\x23\x00\x00", 0, "PUBLISH")
    assert info.value.rule == "MQTT-3.3.2-8"


def test_zero_allowed_where_the_spec_allows_it():
    assert read_properties(b"\x03\x22\x00\x00", 0, "CONNECT")[0] == {"topic_alias_maximum": 0}
    assert read_properties(b"\x03\x13\x00\x00", 0, "CONNACK")[0] == {"server_keep_alive": 0}
    assert read_properties(b"\x05\x11\x00\x00\x00\x00", 0, "DISCONNECT")[0] == {"session_expiry_interval": 0}


def test_unknown_and_multi_byte_identifiers_are_malformed():
    with pytest.raises(MalformedPacket, match="unknown property identifier 0x04"):
        read_properties(b"\x02\x04\x00", 0, "PUBLISH")
    with pytest.raises(MalformedPacket, match="unknown property identifier 0x81"):
        read_properties(b"\x03\x81\x01\x00", 0, "PUBLISH")


def test_property_length_overruns_the_packet():
    with pytest.raises(MalformedPacket, match="runs 1 byte"):
        read_properties(b"\x03\x23\x00", 0, "PUBLISH")


def test_value_overruns_the_property_length():
    with pytest.raises(MalformedPacket, match="past the property length of 2"):
        read_properties(b"\x02\x23\x00\x01", 0, "PUBLISH")
    with pytest.raises(MalformedPacket, match="properties end before its value"):
        read_properties(b"\x01\x01\x01", 0, "PUBLISH")


def test_empty_properties_encode_as_zero_length_v5_MQTT_2_2_2_1():
    assert encode_properties({}) == b"\x00"
    assert read_properties(b"\x00", 0, "CONNECT") == ({}, 1)


def test_long_property_length():
    props = {"user_property": [("k" * 100, "v" * 100)]}
    raw = encode_properties(props, "PUBLISH")
    assert raw[:2] == b"\xcd\x01"  # 205 = 1 + 2 + 100 + 2 + 100: a two byte length
    assert read_properties(raw, 0, "PUBLISH") == (props, len(raw))
