"""MQTT 5.0 sections 3.8-3.11: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK.

Malformed packets are sent as raw bytes (the codec would refuse to build them); the reason code
tables are copied from the specification (3.9.3 Table 3-8, 3.11.3 Table 3-9).
"""

from __future__ import annotations

import unicodedata

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Puback, Pubcomp, Pubrec, Subscribe, Subscription, Unsubscribe
from lastwill.config import MAX_PACKET_LIMIT
from tests.core.harness import Harness

# 3.9.3 Table 3-8 Subscribe Reason Codes
SUBACK_REASON_CODES = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
# 3.11.3 Table 3-9 Unsubscribe Reason Codes
UNSUBACK_REASON_CODES = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}


def _packet(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((first, len(body))) + body


def _utf8(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


def _subscribe_body(pid: int, *pairs: tuple[bytes, int]) -> bytes:
    return pid.to_bytes(2, "big") + b"\x00" + b"".join(_utf8(f) + bytes((o,)) for f, o in pairs)


def _unsubscribe_body(pid: int, *filters: bytes) -> bytes:
    return pid.to_bytes(2, "big") + b"\x00" + b"".join(_utf8(f) for f in filters)


def _refused(c, code: int) -> None:
    assert c.take("Suback") == [] and c.take("Unsuback") == [], "the bad packet was answered"
    (d,) = c.take("Disconnect")
    assert d.reason_code == code, f"DISCONNECT 0x{d.reason_code:02X}, expected 0x{code:02X}"
    assert c.closed


# ---- 3.8.1 / 3.10.1: reserved fixed header flags ----------------------------------------------


def test_subscribe_reserved_flags_must_be_0010_v5_MQTT_3_8_1_1():
    good = _subscribe_body(1, (b"t", 1))
    for flags in (0x0, 0x1, 0x3, 0x6, 0x8, 0xA, 0xF):
        h = Harness()
        c = h.connect("c")
        c.send_bytes(_packet(0x80 | flags, good))
        _refused(c, 0x81)
    h = Harness()
    c = h.connect("c")
    c.send_bytes(_packet(0x82, good))
    assert [a.reason_codes for a in c.take("Suback")] == [[1]] and c.closed is None


def test_unsubscribe_reserved_flags_must_be_0010_v5_MQTT_3_10_1_1():
    good = _unsubscribe_body(1, b"t")
    for flags in (0x0, 0x1, 0x3, 0x6, 0x8, 0xA, 0xF):
        h = Harness()
        c = h.connect("c", session_expiry_interval=100)
        c.subscribe("t")
        c.send_bytes(_packet(0xA0 | flags, good))
        _refused(c, 0x81)
        assert "t" in h.core.sessions["c"].subscriptions  # the malformed UNSUBSCRIBE did nothing
    h = Harness()
    c = h.connect("c")
    c.send_bytes(_packet(0xA2, good))
    assert [a.reason_codes for a in c.take("Unsuback")] == [[0x11]] and c.closed is None


# ---- 3.8.3 / 3.10.3: the payload -----------------------------------------------------------------

ILL_FORMED = [
    b"a\xc3",  # truncated two-byte sequence
    b"\xed\xa0\x80",  # an encoded surrogate, U+D800 [MQTT-1.5.4-1]
    b"\xc0\xaf",  # overlong encoding of '/'
    b"\xff",
]


def test_subscribe_topic_filter_must_be_utf8_v5_MQTT_3_8_3_1():
    for raw in ILL_FORMED:
        h = Harness()
        c = h.connect("c")
        c.send_bytes(_packet(0x82, _subscribe_body(1, (raw, 1))))
        _refused(c, 0x81)
    h = Harness()
    c = h.connect("c")
    c.send_bytes(_packet(0x82, _subscribe_body(1, ("caf\u00e9/\u2603".encode(), 1))))
    assert [a.reason_codes for a in c.take("Suback")] == [[1]]


def test_subscribe_without_topic_filter_is_protocol_error_v5_MQTT_3_8_3_2():
    h = Harness()
    c = h.connect("c")
    c.send_bytes(_packet(0x82, b"\x00\x01\x00"))  # packet id, empty properties, no payload
    _refused(c, 0x82)


def test_subscription_options_reserved_bits_are_malformed_v5_MQTT_3_8_3_5():
    for opts in (0x40, 0x80, 0xC1):
        h = Harness()
        c = h.connect("c")
        c.send_bytes(_packet(0x82, _subscribe_body(1, (b"ok", 1), (b"t", opts))))
        _refused(c, 0x81)
        assert len(h.core.tree) == 0  # not even the first, valid, filter was subscribed


def test_unsubscribe_topic_filter_must_be_utf8_v5_MQTT_3_10_3_1():
    for raw in ILL_FORMED:
        h = Harness()
        c = h.connect("c")
        c.subscribe("t")
        c.send_bytes(_packet(0xA2, _unsubscribe_body(1, raw)))
        _refused(c, 0x81)


def test_unsubscribe_without_topic_filter_is_protocol_error_v5_MQTT_3_10_3_2():
    h = Harness()
    c = h.connect("c")
    c.send_bytes(_packet(0xA2, b"\x00\x01\x00"))
    _refused(c, 0x82)


# ---- 3.8.4: the response to SUBSCRIBE --------------------------------------------------------------


def test_server_answers_subscribe_with_suback_of_same_packet_id_v5_MQTT_3_8_4_1_MQTT_3_8_4_2():
    h = Harness()
    c = h.connect("c")
    for pid in (1, 0x1234, 0xBEEF, 65535):
        c.send(Subscribe(pid, [Subscription("t", 1)]))
        assert [(a.packet_id, a.reason_codes) for a in c.take()] == [(pid, [1])]
    # a SUBSCRIBE whose every filter fails still gets its SUBACK
    c.send(Subscribe(77, [Subscription("a/#/b", 1)]))
    assert [(a.packet_id, a.reason_codes) for a in c.take("Suback")] == [(77, [0x8F])]


def test_replacing_subscription_resends_retained_and_loses_nothing_v5_MQTT_3_8_4_4():
    h = Harness()
    p = h.connect("p")
    p.publish("r", b"keep", qos=1, retain=True)
    s = h.connect("s", receive_maximum=1)
    assert s.subscribe("r", qos=1) == [1]
    (first,) = s.messages()
    assert first.payload == b"keep" and first.retain
    s.send(Puback(first.packet_id))
    # Retain Handling 0 on an identical filter: the retained message is sent again
    assert s.subscribe("r", qos=1, retain_handling=0) == [1]
    (again,) = s.messages()
    assert again.payload == b"keep" and again.retain
    # messages in flight and queued when the subscription is replaced are not lost
    p.publish("r", b"m1", qos=1)  # stays unacknowledged (the retained copy is in flight)
    p.publish("r", b"m2", qos=1)
    assert s.subscribe("r", qos=1, retain_handling=2) == [1]
    got = [again]
    for _ in range(5):
        s.send(Puback(got[-1].packet_id))
        nxt = s.messages()
        if not nxt:
            break
        got.extend(nxt)
    assert [m.payload for m in got] == [b"keep", b"m1", b"m2"]
    assert h.core.sessions["s"].inflight == {} and not h.core.sessions["s"].queue


def test_multiple_topic_filters_handled_as_a_sequence_of_subscribes_v5_MQTT_3_8_4_5():
    h = Harness()
    p = h.connect("p")
    p.publish("r/1", b"kept", qos=1, retain=True)
    c = h.connect("c")
    c.send(Subscribe(9, [Subscription("r/1", 0), Subscription("r/+", 1), Subscription("a/#/b", 1),
                         Subscription("x", 0), Subscription("x", 2)]))
    acks = c.take("Suback")
    assert [(a.packet_id, a.reason_codes) for a in acks] == [(9, [0, 1, 0x8F, 0, 2])]  # one SUBACK
    # each filter sent the retained messages it matches, as a SUBSCRIBE of its own would
    assert sorted((m.payload, m.qos) for m in c.messages()) == [(b"kept", 0), (b"kept", 1)]
    # the second "x" replaced the first, as a later SUBSCRIBE would: one subscription, QoS 2
    p.publish("x", b"y", qos=2)
    assert [(m.payload, m.qos) for m in c.messages()] == [(b"y", 2)]


def test_suback_code_is_granted_qos_or_failure_v5_MQTT_3_8_4_7():
    h = Harness(maximum_qos=1)
    c = h.connect("c")
    codes = c.subscribe("two", qos=2)
    assert codes == [1]  # the maximum QoS granted, lower than requested
    c.send(Subscribe(2, [Subscription("zero", 0), Subscription("bad/#/x", 1)]))
    (ack,) = c.take("Suback")
    assert ack.reason_codes[0] == 0 and ack.reason_codes[1] >= 0x80
    p = h.connect("p")
    p.publish("two", b"a", qos=1)
    p.publish("zero", b"b", qos=1)
    assert [(m.topic, m.qos) for m in c.messages()] == [("two", 1), ("zero", 0)]
    # a failed subscription does not exist (and the invalid filter is refused by UNSUBSCRIBE too)
    assert "bad/#/x" not in h.core.sessions["c"].subscriptions
    assert c.unsubscribe("bad/#/x") == [0x8F]


# ---- 3.9: SUBACK ---------------------------------------------------------------------------------


def test_suback_uses_subscribe_reason_codes_v5_MQTT_3_9_3_2():
    seen = []
    h = Harness(maximum_qos=1)
    c = h.connect("c")
    c.send(Subscribe(1, [Subscription("a", 0), Subscription("b", 1), Subscription("c", 2),
                         Subscription("d/#/e", 1), Subscription("$share//x", 1), Subscription("$share/g/x", 1)]))
    seen += c.take("Suback")[0].reason_codes
    h = Harness(shared_subscription_available=False, wildcard_subscription_available=False)
    c = h.connect("c")
    c.send(Subscribe(1, [Subscription("$share/g/x", 1), Subscription("w/+", 2), Subscription("w/#", 2),
                         Subscription("plain", 2)]))
    codes = c.take("Suback")[0].reason_codes
    assert codes == [0x9E, 0xA2, 0xA2, 2]
    seen += codes
    assert set(seen) <= SUBACK_REASON_CODES, sorted(set(seen) - SUBACK_REASON_CODES)


def _audit_sizes(c, limit: int, kind: str) -> list:
    packets = c.take(kind)
    assert packets
    for pkt in packets:
        assert len(encode(pkt, 5)) <= limit, f"{kind} larger than the client's Maximum Packet Size: {pkt}"
    return packets


def test_suback_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_9_2_1_MQTT_3_9_2_2():
    # a CONNACK of 12 bytes at most (the client must get one to send SUBSCRIBE [MQTT-3.1.2-24])
    h = Harness(shared_subscription_available=False, receive_maximum=65535, topic_alias_maximum=0)
    c = h.connect("c", maximum_packet_size=12, request_problem_information=1)
    c.send(Subscribe(1, [Subscription("a/#/b", 1)]))  # failures the broker could explain
    c.send(Subscribe(2, [Subscription("$share/g/t", 1)]))
    c.send(Subscribe(3, [Subscription("ok", 1)]))
    acks = _audit_sizes(c, 12, "Suback")
    assert [a.reason_codes for a in acks] == [[0x8F], [0x9E], [1]]


# ---- 3.10.4: the response to UNSUBSCRIBE ---------------------------------------------------------


def test_unsubscribe_compares_filters_character_by_character_v5_MQTT_3_10_4_1():
    h = Harness()
    c = h.connect("c")
    nfc = unicodedata.normalize("NFC", "caf\u00e9")
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    c.subscribe("a/+", "a/b", "A/b", nfc, qos=0)
    # no wildcard matching, no case folding, no normalisation: only the identical filter goes
    assert c.unsubscribe("a/#", "a/B", nfd, "a/b/") == [0x11, 0x11, 0x11, 0x11]
    assert c.unsubscribe("a/b") == [0x00]
    p = h.connect("p")
    p.publish("a/b", b"via a/+")
    assert c.payloads() == [b"via a/+"]  # the wildcard subscription matching it is still there
    assert c.unsubscribe("a/+") == [0x00]
    p.publish("a/b", b"none")
    p.publish("A/b", b"still")
    p.publish(nfc, b"nfc")
    assert c.payloads() == [b"still", b"nfc"]


def test_unsubscribe_stops_new_messages_v5_MQTT_3_10_4_2():
    h = Harness()
    c = h.connect("c", clean_start=False, session_expiry_interval=100)
    c.subscribe("t", "$share/g/t", qos=1)
    p = h.connect("p")
    assert c.unsubscribe("t", "$share/g/t") == [0x00, 0x00]
    for qos in (0, 1, 2):
        p.publish("t", b"after", qos=qos)
    assert c.messages() == []
    c.drop()  # nor are any added to the session while it is offline
    p.publish("t", b"offline", qos=1)
    assert h.connect("c", clean_start=False).messages() == []


def test_unsubscribe_completes_deliveries_already_started_v5_MQTT_3_10_4_3():
    h = Harness()
    c = h.connect("c", clean_start=False, session_expiry_interval=100)
    c.subscribe("q1", qos=1)
    c.subscribe("q2", qos=2)
    p = h.connect("p")
    p.publish("q1", b"one", qos=1)
    p.publish("q2", b"two", qos=2)
    m1, m2 = c.messages()
    assert c.unsubscribe("q1", "q2") == [0, 0]
    # the QoS 2 exchange goes on: PUBREC is answered by PUBREL
    c.send(Pubrec(m2.packet_id))
    assert [r.packet_id for r in c.take("Pubrel")] == [m2.packet_id]
    # and the QoS 1 message, still unacknowledged, is re-sent on a resumed session
    c.drop()
    c2 = h.connect("c", clean_start=False)
    (again,) = c2.messages()
    assert (again.payload, again.packet_id, again.dup) == (b"one", m1.packet_id, True)
    assert [r.packet_id for r in c2.take("Pubrel")] == [m2.packet_id]
    c2.send(Puback(m1.packet_id))
    c2.send(Pubcomp(m2.packet_id))
    assert h.core.sessions["c"].inflight == {}


def test_multiple_unsubscribe_filters_processed_in_sequence_one_unsuback_v5_MQTT_3_10_4_6():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a", "b")
    c.send(Unsubscribe(42, ["a", "a", "x", "b"]))
    acks = c.take("Unsuback")
    # as separate UNSUBSCRIBEs: the second "a" finds nothing left
    assert [(a.packet_id, a.reason_codes) for a in acks] == [(42, [0x00, 0x11, 0x11, 0x00])]
    assert len(h.core.tree) == 0


# ---- 3.11: UNSUBACK ----------------------------------------------------------------------------


def test_unsuback_codes_in_order_of_filters_v5_MQTT_3_11_3_1():
    h = Harness()
    c = h.connect("c")
    c.subscribe("m", "$share/g/s")
    assert c.unsubscribe("x", "m", "y", "$share/g/s", "m") == [0x11, 0x00, 0x11, 0x00, 0x11]


def test_unsuback_uses_unsubscribe_reason_codes_v5_MQTT_3_11_3_2():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a", "$share/g/b", "c/+")
    seen = c.unsubscribe("a", "$share/g/b", "c/+", "never", "bad/#/x", "$share//x", "+/+")
    assert seen[:4] == [0x00, 0x00, 0x00, 0x11]
    assert set(seen) <= UNSUBACK_REASON_CODES, sorted(set(seen) - UNSUBACK_REASON_CODES)


def test_unsuback_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_11_2_1_MQTT_3_11_2_2():
    # a CONNACK of 8 bytes at most (the client must get one to send UNSUBSCRIBE [MQTT-3.1.2-24])
    h = Harness(receive_maximum=65535, topic_alias_maximum=0, max_packet_size=MAX_PACKET_LIMIT)
    c = h.connect("c", maximum_packet_size=8, request_problem_information=1)
    c.send(Unsubscribe(1, ["never-subscribed"]))  # 0x11: the broker could explain it
    c.send(Unsubscribe(2, ["bad/#/x"]))
    acks = _audit_sizes(c, 8, "Unsuback")
    assert [a.packet_id for a in acks] == [1, 2]
