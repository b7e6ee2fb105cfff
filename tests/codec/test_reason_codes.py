"""Reason codes (2.4) and the 3.1.1 Connect Return codes."""

from __future__ import annotations

import re

import pytest

from lastwill.codec import reason_codes as rc
from lastwill.codec.reason_codes import (
    REASON_NAMES,
    ReasonCode,
    connack_allowed_v311,
    connack_reason_code_from_v311,
    connack_return_code_v311,
    reason_name,
)

from .spec import load


def _member(name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def test_every_spec_reason_code_has_a_member_and_name():
    for row in load("5.0")["reason_codes"]:
        member = ReasonCode[_member(row["name"])]
        assert member == row["value"], row
        assert reason_name(row["value"], row["packets"][0]) == row["name"]


def test_zero_aliases():
    assert ReasonCode.SUCCESS is ReasonCode.NORMAL_DISCONNECTION is ReasonCode.GRANTED_QOS_0
    assert ReasonCode(0).name == "SUCCESS"
    assert reason_name(0) == "Success"
    assert reason_name(0, "DISCONNECT") == "Normal disconnection"
    assert reason_name(0, "SUBACK") == "Granted QoS 0"


def test_names_cover_every_member():
    assert set(REASON_NAMES) == {int(m) for m in ReasonCode}
    assert reason_name(0x07) == "Unknown reason code 0x07"


def test_code_sets_match_the_spec_tables():
    spec = load("5.0")["reason_codes"]
    for packet, codes in [
        ("CONNACK", rc.CONNACK_CODES), ("PUBACK", rc.PUBACK_CODES), ("PUBREC", rc.PUBREC_CODES),
        ("PUBREL", rc.PUBREL_CODES), ("PUBCOMP", rc.PUBCOMP_CODES), ("SUBACK", rc.SUBACK_CODES),
        ("UNSUBACK", rc.UNSUBACK_CODES), ("DISCONNECT", rc.DISCONNECT_CODES), ("AUTH", rc.AUTH_CODES),
    ]:
        assert codes == {r["value"] for r in spec if packet in r["packets"]}, packet


@pytest.mark.parametrize(
    "reason, return_code",
    [
        (0x00, 0), (0x84, 1), (0x85, 2), (0x88, 3), (0x89, 3), (0x9C, 3), (0x9D, 3), (0x9F, 3), (0x97, 3),
        (0x86, 4), (0x8C, 4), (0x87, 5), (0x8A, 5), (0x80, 3), (0x81, 3), (0x82, 3), (0x83, 3), (0x95, 3),
        (0x9A, 3), (0x9B, 3),
    ],
)
def test_connack_return_code_v311(reason, return_code):
    assert connack_return_code_v311(reason) == return_code


def test_connack_return_code_v311_rejects_non_connack_codes():
    with pytest.raises(ValueError):
        connack_return_code_v311(0x10)


def test_every_connack_code_maps():
    for code in rc.CONNACK_CODES:
        assert 0 <= connack_return_code_v311(code) <= 5


def test_v311_return_codes_round_trip():
    for return_code in range(6):
        assert connack_return_code_v311(connack_reason_code_from_v311(return_code)) == return_code
    assert connack_reason_code_from_v311(6) is None


def test_no_connack_for_a_nonconforming_connect_v311_MQTT_3_1_4_1():
    assert not connack_allowed_v311(0x81)
    assert not connack_allowed_v311(0x82)
    assert connack_allowed_v311(0x84)
    assert connack_allowed_v311(0x87)
