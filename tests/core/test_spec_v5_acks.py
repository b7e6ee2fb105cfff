"""MQTT 5.0 sections 3.4-3.7: PUBACK, PUBREC, PUBREL, PUBCOMP, as the broker sends and receives them.

The reason code tables are copied from the specification (3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1), not
imported from the codec, so that a wrong table in the codec cannot make these tests agree with it.
"""

from __future__ import annotations

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel
from tests.core.harness import Harness

# 3.4.2.1 Table 3-4 PUBACK Reason Codes; 3.5.2.1 Table 3-5 PUBREC Reason Codes (the same list)
PUBACK_REASON_CODES = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
PUBREC_REASON_CODES = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
# 3.6.2.1 Table 3-6 PUBREL Reason Codes; 3.7.2.1 Table 3-7 PUBCOMP Reason Codes
PUBREL_REASON_CODES = {0x00, 0x92}
PUBCOMP_REASON_CODES = {0x00, 0x92}


def _sent_to(h: Harness, kind: str, *clients) -> list:
    """Every packet of type ``kind`` still in the inboxes of ``clients`` (removed from them)."""
    out = []
    for c in clients:
        out.extend(c.take(kind))
    return out


def _exercise_qos_flows(h: Harness, s, p) -> None:
    """Drive every PUBACK / PUBREC / PUBREL / PUBCOMP path of the broker, both directions.

    ``s`` subscribes to "t" at QoS 2; ``p`` publishes. Includes the unusual paths: no subscriber,
    a duplicate QoS 2 PUBLISH, PUBREL / PUBREC for unknown packet identifiers, a refused PUBREC.
    """
    # inbound QoS 1 and QoS 2, with and without subscribers
    p.send(Publish("t", b"1", 1, False, False, 11))
    p.send(Publish("nobody/listens", b"2", 1, False, False, 12))
    p.send(Publish("t", b"3", 2, False, False, 13))
    p.send(Publish("t", b"3", 2, False, True, 13))  # duplicate before PUBREL: PUBREC again
    p.send(Pubrel(13))
    p.send(Publish("t", b"5", 2, False, False, 15))
    p.send(Pubrel(15))
    p.send(Publish("nobody/listens", b"4", 2, False, False, 14))
    p.send(Pubrel(14))
    p.send(Pubrel(999))  # unknown: PUBCOMP 0x92
    # outbound QoS 2: the subscriber completes one, refuses one, and sends a PUBREC for nothing
    first, second = (m for m in s.messages() if m.qos == 2)
    s.send(Pubrec(first.packet_id))
    s.send(Pubcomp(first.packet_id))
    s.send(Pubrec(second.packet_id, 0x80))
    s.send(Pubrec(4242))  # unknown: PUBREL 0x92
    for m in s.messages():
        if m.qos == 1:
            s.send(Puback(m.packet_id))


def _qos_flow_harness(**connect_props):
    h = Harness()
    s = h.connect("s", **connect_props)
    assert s.subscribe("t", qos=2) == [2]
    p = h.connect("p", **connect_props)
    return h, s, p


# ---- 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1: the reason codes the broker sends --------------------


def test_puback_sent_by_server_uses_puback_reason_codes_v5_MQTT_3_4_2_1():
    h, s, p = _qos_flow_harness()
    _exercise_qos_flows(h, s, p)
    acks = _sent_to(h, "Puback", s, p)
    assert sorted(a.packet_id for a in acks) == [11, 12]  # one PUBACK per QoS 1 PUBLISH, its own id
    assert {a.reason_code for a in acks} <= PUBACK_REASON_CODES


def test_pubrec_sent_by_server_uses_pubrec_reason_codes_v5_MQTT_3_5_2_1():
    h, s, p = _qos_flow_harness()
    _exercise_qos_flows(h, s, p)
    recs = _sent_to(h, "Pubrec", s, p)
    assert [r.packet_id for r in recs] == [13, 13, 15, 14]
    assert {r.reason_code for r in recs} <= PUBREC_REASON_CODES


def test_pubrel_sent_by_server_uses_pubrel_reason_codes_v5_MQTT_3_6_2_1():
    h, s, p = _qos_flow_harness()
    _exercise_qos_flows(h, s, p)
    rels = _sent_to(h, "Pubrel", s, p)
    assert len(rels) == 2  # one for the completed delivery, one (0x92) for the unknown PUBREC
    assert {r.reason_code for r in rels} <= PUBREL_REASON_CODES
    assert [r.reason_code for r in rels if r.packet_id == 4242] == [0x92]


def test_pubcomp_sent_by_server_uses_pubcomp_reason_codes_v5_MQTT_3_7_2_1():
    h, s, p = _qos_flow_harness()
    _exercise_qos_flows(h, s, p)
    comps = _sent_to(h, "Pubcomp", s, p)
    assert sorted(c.packet_id for c in comps) == [13, 14, 15, 999]
    assert {c.reason_code for c in comps} <= PUBCOMP_REASON_CODES
    assert [c.reason_code for c in comps if c.packet_id == 999] == [0x92]


def _ack_with_code(first_byte: int, packet_id: int, code: int) -> bytes:
    return bytes((first_byte, 3, packet_id >> 8, packet_id & 0xFF, code))


def test_puback_or_pubrec_with_a_code_from_another_table_is_refused_v5_MQTT_3_4_2_1_MQTT_3_5_2_1():
    # 0x92 (Packet Identifier not found) is a PUBREL/PUBCOMP code, not a PUBACK/PUBREC one
    for first in (0x40, 0x50):
        h = Harness()
        c = h.connect("c")
        c.send_bytes(_ack_with_code(first, 1, 0x92))
        (d,) = c.take("Disconnect")
        assert d.reason_code in (0x81, 0x82) and c.closed


def test_pubrel_or_pubcomp_with_a_code_from_another_table_is_refused_v5_MQTT_3_6_2_1_MQTT_3_7_2_1():
    # 0x10 (No matching subscribers) is a PUBACK/PUBREC code, not a PUBREL/PUBCOMP one
    for first in (0x62, 0x70):
        h = Harness()
        c = h.connect("c")
        c.send_bytes(_ack_with_code(first, 1, 0x10))
        (d,) = c.take("Disconnect")
        assert d.reason_code in (0x81, 0x82) and c.closed


# ---- 3.4.2.2.2/3 ... 3.7.2.2.2/3: Reason String / User Property within the Maximum Packet Size ---

SMALL = 16  # a Maximum Packet Size that fits every acknowledgement but no Reason String


def _assert_all_fit(packets, kind: str) -> None:
    assert packets, f"no {kind} was sent"
    for pkt in packets:
        size = len(encode(pkt, 5))
        assert size <= SMALL, f"{kind} of {size} bytes exceeds the client's Maximum Packet Size {SMALL}: {pkt}"


def test_puback_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_4_2_2_MQTT_3_4_2_3():
    h, s, p = _qos_flow_harness(maximum_packet_size=SMALL, request_problem_information=1)
    _exercise_qos_flows(h, s, p)
    _assert_all_fit(_sent_to(h, "Puback", s, p), "PUBACK")


def test_pubrec_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_5_2_2_MQTT_3_5_2_3():
    h, s, p = _qos_flow_harness(maximum_packet_size=SMALL, request_problem_information=1)
    _exercise_qos_flows(h, s, p)
    _assert_all_fit(_sent_to(h, "Pubrec", s, p), "PUBREC")


def test_pubrel_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_6_2_2_MQTT_3_6_2_3():
    h, s, p = _qos_flow_harness(maximum_packet_size=SMALL, request_problem_information=1)
    _exercise_qos_flows(h, s, p)
    rels = _sent_to(h, "Pubrel", s, p)
    assert any(r.reason_code == 0x92 for r in rels)  # an error the broker could have explained
    _assert_all_fit(rels, "PUBREL")


def test_pubcomp_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_7_2_2_MQTT_3_7_2_3():
    h, s, p = _qos_flow_harness(maximum_packet_size=SMALL, request_problem_information=1)
    _exercise_qos_flows(h, s, p)
    comps = _sent_to(h, "Pubcomp", s, p)
    assert any(c.reason_code == 0x92 for c in comps)
    _assert_all_fit(comps, "PUBCOMP")


# ---- 3.6.1: PUBREL fixed header flags ---------------------------------------------------------


def test_pubrel_reserved_flags_must_be_0010_v5_MQTT_3_6_1_1():
    for flags in (0x0, 0x1, 0x3, 0x4, 0x8, 0xA, 0xF):
        h = Harness()
        p = h.connect("p")
        p.send(Publish("t", b"x", 2, False, False, 5))
        assert [r.packet_id for r in p.take("Pubrec")] == [5]
        p.send_bytes(bytes((0x60 | flags, 2, 0, 5)))
        assert p.take("Pubcomp") == [], f"PUBREL with flags {flags:04b} was processed"
        (d,) = p.take("Disconnect")
        assert d.reason_code == 0x81 and p.closed, f"flags {flags:04b}"
    # the right flags are accepted
    h = Harness()
    p = h.connect("p")
    p.send(Publish("t", b"x", 2, False, False, 5))
    p.send_bytes(bytes((0x62, 2, 0, 5)))
    assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(5, 0)] and p.closed is None
