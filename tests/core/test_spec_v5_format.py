"""MQTT 5.0 sections 1 and 2 (data representation, fixed header, packet identifiers, properties).

Every test drives raw bytes through ``c.send_bytes`` on a connected harness client, so the whole
path decoder -> core -> DISCONNECT reason code is exercised, and checks that the bad packet had
no effect (nothing routed, nothing acknowledged). Outgoing packets are checked in the bytes the
edge writes (``encode(packet, 5)``).
"""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Disconnect, Publish, Pubrec, Subscribe, Subscription
from lastwill.codec.primitives import encode_varint
from tests.core.harness import Harness, will
from tests.rawbytes import packet, props, s, u16
from tests.rawbytes import read_vbi as vbi_bytes

# ---- raw packet building -------------------------------------------------------------------------


def publish(topic: str | bytes, payload: bytes = b"x", qos: int = 0, pid: int = 1, properties: bytes = b"\x00",
            dup: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return packet(first, s(topic) + (u16(pid) if qos else b"") + properties + payload)


def subscribe(topic_filter: str | bytes, pid: int = 1, options: int = 1, properties: bytes = b"\x00") -> bytes:
    return packet(0x82, u16(pid) + properties + s(topic_filter) + bytes((options,)))


def user_property(name: str | bytes, value: str | bytes) -> bytes:
    return b"\x26" + s(name) + s(value)


def assert_minimal(encoded: bytes) -> None:
    """A Variable Byte Integer uses as few bytes as its value needs [MQTT-1.5.5-1]."""
    value = 0
    for i, b in enumerate(encoded):
        value |= (b & 0x7F) << (7 * i)
    assert encoded == encode_varint(value), f"{encoded.hex()} is not the minimal encoding of {value}"
    assert len(encoded) == 1 or encoded[-1] != 0


# ---- checks ---------------------------------------------------------------------------------------


def rejected(c, code: int) -> list:
    """The client got DISCONNECT ``code`` as its last packet and the connection is closed."""
    out = c.take()
    assert c.closed, f"connection still open; received {out}"
    assert out and isinstance(out[-1], Disconnect), out
    assert out[-1].reason_code == code, f"DISCONNECT 0x{out[-1].reason_code:02X}, expected 0x{code:02X}"
    return out[:-1]


def setup(**config):
    h = Harness(**config)
    watcher = h.subscriber("#")
    c = h.connect("c", session_expiry_interval=300)  # the session outlives the connection, to inspect
    return h, watcher, c


# ---- 1.5.4 UTF-8 Encoded String -------------------------------------------------------------------

ILL_FORMED = {
    "surrogate-high": b"a\xed\xa0\x80",  # U+D800
    "surrogate-low": b"\xed\xbf\xbfb",  # U+DFFF
    "overlong-slash": b"\xc0\xaf",
    "overlong-nul": b"\xc0\x80",
    "invalid-byte": b"a\xffb",
    "truncated": b"a\xe2\x82",
    "lone-continuation": b"\x80a",
}


@pytest.mark.parametrize("raw", ILL_FORMED.values(), ids=ILL_FORMED.keys())
def test_ill_formed_utf8_topic_is_malformed_v5_MQTT_1_5_4_1(raw):
    h, watcher, c = setup()
    c.send_bytes(publish(raw, qos=1))
    assert rejected(c, 0x81) == []  # no PUBACK
    assert watcher.messages() == []


@pytest.mark.parametrize("raw", ILL_FORMED.values(), ids=ILL_FORMED.keys())
def test_ill_formed_utf8_topic_filter_is_malformed_v5_MQTT_1_5_4_1(raw):
    h, watcher, c = setup()
    c.send_bytes(subscribe(raw))
    assert rejected(c, 0x81) == []  # no SUBACK
    assert h.core.sessions["c"].subscriptions == {}


def test_well_formed_multibyte_utf8_accepted_v5_MQTT_1_5_4_1():
    h, watcher, c = setup()
    topic = "météo/東京/\U0001f600"
    c.send_bytes(publish(topic.encode("utf-8"), qos=1))
    assert [p.packet_id for p in c.take("Puback")] == [1] and c.closed is None
    assert [m.topic for m in watcher.messages()] == [topic]


@pytest.mark.parametrize("where", ["topic", "topic_filter", "user_property_name", "user_property_value",
                                   "content_type", "response_topic"])
def test_null_character_in_string_is_malformed_v5_MQTT_1_5_4_2(where):
    h, watcher, c = setup()
    bad = b"a\x00b"
    if where == "topic":
        raw = publish(bad, qos=1)
    elif where == "topic_filter":
        raw = subscribe(bad)
    elif where == "user_property_name":
        raw = publish("t", qos=1, properties=props(user_property(bad, "v")))
    elif where == "user_property_value":
        raw = publish("t", qos=1, properties=props(user_property("k", bad)))
    elif where == "content_type":
        raw = publish("t", qos=1, properties=props(b"\x03" + s(bad)))
    else:
        raw = publish("t", qos=1, properties=props(b"\x08" + s(bad)))
    c.send_bytes(raw)
    assert rejected(c, 0x81) == []
    assert watcher.messages() == []
    assert h.core.sessions["c"].subscriptions == {}


def test_bom_is_not_stripped_from_strings_v5_MQTT_1_5_4_3():
    h = Harness()
    with_bom = h.connect("bom")
    with_bom.send_bytes(subscribe(b"\xef\xbb\xbfa", pid=7))
    assert with_bom.take("Suback")[0].reason_codes == [1]
    assert list(h.core.sessions["bom"].subscriptions) == ["\ufeffa"]
    plain = h.subscriber("a", client_id="plain")
    c = h.connect("c")
    c.send_bytes(publish(b"\xef\xbb\xbfa", b"1", qos=1,
                         properties=props(user_property(b"\xef\xbb\xbfk", b"v\xef\xbb\xbf"),
                                          b"\x03" + s(b"\xef\xbb\xbftext/plain"))))
    (m,) = with_bom.messages()
    assert m.topic == "\ufeffa"  # the BOM is part of the Topic Name: only "\ufeffa" matches
    assert m.properties["user_property"] == [("\ufeffk", "v\ufeff")]
    assert m.properties["content_type"] == "\ufefftext/plain"
    assert b"\x00\x04\xef\xbb\xbfa" in encode(m, 5)  # and written back with its three bytes
    assert plain.messages() == []
    c.send_bytes(publish(b"a", b"2", qos=1))
    assert plain.payloads() == [b"2"] and with_bom.messages() == []


# ---- 1.5.5 Variable Byte Integer ------------------------------------------------------------------

NON_MINIMAL = {
    # PUBLISH "t" QoS 0, Remaining Length 5 written in two bytes
    "remaining-length": b"\x30\x85\x00" + s("t") + b"\x00" + b"xx",
    # Property Length 0 written as 0x80 0x00
    "property-length": packet(0x30, s("t") + b"\x80\x00" + b"x"),
    # Subscription Identifier 1 written as 0x81 0x00
    "subscription-identifier": subscribe("t", properties=props(b"\x0b\x81\x00")),
    # Message Expiry is fine; the Property Length is 3 bytes for the value 5
    "property-length-3-bytes": packet(0x32, s("t") + u16(1) + b"\x85\x80\x00" + b"\x02\x00\x00\x00\x05"),
}


@pytest.mark.parametrize("raw", NON_MINIMAL.values(), ids=NON_MINIMAL.keys())
def test_non_minimal_variable_byte_integer_is_malformed_v5_MQTT_1_5_5_1(raw):
    h, watcher, c = setup()
    c.send_bytes(raw)
    assert rejected(c, 0x81) == []
    assert watcher.messages() == []
    assert h.core.sessions["c"].subscriptions == {}


@pytest.mark.parametrize("size", [1, 125, 126, 127, 16_380, 16_381, 16_384, 2_097_000])
def test_server_writes_variable_byte_integers_minimally_v5_MQTT_1_5_5_1(size):
    h = Harness(max_packet_size=4_000_000)
    sub = h.connect("s")
    sub.subscribe("t", sub_id=128 if size % 2 else 16_383)
    sub.subscribe("#", sub_id=127)
    c = h.connect("c")
    c.send_bytes(publish("t", b"p" * size, qos=1))
    (m,) = sub.messages()
    raw = encode(m, 5)
    remaining, rl_bytes = vbi_bytes(raw, 1)
    assert_minimal(rl_bytes)
    assert len(raw) == 1 + len(rl_bytes) + remaining
    off = 1 + len(rl_bytes) + 2 + 1 + 2  # topic "t", packet identifier
    plen, pl_bytes = vbi_bytes(raw, off)
    assert_minimal(pl_bytes)
    off += len(pl_bytes)
    ids = []
    end = off + plen
    while off < end:  # only Subscription Identifiers (0x0B) are in this PUBLISH
        assert raw[off] == 0x0B
        value, enc = vbi_bytes(raw, off + 1)
        assert_minimal(enc)
        ids.append(value)
        off += 1 + len(enc)
    assert sorted(ids) == sorted([127, 128 if size % 2 else 16_383])
    assert raw[end:] == b"p" * size


# ---- 1.5.7 UTF-8 String Pair ----------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    (b"\xed\xa0\x80", b"v"), (b"k", b"\xed\xa0\x80"), (b"k\xff", b"v"), (b"k", b"\xc0\x80"),
    (b"\x00", b"v"), (b"k", b"v\x00"),
])
def test_user_property_pair_must_be_utf8_strings_v5_MQTT_1_5_7_1(name, value):
    h, watcher, c = setup()
    c.send_bytes(publish("t", qos=1, properties=props(user_property("ok", "fine"), user_property(name, value))))
    assert rejected(c, 0x81) == []
    assert watcher.messages() == []


def test_user_property_pair_of_utf8_strings_accepted_v5_MQTT_1_5_7_1():
    h, watcher, c = setup()
    c.send_bytes(subscribe("s", properties=props(user_property("ключ", "値"))))
    assert c.take("Suback")[0].reason_codes == [1]
    c.send_bytes(publish("t", qos=1, properties=props(user_property("ключ", "値"), user_property("", ""))))
    assert c.take("Puback") and c.closed is None
    (m,) = watcher.messages()
    assert m.properties["user_property"] == [("ключ", "値"), ("", "")]


# ---- 2.1.3 Flags -----------------------------------------------------------------------------------

BAD_FLAGS = {
    "puback": b"\x41\x02\x00\x01",
    "pubrec": b"\x58\x02\x00\x01",
    "pubrel-0000": b"\x60\x02\x00\x01",
    "pubrel-0011": b"\x63\x02\x00\x01",
    "pubcomp": b"\x72\x02\x00\x01",
    "subscribe-0000": b"\x80" + subscribe("t")[1:],
    "subscribe-1010": b"\x8a" + subscribe("t")[1:],
    "unsubscribe-0000": packet(0xA0, u16(1) + b"\x00" + s("t")),
    "pingreq": b"\xc1\x00",
    "disconnect": b"\xe2\x00",
    "auth": b"\xf1\x00",
}


@pytest.mark.parametrize("raw", BAD_FLAGS.values(), ids=BAD_FLAGS.keys())
def test_reserved_fixed_header_flags_are_malformed_v5_MQTT_2_1_3_1(raw):
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("c", will=will())
    c.subscribe("t")  # an UNSUBSCRIBE with bad flags must not remove it
    c.send_bytes(raw)
    assert rejected(c, 0x81) == []  # no PUBCOMP, SUBACK, UNSUBACK or PINGRESP
    # not a (normal) DISCONNECT: the connection ended on an error, so the will is published
    assert watcher.payloads() == [b"gone"]


GOOD_FLAGS = {
    "pubrel": (b"\x62\x02\x00\x05", "Pubcomp"),
    "subscribe": (subscribe("t", pid=5), "Suback"),
    "unsubscribe": (packet(0xA2, u16(5) + b"\x00" + s("t")), "Unsuback"),
    "pingreq": (b"\xc0\x00", "Pingresp"),
}


@pytest.mark.parametrize("raw,answer", GOOD_FLAGS.values(), ids=GOOD_FLAGS.keys())
def test_fixed_header_flags_as_listed_accepted_v5_MQTT_2_1_3_1(raw, answer):
    h, watcher, c = setup()
    c.send_bytes(raw)
    out = c.take()
    assert [type(p).__name__ for p in out] == [answer] and c.closed is None


# ---- 2.2.1 Packet Identifier -------------------------------------------------------------------------


def test_qos0_publish_sent_without_packet_identifier_v5_MQTT_2_2_1_2():
    h = Harness()
    sub = h.connect("s")
    sub.subscribe("t", qos=0)
    c = h.connect("c")
    c.send_bytes(publish("t", b"q0", qos=0))
    c.send_bytes(publish("t", b"q1", qos=1, pid=9))
    c.send_bytes(publish("t", b"q2", qos=2, pid=10))
    got = sub.messages()
    assert [m.payload for m in got] == [b"q0", b"q1", b"q2"]
    for m in got:
        assert m.qos == 0 and m.packet_id is None
        # on the wire: Topic Name, then the Property Length at once; no Packet Identifier
        assert encode(m, 5) == packet(0x30, s("t") + b"\x00" + m.payload)


PID_ZERO = {
    "publish-qos1": publish("t", qos=1, pid=0),
    "publish-qos2": publish("t", qos=2, pid=0),
    "subscribe": subscribe("t", pid=0),
    "unsubscribe": packet(0xA2, u16(0) + b"\x00" + s("t")),
}


@pytest.mark.parametrize("raw", PID_ZERO.values(), ids=PID_ZERO.keys())
def test_client_packet_identifier_zero_is_protocol_error_v5_MQTT_2_2_1_3(raw):
    h, watcher, c = setup()
    c.subscribe("t")
    c.send_bytes(raw)
    assert rejected(c, 0x82) == []
    assert watcher.messages() == []
    assert list(h.core.sessions["c"].subscriptions) == ["t"]


def test_server_packet_identifiers_nonzero_and_unused_v5_MQTT_2_2_1_4():
    h = Harness()
    sub = h.connect("s")
    sub.subscribe("t", qos=2)
    p = h.connect("p")
    p.publish("t", b"first", qos=1)
    (first,) = sub.messages()  # left unacknowledged: its identifier stays in use
    session = h.core.sessions["s"]
    session.next_packet_id = 65535  # make the allocator wrap
    for i in range(4):
        p.publish("t", str(i).encode(), qos=2)
    later = sub.messages()
    ids = [first.packet_id] + [m.packet_id for m in later]
    assert 0 not in ids
    assert len(set(ids)) == len(ids), ids
    assert ids[1] == 65535 and first.packet_id not in ids[2:]
    # an identifier is in use until its exchange completes: PUBREC moves QoS 2 to PUBREL, not free
    sub.send(Pubrec(later[0].packet_id))
    assert [r.packet_id for r in sub.take("Pubrel")] == [later[0].packet_id]
    session.next_packet_id = later[0].packet_id
    p.publish("t", b"after", qos=1)
    (m,) = sub.messages()
    assert m.packet_id not in ids and m.packet_id != 0


def test_acks_carry_packet_identifier_of_the_publish_v5_MQTT_2_2_1_5():
    h, watcher, c = setup()
    c.send_bytes(publish("t", b"1", qos=1, pid=4321))
    assert [(type(x).__name__, x.packet_id) for x in c.take()] == [("Puback", 4321)]
    c.send_bytes(publish("t", b"2", qos=2, pid=65535))
    assert [(type(x).__name__, x.packet_id) for x in c.take()] == [("Pubrec", 65535)]
    c.send_bytes(b"\x62\x02\xff\xff")  # PUBREL 65535
    assert [(type(x).__name__, x.packet_id) for x in c.take()] == [("Pubcomp", 65535)]
    # outbound: the server's PUBREL carries the identifier of its PUBLISH
    c.subscribe("out", qos=2)
    h.connect("p").publish("out", b"3", qos=2)
    (m,) = c.messages()
    c.send_bytes(b"\x50\x02" + u16(m.packet_id))  # PUBREC
    assert [(type(x).__name__, x.packet_id) for x in c.take()] == [("Pubrel", m.packet_id)]


def test_suback_unsuback_carry_request_packet_identifier_v5_MQTT_2_2_1_6():
    h, watcher, c = setup()
    c.send_bytes(subscribe("a", pid=0x1234))
    c.send_bytes(subscribe("bad/#/x", pid=0xFFFF))  # refused filter: still the same identifier
    c.send_bytes(packet(0xA2, u16(0x0102) + b"\x00" + s("a")))
    c.send_bytes(packet(0xA2, u16(0x8001) + b"\x00" + s("never")))
    got = [(type(x).__name__, x.packet_id) for x in c.take()]
    assert got == [("Suback", 0x1234), ("Suback", 0xFFFF), ("Unsuback", 0x0102), ("Unsuback", 0x8001)]


# ---- 2.2.2 Properties ---------------------------------------------------------------------------------


def test_server_writes_property_length_zero_when_no_properties_v5_MQTT_2_2_2_1():
    h = Harness()
    sub = h.connect("s")
    sub.send(Subscribe(3, [Subscription("t", 1)]))
    (suback,) = sub.take("Suback")
    assert encode(suback, 5) == b"\x90\x04\x00\x03\x00\x01"  # Property Length 0 before the codes
    sub.send_bytes(packet(0xA2, u16(4) + b"\x00" + s("none")))
    (unsuback,) = sub.take("Unsuback")
    assert encode(unsuback, 5) == b"\xb0\x04\x00\x04\x00\x11"
    h.connect("p").publish("t", b"x", qos=1)
    (m,) = sub.messages()
    assert encode(m, 5) == packet(0x32, s("t") + u16(m.packet_id) + b"\x00" + b"x")
    refused = h.connect("r", authentication_method="X", request_problem_information=0, expect=0x8C)
    assert encode(refused.connack, 5) == b"\x20\x03\x00\x8c\x00"


def test_missing_property_length_is_malformed_v5_MQTT_2_2_2_1():
    h, watcher, c = setup()
    c.subscribe("keep")
    # an UNSUBSCRIBE written the 3.1.1 way: the filter's length is read as the Property Length
    c.send_bytes(packet(0xA2, u16(1) + s("keep")))
    assert rejected(c, 0x81) == []
    assert list(h.core.sessions["c"].subscriptions) == ["keep"]
    h2, watcher2, c2 = setup()
    c2.send_bytes(packet(0x32, s("t") + u16(1)))  # QoS 1 PUBLISH that ends before its Property Length
    assert rejected(c2, 0x81) == []
    assert watcher2.messages() == []


def test_raw_builders_match_the_encoder_v5():
    """Sanity: the raw builders here produce what the codec's encoder produces."""
    assert publish("t", b"x", qos=1, pid=1) == encode(Publish("t", b"x", 1, False, False, 1), 5)
    assert subscribe("t", pid=1) == encode(Subscribe(1, [Subscription("t", 1)]), 5)
