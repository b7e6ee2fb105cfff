"""MQTT 5.0 sections 3.1 (CONNECT) and 3.2 (CONNACK), on the core with the fake link.

Malformed CONNECTs are sent as raw bytes (``send_bytes``) so that the decoder's checks and the
core's reaction (close; at most a refusing CONNACK; nothing stored, no will) are tested together.
"""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from tests.core.harness import Harness, will
from tests.rawbytes import packet, props, s, u16

# Table 3-1 Connect Reason Code values (MQTT 5.0, 3.2.2.2)
CONNECT_REASON_CODES = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
                        0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}

# ---- raw CONNECT building -------------------------------------------------------------------------


WILL_FLAG, WILL_QOS1, WILL_QOS2, WILL_RETAIN, PASSWORD, USER_NAME, CLEAN = 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x02


def connect(payload: bytes = s("c"), flags: int = CLEAN, *, name: bytes = b"MQTT", level: int = 5,
            keep_alive: int = 0, properties: bytes = b"\x00") -> bytes:
    return packet(0x10, s(name) + bytes((level, flags)) + u16(keep_alive) + properties + payload)


WILL_FIELDS = props(b"\x18" + (0).to_bytes(4, "big")) + s("dead/c") + s(b"gone")  # props, topic, payload

# ---- checks ---------------------------------------------------------------------------------------


def refused(c) -> Connack | None:
    """The connection is closed and nothing but one refusing CONNACK (if any) was sent."""
    out = c.take()
    assert c.closed, f"connection still open; received {out}"
    assert all(isinstance(p, Connack) for p in out) and len(out) <= 1, out
    if out:
        assert out[0].reason_code >= 0x80 and not out[0].session_present
        return out[0]
    return None


def open_raw(h: Harness, data: bytes):
    c = h.open()
    c.send_bytes(data)
    return c


def accepted(c) -> Connack:
    (ack,) = c.take("Connack")
    assert ack.reason_code == 0 and c.closed is None
    return ack


# ---- 3.1.2.1 Protocol Name ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQTT5", b"", b"MQIsdp"])
def test_protocol_name_not_mqtt_closes_v5_MQTT_3_1_2_1(name):
    h = Harness()
    watcher = h.subscriber("#")
    c = open_raw(h, connect(s("dev") + WILL_FIELDS, CLEAN | WILL_FLAG, name=name))
    ack = refused(c)
    assert ack is None or ack.reason_code == 0x84  # MAY say Unsupported Protocol Version; MUST close
    assert "dev" not in h.core.sessions
    h.advance(10)
    assert watcher.messages() == []


# ---- 3.1.2.3 Connect Flags ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [0x01, CLEAN | 0x01, CLEAN | WILL_FLAG | 0x01])
def test_connect_reserved_flag_set_is_malformed_v5_MQTT_3_1_2_3(flags):
    h = Harness()
    watcher = h.subscriber("#")
    payload = s("dev") + (WILL_FIELDS if flags & WILL_FLAG else b"")
    c = open_raw(h, connect(payload, flags))
    ack = refused(c)
    assert ack is None or ack.reason_code == 0x81
    assert "dev" not in h.core.sessions
    h.advance(10)
    assert watcher.messages() == []


def test_connect_reserved_flag_zero_accepted_v5_MQTT_3_1_2_3():
    h = Harness()
    accepted(open_raw(h, connect(s("dev"), CLEAN)))


# ---- 3.1.2.4 Clean Start ----------------------------------------------------------------------------


def test_clean_start_0_without_session_creates_one_v5_MQTT_3_1_2_6_MQTT_3_1_4_4():
    h = Harness()
    c = open_raw(h, connect(s("dev"), 0, properties=props(b"\x11" + (60).to_bytes(4, "big"))))
    assert accepted(c).session_present is False  # nothing to resume: a new session
    assert "dev" in h.core.sessions
    c.subscribe("t/#")
    c.drop()
    h.connect("p").publish("t/1", b"kept", qos=1)
    c2 = open_raw(h, connect(s("dev"), 0))
    assert accepted(c2).session_present is True  # the session created by the first CONNECT
    assert c2.payloads() == [b"kept"]


def test_clean_start_1_discards_existing_session_v5_MQTT_3_1_4_4():
    h = Harness()
    c = h.connect("dev", clean_start=False, session_expiry_interval=60)
    c.subscribe("t/#")
    c.drop()
    h.connect("p").publish("t/1", b"queued", qos=1)
    c2 = open_raw(h, connect(s("dev"), CLEAN, properties=props(b"\x11" + (60).to_bytes(4, "big"))))
    assert accepted(c2).session_present is False
    assert c2.messages() == [] and h.core.sessions["dev"].subscriptions == {}
    h.connect("p").publish("t/1", b"new", qos=1)
    assert c2.messages() == []


# ---- 3.1.2.5 - 3.1.2.7 Will Flag, Will QoS, Will Retain -------------------------------------------------

MISSING_WILL_PARTS = {
    "no-will-fields": s("dev"),
    "will-properties-only": s("dev") + b"\x00",
    "no-will-payload": s("dev") + b"\x00" + s("dead/c"),
    "will-payload-cut": s("dev") + b"\x00" + s("dead/c") + b"\x00\x04go",
}


@pytest.mark.parametrize("payload", MISSING_WILL_PARTS.values(), ids=MISSING_WILL_PARTS.keys())
def test_will_flag_needs_will_properties_topic_and_payload_v5_MQTT_3_1_2_9(payload):
    h = Harness()
    watcher = h.subscriber("#")
    c = open_raw(h, connect(payload, CLEAN | WILL_FLAG))
    refused(c)
    assert "dev" not in h.core.sessions
    h.advance(10)
    assert watcher.messages() == []


def test_will_flag_with_all_will_fields_accepted_v5_MQTT_3_1_2_9():
    h = Harness()
    watcher = h.subscriber("#")
    c = open_raw(h, connect(s("dev") + WILL_FIELDS, CLEAN | WILL_FLAG))
    accepted(c)
    c.drop()
    assert watcher.payloads() == [b"gone"]


@pytest.mark.parametrize("will_qos", [WILL_QOS1, WILL_QOS2, WILL_QOS1 | WILL_QOS2])
def test_will_qos_without_will_flag_is_malformed_v5_MQTT_3_1_2_11(will_qos):
    h = Harness()
    c = open_raw(h, connect(s("dev"), CLEAN | will_qos))
    ack = refused(c)
    assert ack is None or ack.reason_code == 0x81
    assert "dev" not in h.core.sessions


def test_will_retain_without_will_flag_is_malformed_v5_MQTT_3_1_2_13():
    h = Harness()
    c = open_raw(h, connect(s("dev"), CLEAN | WILL_RETAIN))
    ack = refused(c)
    assert ack is None or ack.reason_code == 0x81
    assert "dev" not in h.core.sessions
    assert h.core.retained.get("dead/c") is None


# ---- 3.1.2.8 / 3.1.2.9 User Name and Password Flags ----------------------------------------------------


def test_user_name_flag_0_with_user_name_present_is_malformed_v5_MQTT_3_1_2_16():
    h = Harness()
    c = open_raw(h, connect(s("dev") + s("alice"), CLEAN))
    refused(c)
    assert "dev" not in h.core.sessions


@pytest.mark.parametrize("payload", [s("dev"), s("dev") + b"\x00", s("dev") + b"\x00\x05ali"])
def test_user_name_flag_1_without_user_name_is_malformed_v5_MQTT_3_1_2_17(payload):
    h = Harness()
    c = open_raw(h, connect(payload, CLEAN | USER_NAME))
    refused(c)
    assert "dev" not in h.core.sessions


def test_password_flag_0_with_password_present_is_malformed_v5_MQTT_3_1_2_18():
    h = Harness()
    c = open_raw(h, connect(s("dev") + s("alice") + s(b"secret"), CLEAN | USER_NAME))
    refused(c)
    assert "dev" not in h.core.sessions


@pytest.mark.parametrize("flags,payload", [
    (CLEAN | USER_NAME | PASSWORD, s("dev") + s("alice")),
    (CLEAN | PASSWORD, s("dev")),
    (CLEAN | USER_NAME | PASSWORD, s("dev") + s("alice") + b"\x00\x09secr"),
])
def test_password_flag_1_without_password_is_malformed_v5_MQTT_3_1_2_19(flags, payload):
    h = Harness()
    c = open_raw(h, connect(payload, flags))
    refused(c)
    assert "dev" not in h.core.sessions


@pytest.mark.parametrize("flags,payload", [
    (CLEAN | USER_NAME, s("dev") + s("alice")),
    (CLEAN | USER_NAME | PASSWORD, s("dev") + s("alice") + s(b"\x00\xffsecret")),
    (CLEAN | PASSWORD, s("dev") + s(b"token")),  # 5.0 allows a Password without a User Name
    (CLEAN | USER_NAME | PASSWORD, s("dev") + s("") + s(b"")),
])
def test_user_name_and_password_present_as_flagged_accepted_v5_MQTT_3_1_2_17_MQTT_3_1_2_19(flags, payload):
    h = Harness()
    accepted(open_raw(h, connect(payload, flags)))


# ---- 3.1.2.11.4 Maximum Packet Size (the client's) -------------------------------------------------------


def wire_sizes(packets) -> list[int]:
    return [len(encode(p, 5)) for p in packets]


def test_server_never_sends_packet_above_client_maximum_packet_size_v5_MQTT_3_1_2_24():
    limit = 40
    h = Harness()
    watcher = h.connect("w", maximum_packet_size=limit)
    watcher.subscribe("#", qos=2)
    assert len(encode(watcher.connack, 5)) <= limit
    p = h.connect("p")
    for size in (1, 20, 30, 60, 500):
        p.publish("t", b"x" * size, qos=1)
        p.publish("t", b"y" * size, qos=2)
    got = watcher.take()
    assert got and max(wire_sizes(got)) <= limit
    # 2 + 3 + 2 + 1 + payload bytes: payloads of up to 32 bytes fit, the rest are discarded for it
    assert [len(m.payload) for m in got if isinstance(m, Publish)] == [1, 1, 20, 20, 30, 30]
    # refusals and errors with a Reason String: the string goes, the limit holds
    small = 24
    refused_c = h.connect("r", maximum_packet_size=small, authentication_method="SCRAM-SHA-256", expect=0x8C)
    assert len(encode(refused_c.connack, 5)) <= small
    c = h.connect("e", maximum_packet_size=small)
    c.send_bytes(b"\x41\x02\x00\x01")  # PUBACK with reserved flags: DISCONNECT 0x81
    (d,) = c.take()
    assert isinstance(d, Disconnect) and d.reason_code == 0x81 and len(encode(d, 5)) <= small


def test_resumed_session_resends_nothing_above_new_maximum_packet_size_v5_MQTT_3_1_2_24():
    h = Harness()
    s1 = h.connect("s", clean_start=False, session_expiry_interval=100, maximum_packet_size=1000)
    s1.subscribe("t", qos=2)
    p = h.connect("p")
    p.publish("t", b"L" * 500, qos=1)
    p.publish("t", b"s", qos=1)
    p.publish("t", b"M" * 400, qos=2)
    assert len(s1.messages()) == 3  # all unacknowledged
    s1.drop()
    p.publish("t", b"Q" * 300, qos=1)  # queued while offline
    p.publish("t", b"q", qos=1)
    s2 = h.connect("s", clean_start=False, maximum_packet_size=100)
    got = s2.take()
    assert max(wire_sizes(got)) <= 100
    assert [m.payload for m in got if isinstance(m, Publish)] == [b"s", b"q"]
    assert all(m.dup for m in got if isinstance(m, Publish) and m.payload == b"s")


# ---- 3.1.2.11.7 Request Problem Information --------------------------------------------------------------


def test_request_problem_information_0_no_reason_string_or_user_property_on_other_packets_v5_MQTT_3_1_2_29():
    h = Harness(maximum_qos=2)
    c = h.connect("c", request_problem_information=0)
    other = h.connect("o")
    c.subscribe("ok")
    c.send(Subscribe(50, [Subscription("bad/#/x", 1), Subscription("$share/g/t", 1, no_local=False)]))
    c.send(Unsubscribe(51, ["never-subscribed"]))
    c.send(Pubrel(999))  # unknown: PUBCOMP 0x92
    c.send(Pubrec(998))  # unknown: PUBREL 0x92
    c.publish("nobody", b"x", qos=1)
    c.publish("nobody", b"x", qos=2)
    other.publish("ok", b"hello", qos=2, user_property=[("k", "v")], content_type="t")
    got = c.take()
    kinds = {type(p).__name__ for p in got}
    assert {"Suback", "Unsuback", "Pubcomp", "Pubrel", "Puback", "Pubrec", "Publish"} <= kinds
    for p in got:
        if not isinstance(p, (Publish, Connack, Disconnect)):
            assert "reason_string" not in p.properties and "user_property" not in p.properties, p
    (m,) = [p for p in got if isinstance(p, Publish)]
    assert m.properties["user_property"] == [("k", "v")]  # PUBLISH keeps its User Properties


# ---- 3.1.3 Payload --------------------------------------------------------------------------------------


def test_connect_payload_fields_read_in_order_v5_MQTT_3_1_3_1():
    h = Harness()
    watcher = h.subscriber("#")
    payload = (s("dev") + props(b"\x03" + s("text/plain"), b"\x18" + (5).to_bytes(4, "big"))
               + s("dead/dev") + s(b"will-payload") + s("alice") + s(b"pw"))
    c = open_raw(h, connect(payload, CLEAN | WILL_FLAG | WILL_QOS1 | USER_NAME | PASSWORD,
                            properties=props(b"\x11" + (30).to_bytes(4, "big"))))
    accepted(c)
    w = h.core.sessions["dev"].will
    assert (w.topic, w.payload, w.qos) == ("dead/dev", b"will-payload", 1)
    assert w.properties == {"content_type": "text/plain", "will_delay_interval": 5}
    c.drop()
    h.advance(5)
    (m,) = watcher.messages()
    assert (m.topic, m.payload, m.properties.get("content_type")) == ("dead/dev", b"will-payload", "text/plain")


def test_connect_payload_fields_out_of_order_refused_v5_MQTT_3_1_3_1():
    h = Harness()
    watcher = h.subscriber("#")
    # Will Topic before the Will Properties, User Name before the Client Identifier
    swapped = s("alice") + s("dev") + s("dead/dev") + b"\x00" + s(b"bye")
    c = open_raw(h, connect(swapped, CLEAN | WILL_FLAG | USER_NAME))
    refused(c)
    assert h.core.sessions.keys() == {"watcher"}
    h.advance(10)
    assert watcher.messages() == []


def test_client_id_identifies_session_state_v5_MQTT_3_1_3_2():
    h = Harness()
    a = h.connect("a", clean_start=False, session_expiry_interval=100)
    a.subscribe("for-a", qos=1)
    a.drop()
    b = h.connect("b", clean_start=False, session_expiry_interval=100)
    assert b.connack.session_present is False  # a's state is not b's
    b.subscribe("for-b", qos=1)
    p = h.connect("p")
    p.publish("for-a", b"A", qos=1)
    p.publish("for-b", b"B", qos=1)
    assert b.payloads() == [b"B"]
    a2 = h.connect("a", clean_start=False)
    assert a2.connack.session_present is True
    assert a2.payloads() == [b"A"]  # queued in a's session, under its Client Identifier
    assert set(h.core.sessions["a"].subscriptions) == {"for-a"}
    assert set(h.core.sessions["b"].subscriptions) == {"for-b"}


@pytest.mark.parametrize("payload", [b"", b"\x00", s("dev")[:3]])
def test_client_id_missing_is_malformed_v5_MQTT_3_1_3_3(payload):
    h = Harness()
    c = open_raw(h, connect(payload, CLEAN))
    refused(c)
    assert h.core.sessions == {}


@pytest.mark.parametrize("raw", [b"d\xed\xa0\x80", b"\xff", b"\xc0\x80", b"d\x00v"])
def test_client_id_not_utf8_is_refused_and_closed_v5_MQTT_3_1_3_4_MQTT_3_1_3_8(raw):
    h = Harness()
    watcher = h.subscriber("#")
    c = open_raw(h, connect(s(raw) + WILL_FIELDS, CLEAN | WILL_FLAG))
    ack = refused(c)  # rejected: at most CONNACK with an error code, then closed
    assert ack is None or ack.reason_code in (0x81, 0x85)
    assert h.core.sessions.keys() == {"watcher"}
    c.send_bytes(b"\xc0\x00")
    assert c.take() == []
    h.advance(10)
    assert watcher.messages() == []


@pytest.mark.parametrize("client_id", [
    "0", "Z", "0123456789abcdefghijklm", "nopqrstuvwxyzABCDEFGHIJ", "KLMNOPQRSTUVWXYZ0123456", "a1B2c3",
])
def test_client_ids_of_1_to_23_alphanumerics_allowed_v5_MQTT_3_1_3_5(client_id):
    h = Harness()
    c = open_raw(h, connect(s(client_id), 0, properties=props(b"\x11" + (60).to_bytes(4, "big"))))
    ack = accepted(c)
    assert "assigned_client_identifier" not in ack.properties
    assert h.core.sessions[client_id].conn is not None
    c.drop()
    assert accepted(open_raw(h, connect(s(client_id), 0))).session_present


def test_zero_length_client_id_gets_unique_assigned_id_v5_MQTT_3_1_3_6_MQTT_3_1_3_7():
    h = Harness()
    expiry = props(b"\x11" + (60).to_bytes(4, "big"))
    c1 = open_raw(h, connect(s(""), 0, properties=expiry))
    c2 = open_raw(h, connect(s(""), CLEAN, properties=expiry))
    id1 = accepted(c1).properties["assigned_client_identifier"]
    id2 = accepted(c2).properties["assigned_client_identifier"]
    assert id1 and id2 and id1 != id2
    assert h.core.sessions[id1].conn is not None and h.core.sessions[id2].conn is not None
    # processed as if the client had sent that identifier: its session is found under it
    c1.subscribe("t")
    c1.drop()
    h.connect("p").publish("t", b"for-1", qos=1)
    back = open_raw(h, connect(s(id1), 0))
    ack = accepted(back)
    assert ack.session_present and "assigned_client_identifier" not in ack.properties
    assert back.payloads() == [b"for-1"]
    assert c2.closed is None  # the other assigned identifier is a different client


@pytest.mark.parametrize("raw", [b"al\xed\xa0\x80", b"\xfe", b"al\x00ce"])
def test_user_name_not_utf8_is_malformed_v5_MQTT_3_1_3_12(raw):
    h = Harness()
    c = open_raw(h, connect(s("dev") + s(raw), CLEAN | USER_NAME))
    ack = refused(c)
    assert ack is None or ack.reason_code == 0x81
    assert h.core.sessions == {}


# ---- 3.1.4 CONNECT Actions --------------------------------------------------------------------------

BAD_CONNECTS = {
    "trailing-byte": connect(s("dev") + b"\x00"),
    "cut-in-keep-alive": packet(0x10, s("MQTT") + b"\x05\x02\x00"),
    "no-property-length": packet(0x10, s("MQTT") + b"\x05\x02\x00\x00"),
    "property-length-past-end": connect(s("dev"), properties=b"\x20\x11\x00"),
    "property-not-for-connect": connect(s("dev"), properties=props(b"\x23\x00\x01")),  # Topic Alias
    "unknown-property": connect(s("dev"), properties=props(b"\x7f\x00")),
    "property-twice": connect(s("dev"), properties=props(b"\x21\x00\x05", b"\x21\x00\x06")),
    "receive-maximum-0": connect(s("dev"), properties=props(b"\x21\x00\x00")),
    "maximum-packet-size-0": connect(s("dev"), properties=props(b"\x27\x00\x00\x00\x00")),
    "request-problem-information-2": connect(s("dev"), properties=props(b"\x17\x02")),
    "will-property-not-for-will": connect(s("dev") + props(b"\x11\x00\x00\x00\x01") + s("d") + s(b"x"),
                                          CLEAN | WILL_FLAG),
    "will-qos-3": connect(s("dev") + WILL_FIELDS, CLEAN | WILL_FLAG | WILL_QOS1 | WILL_QOS2),
}


@pytest.mark.parametrize("raw", BAD_CONNECTS.values(), ids=BAD_CONNECTS.keys())
def test_malformed_connect_closes_connection_v5_MQTT_3_1_4_1(raw):
    h = Harness()
    watcher = h.subscriber("#")
    c = open_raw(h, raw)
    ack = refused(c)
    assert ack is None or ack.reason_code in (0x81, 0x82)
    assert h.core.sessions.keys() == {"watcher"}
    h.advance(10)
    assert watcher.messages() == []


# ---- 3.2 CONNACK -------------------------------------------------------------------------------------


def test_only_one_connack_per_connection_v5_MQTT_3_2_0_2():
    h = Harness()
    c = h.connect("c")
    c.send(Connect(client_id="c", protocol_level=5))
    out = c.take()
    assert not any(isinstance(p, Connack) for p in out)
    assert out == [] and c.closed  # closed, no second CONNACK (and no DISCONNECT: see core/broker.py)
    # a second CONNECT in the same bytes as the first
    d = open_raw(h, connect(s("d")) + connect(s("d")))
    out = d.take()
    assert [type(p).__name__ for p in out] == ["Connack"] and d.closed
    # a refused CONNECT followed by another one: still one CONNACK
    e = open_raw(h, connect(s("e"), properties=props(b"\x15" + s("SCRAM"))) + connect(s("e")))
    assert [type(p).__name__ for p in e.take()] == ["Connack"] and e.closed


def connack_flags(ack: Connack) -> int:
    raw = encode(ack, 5)
    assert raw[0] == 0x20 and raw[1] < 0x80  # one-byte Remaining Length for these CONNACKs
    return raw[2]


def test_connack_flags_reserved_bits_zero_v5_MQTT_3_2_2_1():
    h = Harness()
    c = h.connect("c", clean_start=False, session_expiry_interval=60)
    assert connack_flags(c.connack) == 0x00
    c.drop()
    c2 = h.connect("c", clean_start=False)
    assert c2.connack.session_present and connack_flags(c2.connack) == 0x01
    r = h.connect("c", clean_start=False, authentication_method="X", expect=0x8C)
    assert connack_flags(r.connack) == 0x00


REFUSALS = {
    "bad-auth-method": (dict(authentication_method="SCRAM-SHA-1"), {}, 0x8C),
    "will-qos-above-maximum": (dict(will=will(qos=2)), dict(maximum_qos=1), 0x9B),
    "will-retain-unsupported": (dict(will=will(retain=True)), dict(retain_available=False), 0x9A),
    "will-topic-wildcard": (dict(will=will(topic="dead/#")), {}, 0x90),
}


@pytest.mark.parametrize("kw,config,code", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_connack_has_session_present_0_v5_MQTT_3_2_2_6(kw, config, code):
    h = Harness(**config)
    first = h.connect("dev", clean_start=False, session_expiry_interval=300)
    first.subscribe("t")
    first.drop()
    c = h.connect("dev", clean_start=False, expect=code, **kw)
    assert c.connack.session_present is False
    assert connack_flags(c.connack) & 0x01 == 0
    assert set(h.core.sessions["dev"].subscriptions) == {"t"}  # the refusal left the session alone


@pytest.mark.parametrize("kw,config,code", REFUSALS.values(), ids=REFUSALS.keys())
def test_connack_error_code_then_connection_closed_v5_MQTT_3_2_2_7(kw, config, code):
    h = Harness(**config)
    watcher = h.subscriber("#")
    c = h.connect("dev", expect=code, **kw)
    assert c.closed and c.take() == []
    assert "dev" not in h.core.sessions
    c.send_bytes(publish_bytes("t"))  # nothing after the refusal is processed
    assert watcher.messages() == []


def publish_bytes(topic: str) -> bytes:
    return encode(Publish(topic, b"x", 0), 5)


def test_connack_reason_codes_are_connect_reason_codes_v5_MQTT_3_2_2_8():
    acks = []
    for kw, config, _ in REFUSALS.values():
        h = Harness(**config)
        acks.append(h.connect("dev", expect=None, **kw).take("Connack"))
    h = Harness()
    acks.append(h.connect("ok", expect=None).take("Connack"))
    for raw in [connect(s("x"), level=6), connect(s("x"), level=4, name=b"MQIsdp"), connect(s("x"), level=0),
                connect(s("x"), 0x01), connect(s("x"), properties=props(b"\x17\x02")),
                connect(s("x") + WILL_FIELDS, CLEAN | WILL_FLAG | WILL_QOS1 | WILL_QOS2),
                connect(s(""), 0), connect(s(b"\xff"))]:
        acks.append(open_raw(h, raw).take("Connack"))
    codes = [a.reason_code for batch in acks for a in batch]
    assert codes, "no CONNACK at all"
    assert set(codes) <= CONNECT_REASON_CODES, [hex(x) for x in codes]
    for batch in acks:
        for a in batch:
            assert encode(a, 5)[3] == a.reason_code  # the byte on the wire


@pytest.mark.parametrize("maximum_qos", [0, 1])
def test_server_without_qos_2_still_accepts_subscribe_qos_0_1_2_v5_MQTT_3_2_2_10(maximum_qos):
    h = Harness(maximum_qos=maximum_qos)
    c = h.connect("c")
    assert c.connack.properties["maximum_qos"] == maximum_qos
    codes = c.subscribe("q0", "q1", "q2", qos=0) + c.subscribe("r1", qos=1) + c.subscribe("r2", qos=2)
    assert c.closed is None
    assert all(code < 0x80 for code in codes), codes  # accepted, never refused
    assert codes[3:] == [min(1, maximum_qos), min(2, maximum_qos)]
    h.connect("p").publish("r2", b"x", qos=maximum_qos)
    assert c.payloads() == [b"x"]


@pytest.mark.parametrize("limit", [64, 128, 1000])
def test_packet_above_server_maximum_packet_size_disconnected_0x95_v5_MQTT_3_2_2_15(limit):
    h = Harness(max_packet_size=limit)
    watcher = h.subscriber("#")
    c = h.connect("c", will=will(payload=b"bye"))
    assert c.connack.properties["maximum_packet_size"] == limit

    def publish_of_size(n: int) -> bytes:
        payload = b"x" * (n - 2 - 3 - 1)  # fixed header (2 bytes below 128) + topic "t" + property length
        if n > 129:
            payload = payload[:-1]  # two-byte Remaining Length
        raw = encode(Publish("t", payload, 0), 5)
        assert len(raw) == n
        return raw
    c.send_bytes(publish_of_size(limit))
    assert watcher.payloads() != [] and c.closed is None  # exactly the maximum is allowed
    c.send_bytes(publish_of_size(limit + 1))
    (d,) = c.take()
    assert isinstance(d, Disconnect) and d.reason_code == 0x95 and c.closed
    assert watcher.payloads() == [b"bye"]  # the oversize PUBLISH was not delivered; the will was


def test_topic_alias_refused_when_server_topic_alias_maximum_0_v5_MQTT_3_2_2_18():
    h = Harness(topic_alias_maximum=0)
    watcher = h.subscriber("#")
    c = h.connect("c")
    assert c.connack.properties.get("topic_alias_maximum", 0) == 0
    c.send_bytes(encode(Publish("t", b"aliased", 1, False, False, 1, {"topic_alias": 1}), 5))
    out = c.take()
    assert [type(p).__name__ for p in out] == ["Disconnect"] and out[0].reason_code == 0x94
    assert c.closed and watcher.messages() == []


@pytest.mark.parametrize("kw,config,code", REFUSALS.values(), ids=REFUSALS.keys())
@pytest.mark.parametrize("limit", [8, 16, 30])
def test_connack_reason_string_and_user_property_within_client_maximum_v5_MQTT_3_2_2_19_MQTT_3_2_2_20(
        kw, config, code, limit):
    h = Harness(**config)
    c = h.connect("dev", expect=code, maximum_packet_size=limit, **kw)
    assert len(encode(c.connack, 5)) <= limit
    assert c.closed

