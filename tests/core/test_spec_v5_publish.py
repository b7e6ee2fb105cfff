"""MQTT 5.0 section 3.3 (PUBLISH), on the core with the fake link.

Packets a client could get wrong are sent as raw bytes (``send_bytes``), so the decoder's checks
and the core's reaction are tested together; what subscribers receive is checked as packets and,
where the bytes matter, as the bytes the edge writes (``encode(packet, 5)``).
"""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Disconnect, Publish, Pubrel
from lastwill.codec.primitives import encode_varint
from lastwill.core.topics import topic_matches
from tests.core.harness import Harness, will
from tests.rawbytes import props, s, u16

# ---- raw packet building ---------------------------------------------------------------------------


def publish(topic: str | bytes, payload: bytes = b"x", qos: int = 0, pid: int = 1, properties: bytes = b"\x00",
            dup: bool = False, retain: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = s(topic) + (u16(pid) if qos else b"") + properties + payload
    return bytes((first,)) + encode_varint(len(body)) + body


PFI, MEI, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA, TOPIC_ALIAS = 0x01, 0x02, 0x03, 0x08, 0x09, 0x23


def rejected(c, code: int | tuple[int, ...]) -> list:
    out = c.take()
    assert c.closed, f"connection still open; received {out}"
    assert out and isinstance(out[-1], Disconnect), out
    codes = code if isinstance(code, tuple) else (code,)
    assert out[-1].reason_code in codes, f"DISCONNECT 0x{out[-1].reason_code:02X}, expected {codes}"
    return out[:-1]


def publisher(h: Harness, client_id: str = "p"):
    return h.connect(client_id, session_expiry_interval=300)


# ---- 3.3.1.1 DUP ------------------------------------------------------------------------------------


def test_dup_0_on_every_qos0_publish_the_server_sends_v5_MQTT_3_3_1_2():
    h = Harness(queue_qos0=True)
    live = h.connect("live")
    live.subscribe("t", qos=0)
    off = h.connect("off", clean_start=False, session_expiry_interval=100)
    off.subscribe("t", qos=0)
    off.drop()
    p = publisher(h)
    p.send_bytes(publish("t", b"a", qos=1, pid=1, dup=True))  # a retransmission by the publisher
    p.send_bytes(publish("t", b"b", qos=2, pid=2, dup=True, retain=True))
    p.send_bytes(publish("t", b"c", qos=0))
    late = h.connect("late")
    late.subscribe("t", qos=0)  # gets the retained one
    back = h.connect("off", clean_start=False)
    for c in (live, late, back):
        got = c.messages()
        assert got and all(m.qos == 0 and m.dup is False for m in got), got
        assert all(encode(m, 5)[0] & 0x08 == 0 for m in got)


def test_qos0_publish_with_dup_1_is_malformed_v5_MQTT_3_3_1_2():
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", b"x", qos=0, dup=True))
    assert rejected(p, 0x81) == []
    assert watcher.messages() == []


def test_outgoing_dup_set_only_by_retransmission_v5_MQTT_3_3_1_3():
    h = Harness()
    s1 = h.connect("s", clean_start=False, session_expiry_interval=100)
    s1.subscribe("t", qos=2)
    p = publisher(h)
    p.send_bytes(publish("t", b"dup-in", qos=1, pid=1, dup=True))
    p.send_bytes(publish("t", b"fresh-in", qos=2, pid=2, dup=False))
    first = s1.messages()
    assert [(m.payload, m.dup) for m in first] == [(b"dup-in", False), (b"fresh-in", False)]
    s1.drop()  # unacknowledged: both will be retransmitted
    s2 = h.connect("s", clean_start=False)
    again = s2.messages()
    assert [(m.payload, m.dup) for m in again] == [(b"dup-in", True), (b"fresh-in", True)]
    assert all(encode(m, 5)[0] & 0x08 for m in again)
    assert [m.packet_id for m in again] == [m.packet_id for m in first]
    s2.ack_all()
    p.send_bytes(publish("t", b"next", qos=1, pid=3, dup=True))
    assert [(m.payload, m.dup) for m in s2.messages()] == [(b"next", False)]


# ---- 3.3.2.1 Topic Name ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,code", [
    (b"a/\xed\xa0\x80", 0x81), (b"\xff", 0x81), (b"a\x00", 0x81), (b"", 0x82),
])
def test_topic_name_must_be_a_utf8_string_v5_MQTT_3_3_2_1(raw, code):
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish(raw, qos=1))
    assert rejected(p, code) == []
    assert watcher.messages() == []


def test_topic_name_is_the_first_field_v5_MQTT_3_3_2_1():
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("sensors/t1", b"21.5", qos=1, pid=0x0102))
    assert [x.packet_id for x in p.take("Puback")] == [0x0102]
    (m,) = watcher.messages()
    assert (m.topic, m.payload) == ("sensors/t1", b"21.5")


def resolve(messages: list[Publish]) -> list[str]:
    """The topic names as the client reads them, resolving the server's Topic Aliases."""
    aliases: dict[int, str] = {}
    topics = []
    for m in messages:
        alias = m.properties.get("topic_alias")
        if alias is not None and m.topic:
            aliases[alias] = m.topic
        topics.append(m.topic or aliases[alias])
    return topics


@pytest.mark.parametrize("alias_max", [0, 2])
def test_topic_name_sent_matches_subscription_filter_v5_MQTT_3_3_2_3(alias_max):
    h = Harness()
    filters = ["a/+/c", "x/#", "exact", "+"]
    sub = h.connect("s", topic_alias_maximum=alias_max) if alias_max else h.connect("s")
    for f in filters:
        sub.subscribe(f)
    p = publisher(h)
    topics = ["a/b/c", "a/b/d", "x", "x/y/z", "exact", "exactly", "y", "a/b", "$SYS/x", "a//c", "x/y/z", "a/b/c"]
    for t in topics * 2:
        p.publish(t, t.encode(), qos=1)
    got = sub.messages()
    names = resolve(got)
    assert names == [m.payload.decode() for m in got]  # the name matches what was published
    for name in names:
        assert any(topic_matches(f, name) for f in filters), name
    want = [t for t in topics * 2 if any(topic_matches(f, t) for f in filters)]
    assert names == want


# ---- 3.3.2.3.2 Payload Format Indicator -----------------------------------------------------------------


@pytest.mark.parametrize("pfi", [0, 1, None])
def test_payload_format_indicator_sent_unaltered_to_all_subscribers_v5_MQTT_3_3_2_4(pfi):
    h = Harness()
    s0 = h.subscriber("t", client_id="s0", qos=0)
    s2 = h.subscriber("#", client_id="s2", qos=2)
    off = h.connect("off", clean_start=False, session_expiry_interval=100)
    off.subscribe("t", qos=1)
    off.drop()
    p = publisher(h)
    extra = {} if pfi is None else {"payload_format_indicator": pfi}
    p.publish("t", "é".encode(), qos=2, retain=True, **extra)
    late = h.subscriber("t", client_id="late")
    back = h.connect("off", clean_start=False)
    for c in (s0, s2, late, back):
        (m,) = c.messages()
        assert m.properties.get("payload_format_indicator") == pfi
        assert m.payload == "é".encode()


def test_payload_format_indicator_1_with_non_utf8_payload_unaltered_or_refused_0x99_v5_MQTT_3_3_2_4():
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", b"\xff\xfe\x00", qos=1, properties=props(bytes((PFI, 1)))))
    out = p.take()
    got = watcher.messages()
    if got:  # forwarded: then exactly as sent
        (m,) = got
        assert m.properties.get("payload_format_indicator") == 1 and m.payload == b"\xff\xfe\x00"
        assert [type(x).__name__ for x in out] == ["Puback"]
    else:  # the server MAY validate: then PUBACK or DISCONNECT with 0x99
        assert out and out[-1].reason_code == 0x99


# ---- 3.3.2.3.4 Topic Alias ---------------------------------------------------------------------------


@pytest.mark.parametrize("server_max", [1, 5, 10])
def test_topic_alias_above_server_maximum_disconnected_0x94_v5_MQTT_3_3_2_9(server_max):
    h = Harness(topic_alias_maximum=server_max)
    watcher = h.subscriber("#")
    p = publisher(h)
    assert p.connack.properties["topic_alias_maximum"] == server_max
    p.send_bytes(publish("t/top", b"ok", qos=1, properties=props(bytes((TOPIC_ALIAS,)) + u16(server_max))))
    p.send_bytes(publish("", b"ok-again", qos=1, pid=2, properties=props(bytes((TOPIC_ALIAS,)) + u16(server_max))))
    assert [m.topic for m in watcher.messages()] == ["t/top", "t/top"]
    p.send_bytes(publish("t/top", b"no", qos=1, pid=3,
                         properties=props(bytes((TOPIC_ALIAS,)) + u16(server_max + 1))))
    assert [type(x).__name__ for x in rejected(p, 0x94)] == ["Puback", "Puback"]
    assert watcher.messages() == []


@pytest.mark.parametrize("client_max", [None, 1, 3])
def test_server_topic_alias_within_client_maximum_v5_MQTT_3_3_2_11(client_max):
    h = Harness(topic_alias_maximum=0)
    kw = {} if client_max is None else {"topic_alias_maximum": client_max}
    sub = h.connect("s", **kw)
    sub.subscribe("#")
    p = publisher(h)
    topics = [f"t/{i}" for i in range(6)]
    for _ in range(3):
        for t in topics:
            p.publish(t, t.encode(), qos=1)
    got = sub.messages()
    aliases = [m.properties["topic_alias"] for m in got if "topic_alias" in m.properties]
    if client_max is None:
        assert aliases == []  # the client accepts none
    else:
        assert aliases and all(1 <= a <= client_max for a in aliases), aliases
    assert resolve(got) == [m.payload.decode() for m in got]


# ---- 3.3.2.3.5 Response Topic --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"resp/\xed\xa0\x80", b"\xc0\xaf", b"r\x00"])
def test_response_topic_must_be_a_utf8_string_v5_MQTT_3_3_2_13(raw):
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", qos=1, properties=props(bytes((RESPONSE_TOPIC,)) + s(raw))))
    assert rejected(p, 0x81) == []
    assert watcher.messages() == []


@pytest.mark.parametrize("topic", ["resp/#", "+", "a/+/b", "#"])
def test_response_topic_with_wildcard_refused_v5_MQTT_3_3_2_14(topic):
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", qos=1, properties=props(bytes((RESPONSE_TOPIC,)) + s(topic))))
    assert rejected(p, (0x81, 0x82)) == []
    assert watcher.messages() == []
    # in a Will Message too: the CONNECT is refused, nothing is stored
    c = h.open()
    c.send_bytes(encode_connect_with_will(response_topic=topic))
    assert c.closed and all(x.reason_code >= 0x80 for x in c.take())
    assert "w" not in h.core.sessions


def encode_connect_with_will(**will_props) -> bytes:
    return encode(Connect(client_id="w", protocol_level=5, keep_alive=0, will=will(**will_props)), 5)


FORWARDED = {
    "response_topic": ["resp/1", "\ufeffr/é/東京", "a" * 300],
    "correlation_data": [b"", b"\x00", b"\xff\x00\xfe" * 50, bytes(range(256))],
    "content_type": ["application/json; charset=utf-8", "", "\ufeff", "text/💡"],
}


def forwarded_everywhere(name: str, value) -> None:
    """Publish with one property; every kind of receiver gets it byte for byte."""
    h = Harness()
    s0 = h.subscriber("t", client_id="s0", qos=0)
    s1 = h.subscriber("t/#", client_id="s1", qos=1)
    aliased = h.connect("a", topic_alias_maximum=4)
    aliased.subscribe("t")
    off = h.connect("off", clean_start=False, session_expiry_interval=100)
    off.subscribe("t", qos=2)
    off.drop()
    wsub = h.subscriber("dead/#", client_id="ws")
    p = publisher(h)
    p.send_bytes(publish("t", b"body", qos=2, retain=True, properties=props(property_bytes(name, value))))
    assert p.take("Pubrec")
    late = h.subscriber("t", client_id="late")
    back = h.connect("off", clean_start=False)
    for c in (s0, s1, aliased, late, back):
        (m,) = c.messages()
        assert m.properties[name] == value, c.client_id
        assert property_bytes(name, value) in encode(m, 5)
    dying = h.connect("dying", will=will(**{name: value}))
    dying.drop()
    (m,) = wsub.messages()
    assert m.properties[name] == value


def property_bytes(name: str, value) -> bytes:
    ident = {"response_topic": RESPONSE_TOPIC, "correlation_data": CORRELATION_DATA,
             "content_type": CONTENT_TYPE}[name]
    return bytes((ident,)) + s(value)


@pytest.mark.parametrize("value", FORWARDED["response_topic"])
def test_response_topic_sent_unaltered_to_all_subscribers_v5_MQTT_3_3_2_15(value):
    forwarded_everywhere("response_topic", value)


# ---- 3.3.2.3.6 Correlation Data --------------------------------------------------------------------------


@pytest.mark.parametrize("value", FORWARDED["correlation_data"])
def test_correlation_data_sent_unaltered_to_all_subscribers_v5_MQTT_3_3_2_16(value):
    forwarded_everywhere("correlation_data", value)


# ---- 3.3.2.3.9 Content Type ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"text/\xed\xb0\x80", b"\xf8\x88\x80\x80\x80", b"a\x00b"])
def test_content_type_must_be_a_utf8_string_v5_MQTT_3_3_2_19(raw):
    h = Harness()
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", qos=1, properties=props(bytes((CONTENT_TYPE,)) + s(raw))))
    assert rejected(p, 0x81) == []
    assert watcher.messages() == []


@pytest.mark.parametrize("value", FORWARDED["content_type"])
def test_content_type_sent_unaltered_to_all_subscribers_v5_MQTT_3_3_2_20(value):
    forwarded_everywhere("content_type", value)


# ---- 3.3.4 PUBLISH Actions: Subscription Identifiers ---------------------------------------------------


def test_single_copy_carries_every_matching_subscription_identifier_v5_MQTT_3_3_4_4():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a/#", qos=1, sub_id=7)
    c.subscribe("a/+", qos=0, sub_id=268_435_455)
    c.subscribe("+/b", qos=2)  # no identifier
    c.subscribe("a/c", qos=1, sub_id=9)  # does not match a/b
    p = publisher(h)
    p.publish("a/b", b"x", qos=2)
    (m,) = c.messages()
    assert sorted(m.properties["subscription_identifier"]) == [7, 268_435_455]
    p.publish("z/b", b"y", qos=1)  # only the subscription without an identifier matches
    (m,) = c.messages()
    assert "subscription_identifier" not in m.properties


def test_each_copy_carries_its_own_subscription_identifier_v5_MQTT_3_3_4_5():
    h = Harness()
    c = h.connect("c")
    c.subscribe("$share/g/a/b", qos=1, sub_id=3)
    c.subscribe("$share/h/a/+", qos=1)  # no identifier
    c.subscribe("a/b", qos=1, sub_id=4)
    p = publisher(h)
    p.publish("a/b", b"x", qos=1)
    got = c.messages()
    assert len(got) == 3  # one per shared group, one for the ordinary subscription
    ids = sorted(tuple(m.properties.get("subscription_identifier", ())) for m in got)
    assert ids == [(), (3,), (4,)]


# ---- 3.3.4 PUBLISH Actions: Receive Maximum (the server's, enforced) --------------------------------------


def test_client_beyond_server_receive_maximum_disconnected_0x93_v5_MQTT_3_3_4_7():
    h = Harness(receive_maximum=2)
    watcher = h.subscriber("#")
    p = publisher(h)
    assert p.connack.properties["receive_maximum"] == 2
    p.send_bytes(publish("t", b"1", qos=2, pid=1))
    p.send_bytes(publish("t", b"2", qos=2, pid=2))
    assert [x.packet_id for x in p.take("Pubrec")] == [1, 2] and p.closed is None
    p.send(Pubrel(1))  # PUBCOMP 1 frees one
    assert [x.packet_id for x in p.take("Pubcomp")] == [1]
    p.send_bytes(publish("t", b"3", qos=2, pid=3))
    assert [x.packet_id for x in p.take("Pubrec")] == [3] and p.closed is None
    p.send_bytes(publish("t", b"2", qos=2, pid=2, dup=True))  # a resend of an unreleased one is not new
    assert [x.packet_id for x in p.take("Pubrec")] == [2] and p.closed is None
    assert watcher.payloads() == [b"1", b"2", b"3"]
    p.send_bytes(publish("t", b"4", qos=2, pid=4))  # three unanswered
    assert rejected(p, 0x93) == []
    assert watcher.messages() == []


def test_qos1_publish_counts_toward_server_receive_maximum_v5_MQTT_3_3_4_7():
    h = Harness(receive_maximum=2)
    watcher = h.subscriber("#")
    p = publisher(h)
    p.send_bytes(publish("t", b"1", qos=1, pid=1))
    p.send_bytes(publish("t", b"2", qos=1, pid=2))
    p.send_bytes(publish("t", b"3", qos=2, pid=3))
    p.send_bytes(publish("t", b"4", qos=1, pid=4))  # answered at once: never more than 2 unanswered
    assert [type(x).__name__ for x in p.take()] == ["Puback", "Puback", "Pubrec", "Puback"]
    p.send_bytes(publish("t", b"5", qos=2, pid=5))
    assert p.take("Pubrec") and p.closed is None
    assert watcher.payloads() == [b"1", b"2", b"3", b"4", b"5"]
    # QoS 2 ids 3 and 5 await PUBREL: a QoS 1 PUBLISH now makes three without PUBACK or PUBCOMP
    p.send_bytes(publish("t", b"6", qos=1, pid=6))
    assert rejected(p, 0x93) == []
    assert watcher.messages() == []

