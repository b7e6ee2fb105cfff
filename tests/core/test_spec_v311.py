"""MQTT 3.1.1 normative requirements, one by one, on the core (fake link, fake clock, no sleeps).

Most tests drive the broker with raw 3.1.1 bytes (``send_bytes``), so the decoder and the core are
both on the path, and check what goes back on the wire with ``encode(packet, 4)``: 3.1.1 has no
properties and no reason codes except the CONNACK return codes and SUBACK 0x80, and on a protocol
violation the server closes the connection without sending anything (no DISCONNECT).
"""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Connect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Will,
)
from tests.core.harness import Harness, will
from tests.rawbytes import packet, s, u16

V311 = 4
V31 = 3

# ---- raw 3.1.1 bytes ------------------------------------------------------------------------------


def connect_bytes(payload: bytes = s("c"), *, flags: int = 0x02, keep_alive: int = 0, name: bytes = b"MQTT",
                  level: int = V311) -> bytes:
    """A CONNECT with the given Connect Flags byte and payload, written by hand (3.1)."""
    return packet(0x10, s(name) + bytes((level, flags)) + u16(keep_alive) + payload)


def publish_bytes(topic: str | bytes, payload: bytes = b"x", qos: int = 0, packet_id: int | None = None,
                  *, retain: bool = False, dup: bool = False) -> bytes:
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    pid = u16(packet_id) if packet_id is not None else b""
    return packet(first, s(topic) + pid + payload)


def subscribe_bytes(packet_id: int, *pairs: tuple[str | bytes, int]) -> bytes:
    return packet(0x82, u16(packet_id) + b"".join(s(f) + bytes((q,)) for f, q in pairs))


def unsubscribe_bytes(packet_id: int, *filters: str | bytes) -> bytes:
    return packet(0xA2, u16(packet_id) + b"".join(s(f) for f in filters))


PUBREL = 0x62
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def wire(client, level: int = V311) -> list[bytes]:
    """Everything the broker sent to ``client`` (and not yet taken), as bytes on the wire."""
    return [encode(p, level) for p in client.take()]


def raw_client(h: Harness, data: bytes):
    c = h.open()
    c.send_bytes(data)
    return c


def connect311(h: Harness, client_id: str = "c", **kw):
    return h.connect(client_id, version=V311, **kw)


def assert_closed_silently(c) -> None:
    """Closed, and nothing at all sent: no CONNACK, no acknowledgement, no DISCONNECT (3.1.1 has none)."""
    assert c.closed, "the connection is still open"
    assert c.take() == []


# ---- 1.5.3 UTF-8 encoded strings --------------------------------------------------------------------

ILL_FORMED = [
    pytest.param(b"\xed\xa0\x80", id="surrogate-U+D800"),
    pytest.param(b"\xed\xbf\xbf", id="surrogate-U+DFFF"),
    pytest.param(b"\xc3", id="truncated"),
    pytest.param(b"\xff", id="invalid-byte"),
    pytest.param(b"\xc0\xaf", id="overlong"),
]


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_in_publish_topic_closes_v311_MQTT_1_5_3_1_MQTT_3_3_2_1(bad):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(publish_bytes(b"a/" + bad, b"x", qos=1, packet_id=1))
    assert_closed_silently(c)
    # nothing from the bad packet was delivered; the connection failed, so the will went out
    assert [m.payload for m in watcher.messages()] == [b"gone"]


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_in_topic_filter_closes_v311_MQTT_1_5_3_1_MQTT_3_8_3_1(bad):
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, (b"a/" + bad, 1)))
    assert_closed_silently(c)
    assert len(h.core.tree) == 0


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_in_unsubscribe_filter_closes_v311_MQTT_1_5_3_1_MQTT_3_10_3_1(bad):
    h = Harness()
    c = connect311(h)
    c.subscribe("a/b", qos=1)
    c.send_bytes(unsubscribe_bytes(1, "a/b", b"a/" + bad))
    assert_closed_silently(c)  # no UNSUBACK


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_client_id_closes_without_connack_v311_MQTT_1_5_3_1_MQTT_3_1_3_4(bad):
    h = Harness()
    c = raw_client(h, connect_bytes(s(b"id" + bad)))
    assert_closed_silently(c)
    assert h.core.sessions == {}


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_will_topic_closes_without_connack_v311_MQTT_1_5_3_1_MQTT_3_1_3_10(bad):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = raw_client(h, connect_bytes(s("dev") + s(b"dead/" + bad) + s(b"gone"), flags=0x06))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions
    assert watcher.messages() == []


@pytest.mark.parametrize("bad", ILL_FORMED)
def test_ill_formed_utf8_user_name_closes_without_connack_v311_MQTT_1_5_3_1_MQTT_3_1_3_11(bad):
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s(b"user" + bad), flags=0x82))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_well_formed_user_name_and_password_accepted_v311_MQTT_3_1_3_11():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s("us\u00e9r") + s(b"\x00\xffpw"), flags=0xC2))
    assert wire(c) == [b"\x20\x02\x00\x00"] and c.closed is None


NULL_CHARACTER = [
    pytest.param(lambda: publish_bytes("a/\x00b", b"x"), id="publish-topic"),
    pytest.param(lambda: subscribe_bytes(1, ("a/\x00b", 0)), id="subscribe-filter"),
    pytest.param(lambda: unsubscribe_bytes(1, "a/\x00b"), id="unsubscribe-filter"),
]


@pytest.mark.parametrize("make", NULL_CHARACTER)
def test_null_character_in_topic_closes_v311_MQTT_1_5_3_2_MQTT_4_7_3_2(make):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h)
    c.send_bytes(make())
    assert_closed_silently(c)
    assert watcher.messages() == []
    assert len(h.core.tree) == 1  # the watcher's only


def test_null_character_in_client_id_closes_without_connack_v311_MQTT_1_5_3_2():
    h = Harness()
    c = raw_client(h, connect_bytes(s("de\x00v")))
    assert_closed_silently(c)
    assert h.core.sessions == {}


def test_byte_order_mark_neither_skipped_nor_stripped_v311_MQTT_1_5_3_3():
    h = Harness()
    bom = "\ufeff"
    plain = connect311(h, "plain")
    plain.send_bytes(subscribe_bytes(1, ("a/b", 0)))
    with_bom = connect311(h, "bom")
    with_bom.send_bytes(subscribe_bytes(1, (bom.encode() + b"a/b", 0)))
    assert wire(plain) == wire(with_bom) == [b"\x90\x03\x00\x01\x00"]
    p = connect311(h, "p")
    p.send_bytes(publish_bytes(b"\xef\xbb\xbfa/b", b"1"))
    p.send_bytes(publish_bytes(b"a/b", b"2"))
    # the BOM is part of the topic: it matches only the filter that has it, and is forwarded as sent
    assert wire(with_bom) == [publish_bytes(b"\xef\xbb\xbfa/b", b"1")]
    assert wire(plain) == [publish_bytes(b"a/b", b"2")]


# ---- 2.2.2 fixed header flags ---------------------------------------------------------------------

BAD_FLAGS = [
    pytest.param(packet(0x41, u16(1)), id="PUBACK-0001"),
    pytest.param(packet(0x58, u16(1)), id="PUBREC-1000"),
    pytest.param(packet(0x60, u16(1)), id="PUBREL-0000"),
    pytest.param(packet(0x7F, u16(1)), id="PUBCOMP-1111"),
    pytest.param(packet(0x80, u16(1) + s("a") + b"\x00"), id="SUBSCRIBE-0000"),
    pytest.param(packet(0xA3, u16(1) + s("a")), id="UNSUBSCRIBE-0011"),
    pytest.param(packet(0xC4, b""), id="PINGREQ-0100"),
    pytest.param(packet(0xE8, b""), id="DISCONNECT-1000"),
]


@pytest.mark.parametrize("data", BAD_FLAGS)
def test_invalid_fixed_header_flags_close_the_connection_v311_MQTT_2_2_2_1_MQTT_2_2_2_2(data):
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(data)
    assert_closed_silently(c)
    # closed as a failure: even a DISCONNECT with bad flags does not discard the will
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_pubrel_with_reserved_bits_wrong_is_malformed_v311_MQTT_3_6_1_1():
    h = Harness()
    watcher = h.subscriber("a", version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"x", qos=2, packet_id=9))
    assert wire(p) == [b"\x50\x02\x00\x09"]
    p.send_bytes(packet(0x60, u16(9)))  # PUBREL must have flags 0010
    assert_closed_silently(p)  # no PUBCOMP
    assert len(watcher.messages()) == 1


def test_pubrel_with_right_bits_gets_pubcomp_v311_MQTT_3_6_1_1():
    h = Harness()
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"x", qos=2, packet_id=9))
    p.send_bytes(packet(PUBREL, u16(9)))
    assert wire(p) == [b"\x50\x02\x00\x09", b"\x70\x02\x00\x09"]


@pytest.mark.parametrize("first", [0x80, 0x83, 0x8A, 0x86])
def test_subscribe_with_reserved_bits_wrong_is_malformed_v311_MQTT_3_8_1_1(first):
    h = Harness()
    c = connect311(h)
    c.send_bytes(packet(first, u16(1) + s("a") + b"\x01"))
    assert_closed_silently(c)  # no SUBACK
    assert len(h.core.tree) == 0


@pytest.mark.parametrize("first", [0xA0, 0xA3, 0xAA])
def test_unsubscribe_with_reserved_bits_wrong_is_malformed_v311_MQTT_3_10_1_1(first):
    h = Harness()
    c = connect311(h)
    c.subscribe("a", qos=0)
    c.send_bytes(packet(first, u16(2) + s("a")))
    assert_closed_silently(c)  # no UNSUBACK


@pytest.mark.parametrize("first", [0xE1, 0xE2, 0xE4, 0xE8])
def test_disconnect_with_reserved_bits_set_closes_and_publishes_will_v311_MQTT_3_14_1_1(first):
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(bytes((first, 0)))
    assert_closed_silently(c)
    assert [m.payload for m in watcher.messages()] == [b"gone"]  # not a DISCONNECT: the will is not discarded


def test_disconnect_with_reserved_bits_zero_discards_will_v311_MQTT_3_14_1_1_MQTT_3_14_4_3():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(DISCONNECT)
    assert c.closed and c.take() == []
    assert watcher.messages() == []


# ---- 2.3.1 packet identifiers --------------------------------------------------------------------------

ZERO_PACKET_ID = [
    pytest.param(publish_bytes("a", b"x", qos=1, packet_id=0), id="PUBLISH-QoS1"),
    pytest.param(publish_bytes("a", b"x", qos=2, packet_id=0), id="PUBLISH-QoS2"),
    pytest.param(subscribe_bytes(0, ("a", 1)), id="SUBSCRIBE"),
    pytest.param(unsubscribe_bytes(0, "a"), id="UNSUBSCRIBE"),
]


@pytest.mark.parametrize("data", ZERO_PACKET_ID)
def test_packet_identifier_zero_closes_the_connection_v311_MQTT_2_3_1_1(data):
    h = Harness()
    watcher = h.subscriber("a", version=V311)
    c = connect311(h)
    c.send_bytes(data)
    assert_closed_silently(c)
    assert watcher.messages() == []


def test_server_packet_identifiers_nonzero_and_unused_until_puback_v311_MQTT_2_3_1_4_MQTT_4_3_2_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=1, version=V311)
    p = connect311(h, "p")
    for i in range(5):
        p.publish("a", bytes((i,)), qos=1)
    first = sub.messages()
    ids = [m.packet_id for m in first]
    assert all(ids) and len(set(ids)) == 5
    assert all(encode(m, V311)[0] == 0x32 for m in first)  # QoS 1, DUP 0, RETAIN 0
    sub.send(Puback(ids[0]))
    # make the allocator start from identifiers still in use: it must skip the unacknowledged ones
    h.core.sessions["s"].next_packet_id = ids[1]
    for i in range(3):
        p.publish("a", bytes((10 + i,)), qos=1)
    more = [m.packet_id for m in sub.messages()]
    assert all(more) and not set(more) & set(ids[1:]) and len(set(more)) == 3


def test_server_qos2_packet_identifier_held_until_pubcomp_v311_MQTT_2_3_1_4_MQTT_4_3_3_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=2, version=V311)
    p = connect311(h, "p")
    p.publish("a", b"1", qos=2)
    (m,) = sub.messages()
    assert encode(m, V311)[0] == 0x34 and m.packet_id  # QoS 2, DUP 0
    sub.send_bytes(packet(0x50, u16(m.packet_id)))  # PUBREC: the identifier is still in use
    assert wire(sub) == [packet(PUBREL, u16(m.packet_id))]
    h.core.sessions["s"].next_packet_id = m.packet_id
    p.publish("a", b"2", qos=2)
    (m2,) = sub.messages()
    assert m2.packet_id != m.packet_id


def test_qos0_publish_sent_without_packet_identifier_and_dup_0_v311_MQTT_2_3_1_5_MQTT_4_3_1_1_MQTT_3_3_1_2():
    h = Harness()
    sub = h.subscriber("a", qos=0, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"x", qos=1, packet_id=5, dup=True))
    (m,) = sub.messages()
    assert m.qos == 0 and m.packet_id is None and not m.dup
    assert encode(m, V311) == b"\x30\x04\x00\x01ax"  # no identifier between topic and payload


def test_qos0_publish_with_dup_set_is_malformed_v311_MQTT_3_3_1_2():
    h = Harness()
    sub = h.subscriber("a", qos=0, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"x", qos=0, dup=True))
    assert_closed_silently(p)
    assert sub.messages() == []


def test_acknowledgements_carry_the_publish_packet_identifier_v311_MQTT_2_3_1_6():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=2, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"1", qos=1, packet_id=0x1234))
    p.send_bytes(publish_bytes("a", b"2", qos=2, packet_id=0xBEEF))
    assert wire(p) == [b"\x40\x02\x12\x34", b"\x50\x02\xbe\xef"]
    p.send_bytes(packet(PUBREL, u16(0xBEEF)))
    assert wire(p) == [b"\x70\x02\xbe\xef"]
    # and the server, as sender: its PUBREL carries the identifier of its own PUBLISH
    qos2 = [m for m in sub.messages() if m.qos == 2]
    (m,) = qos2
    sub.send_bytes(packet(0x50, u16(m.packet_id)))
    assert wire(sub) == [packet(PUBREL, u16(m.packet_id))]


def test_suback_and_unsuback_carry_the_request_packet_identifier_v311_MQTT_2_3_1_7_MQTT_3_8_4_2():
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(0x0102, ("a", 1)))
    c.send_bytes(subscribe_bytes(0xFFFF, ("b", 2)))
    c.send_bytes(unsubscribe_bytes(0x8001, "a"))
    c.send_bytes(unsubscribe_bytes(0x0001, "never/subscribed"))
    assert wire(c) == [b"\x90\x03\x01\x02\x01", b"\x90\x03\xff\xff\x02", b"\xb0\x02\x80\x01", b"\xb0\x02\x00\x01"]


# ---- 3.1 CONNECT ----------------------------------------------------------------------------------


def test_first_packet_not_connect_closes_silently_v311_MQTT_3_1_0_1():
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    for data in (PINGREQ, publish_bytes("a", b"x"), subscribe_bytes(1, ("a", 0))):
        c = raw_client(h, data)
        assert_closed_silently(c)
    assert watcher.messages() == [] and len(h.core.tree) == 1


def test_second_connect_closes_and_publishes_will_v311_MQTT_3_1_0_2():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(connect_bytes(s("dev")))
    assert_closed_silently(c)  # no second CONNACK, no DISCONNECT
    assert [m.payload for m in watcher.messages()] == [b"gone"]


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQTT\x00", b"", b"MQIsdpX"])
def test_wrong_protocol_name_closes_without_connack_v311_MQTT_3_1_2_1(name):
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev"), name=name) + publish_bytes("a", b"x"))
    assert_closed_silently(c)
    assert h.core.sessions == {}


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 0x84])
def test_unsupported_protocol_level_gets_return_code_1_then_close_v311_MQTT_3_1_2_2(level):
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev"), level=level))
    # return code 0x01 (unacceptable protocol version) with Session Present 0, then the close
    assert wire(c) == [b"\x20\x02\x00\x01"]
    assert c.closed
    assert h.core.sessions == {}


@pytest.mark.parametrize("flags", [0x01, 0x03, 0x07, 0xC3])
def test_connect_reserved_flag_set_closes_without_connack_v311_MQTT_3_1_2_3(flags):
    h = Harness()
    payload = s("dev") + (s("dead/c") + s(b"gone") if flags & 0x04 else b"")
    payload += (s("u") + s(b"p")) if flags & 0xC0 else b""
    c = raw_client(h, connect_bytes(payload, flags=flags))
    assert_closed_silently(c)
    assert h.core.sessions == {}


def test_connect_reserved_flag_clear_is_accepted_v311_MQTT_3_1_2_3_MQTT_3_1_4_4():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev"), flags=0x02))
    assert wire(c) == [b"\x20\x02\x00\x00"]  # CONNACK, return code 0 (accepted)
    assert c.closed is None


def test_clean_session_0_resumes_stored_session_v311_MQTT_3_1_2_4_MQTT_3_1_3_2():
    h = Harness()
    a = connect311(h, "a", clean_start=False)
    a.subscribe("t/#", qos=1)
    b = connect311(h, "b", clean_start=False)
    a.drop()
    b.drop()
    # the session is found by its ClientId, and only by it
    a2 = connect311(h, "a", clean_start=False)
    assert a2.connack.session_present
    other = connect311(h, "A", clean_start=False)
    assert not other.connack.session_present
    connect311(h, "p").publish("t/1", b"x", qos=1)
    assert a2.payloads() == [b"x"] and other.messages() == []


def test_messages_stored_for_disconnected_clean_session_0_v311_MQTT_3_1_2_5_MQTT_4_5_0_1():
    h = Harness()
    sub = connect311(h, "s", clean_start=False)
    sub.subscribe("a/#", qos=2)
    sub.drop()
    p = connect311(h, "p")
    p.publish("a/1", b"one", qos=1)
    p.publish("a/2", b"two", qos=2)
    p.publish("b/3", b"other", qos=1)  # no matching subscription: not stored
    assert [d.message.payload for d in h.core.sessions["s"].queue] == [b"one", b"two"]
    back = connect311(h, "s", clean_start=False)
    assert [(m.payload, m.qos) for m in back.messages()] == [(b"one", 1), (b"two", 2)]


def test_clean_session_1_discards_previous_session_and_keeps_nothing_v311_MQTT_3_1_2_6_MQTT_3_2_2_1():
    h = Harness()
    old = connect311(h, "s", clean_start=False)
    old.subscribe("a/#", qos=1)
    old.send(Publish("in/q2", b"x", 2, False, False, 5))  # inbound QoS 2 waiting for PUBREL
    old.drop()
    connect311(h, "p").publish("a/1", b"queued", qos=1)
    new = connect311(h, "s", clean_start=True)
    assert not new.connack.session_present
    assert new.messages() == []  # the queued message went with the old session
    assert h.core.sessions["s"].subscriptions == {}
    # the old session's packet identifier state is not reused: 5 is a new message now
    watcher = h.subscriber("in/#", client_id="w", version=V311)
    new.send_bytes(publish_bytes("in/q2", b"again", qos=2, packet_id=5))
    assert wire(new) == [b"\x50\x02\x00\x05"]
    assert [m.payload for m in watcher.messages()] == [b"again"]
    # the clean session lasts as long as the network connection, not longer
    new.drop()
    assert "s" not in h.core.sessions
    again = connect311(h, "s", clean_start=False)
    assert not again.connack.session_present


# ---- 3.1.2.5-3.1.2.7 the will flags -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [s("dev"), s("dev") + s("dead/c")], ids=["no-will-fields", "no-will-message"])
def test_will_flag_1_needs_will_topic_and_message_v311_MQTT_3_1_2_9(payload):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = raw_client(h, connect_bytes(payload, flags=0x06))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions and watcher.messages() == []


def test_will_qos_and_retain_used_when_will_flag_1_v311_MQTT_3_1_2_9():
    h = Harness()
    watcher = h.subscriber("dead/#", qos=2, version=V311)
    # Will Flag, Will QoS 2, Will Retain 1, Clean Session 1
    c = raw_client(h, connect_bytes(s("dev") + s("dead/c") + s(b"gone"), flags=0x04 | 0x10 | 0x20 | 0x02))
    assert wire(c) == [b"\x20\x02\x00\x00"]
    c.drop()
    (m,) = watcher.messages()
    assert (m.topic, m.payload, m.qos) == ("dead/c", b"gone", 2)
    assert h.core.retained.get("dead/c").payload == b"gone"


def test_will_removed_once_published_v311_MQTT_3_1_2_10():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", clean_start=False, will=will())
    c.drop()
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    assert h.core.sessions["dev"].will is None  # the session lives on (Clean Session 0), the will does not
    again = connect311(h, "dev", clean_start=False)
    again.drop()
    h.advance(10**6)
    assert watcher.messages() == []


def test_will_removed_on_disconnect_v311_MQTT_3_1_2_10():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", clean_start=False, will=will())
    c.send_bytes(DISCONNECT)
    assert h.core.sessions["dev"].will is None
    again = connect311(h, "dev", clean_start=False)
    again.drop()
    assert watcher.messages() == []


WILL_FLAG_0_BAD = [
    pytest.param(0x02 | 0x08, s("dev"), id="will-qos-1"),
    pytest.param(0x02 | 0x10, s("dev"), id="will-qos-2"),
    pytest.param(0x02 | 0x18, s("dev"), id="will-qos-3"),
    pytest.param(0x02 | 0x20, s("dev"), id="will-retain"),
    pytest.param(0x02, s("dev") + s("dead/c") + s(b"gone"), id="will-fields-present"),
]


@pytest.mark.parametrize("flags,payload", WILL_FLAG_0_BAD)
def test_will_flag_0_with_will_qos_retain_or_fields_closes_v311_MQTT_3_1_2_11(flags, payload):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = raw_client(h, connect_bytes(payload, flags=flags))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions and watcher.messages() == []


@pytest.mark.parametrize("qos_bits", [0x08, 0x10, 0x18])
def test_will_flag_0_needs_will_qos_0_v311_MQTT_3_1_2_13(qos_bits):
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev"), flags=0x02 | qos_bits))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_will_flag_0_needs_will_retain_0_v311_MQTT_3_1_2_15():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev"), flags=0x02 | 0x20))
    assert_closed_silently(c)
    ok = raw_client(h, connect_bytes(s("dev"), flags=0x02))
    assert wire(ok) == [b"\x20\x02\x00\x00"]


def test_no_will_published_without_will_flag_v311_MQTT_3_1_2_12():
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    dropped = connect311(h, "dropped")
    dropped.drop()
    idle = connect311(h, "idle", keep_alive=1)
    h.advance(2)
    assert idle.closed
    bad = connect311(h, "bad")
    bad.send_bytes(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH QoS 3
    assert bad.closed
    taken = connect311(h, "taken")
    connect311(h, "taken")
    assert taken.closed
    assert watcher.messages() == []


def test_will_qos_3_closes_without_connack_v311_MQTT_3_1_2_14():
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = raw_client(h, connect_bytes(s("dev") + s("dead/c") + s(b"gone"), flags=0x06 | 0x18))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions and watcher.messages() == []


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_will_qos_0_1_2_accepted_and_used_v311_MQTT_3_1_2_14(qos):
    h = Harness()
    watcher = h.subscriber("dead/#", qos=2, version=V311)
    c = raw_client(h, connect_bytes(s("dev") + s("dead/c") + s(b"gone"), flags=0x06 | (qos << 3)))
    assert wire(c) == [b"\x20\x02\x00\x00"]
    c.drop()
    assert [m.qos for m in watcher.messages()] == [qos]


def test_will_retain_0_published_as_non_retained_v311_MQTT_3_1_2_16():
    h = Harness()
    connect311(h, "p").publish("dead/c", b"earlier", qos=1, retain=True)
    watcher = h.subscriber("dead/#", version=V311)
    assert [m.payload for m in watcher.messages()] == [b"earlier"]
    c = connect311(h, "dev", will=will(retain=False))
    c.drop()
    assert [(m.payload, m.retain) for m in watcher.messages()] == [(b"gone", False)]
    assert h.core.retained.get("dead/c").payload == b"earlier"  # not stored, not replaced
    late = connect311(h, "late")
    late.subscribe("dead/#")
    assert [m.payload for m in late.messages()] == [b"earlier"]


def test_will_retain_1_published_as_retained_v311_MQTT_3_1_2_17():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will(retain=True, qos=1))
    c.drop()
    # to an established subscription it goes with RETAIN 0 [MQTT-3.3.1-9]; it is stored as retained
    assert [(m.payload, m.retain) for m in watcher.messages()] == [(b"gone", False)]
    stored = h.core.retained.get("dead/c")
    assert stored.payload == b"gone" and stored.qos == 1
    late = connect311(h, "late")
    late.subscribe("dead/#", qos=1)
    assert [(m.payload, m.retain, m.qos) for m in late.messages()] == [(b"gone", True, 1)]


def test_retained_messages_survive_the_session_v311_MQTT_3_1_2_7():
    h = Harness()
    p = connect311(h, "p", clean_start=True)
    p.publish("r/1", b"kept", qos=1, retain=True)
    p.send_bytes(DISCONNECT)
    assert "p" not in h.core.sessions  # the publisher's session ended
    q = connect311(h, "q", clean_start=False)
    q.publish("r/2", b"kept too", qos=0, retain=True)
    q.drop()
    connect311(h, "q", clean_start=True).drop()  # and this one was discarded
    late = connect311(h, "late")
    late.subscribe("r/#", qos=1)
    assert sorted(m.payload for m in late.messages()) == [b"kept", b"kept too"]


# ---- 3.1.2.8-3.1.2.9 user name and password flags -------------------------------------------------------


def test_user_name_flag_0_with_user_name_present_closes_v311_MQTT_3_1_2_18():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s("user"), flags=0x02))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_user_name_flag_1_needs_user_name_v311_MQTT_3_1_2_19():
    h = Harness()
    missing = raw_client(h, connect_bytes(s("dev"), flags=0x82))
    assert_closed_silently(missing)
    present = raw_client(h, connect_bytes(s("dev") + s("user"), flags=0x82))
    assert wire(present) == [b"\x20\x02\x00\x00"]


def test_password_flag_0_with_password_present_closes_v311_MQTT_3_1_2_20():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s("user") + s(b"secret"), flags=0x82))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_password_flag_1_needs_password_v311_MQTT_3_1_2_21():
    h = Harness()
    missing = raw_client(h, connect_bytes(s("dev") + s("user"), flags=0xC2))
    assert_closed_silently(missing)
    present = raw_client(h, connect_bytes(s("dev") + s("user") + s(b"secret"), flags=0xC2))
    assert wire(present) == [b"\x20\x02\x00\x00"]


@pytest.mark.parametrize("payload", [s("dev") + s(b"secret"), s("dev")], ids=["password-present", "no-password"])
def test_password_flag_without_user_name_flag_closes_v311_MQTT_3_1_2_22(payload):
    h = Harness()
    c = raw_client(h, connect_bytes(payload, flags=0x42))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_password_flag_without_user_name_flag_refused_for_mqtt31_too_v311_MQTT_3_1_2_22():
    """MQTT 3.1 (MQIsdp) connections are held to the same rule (5.0 dropped it)."""
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s(b"secret"), flags=0x42, name=b"MQIsdp", level=V31))
    assert_closed_silently(c)


# ---- 3.1.2.10 keep alive -----------------------------------------------------------------------------


def test_keep_alive_closes_at_one_and_a_half_times_as_if_network_failed_v311_MQTT_3_1_2_24():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    start = h.now
    c = connect311(h, "dev", keep_alive=10, will=will())
    h.run_until(start + 14.999)
    assert c.closed is None
    h.run_until(start + 15)
    assert_closed_silently(c)  # no DISCONNECT in 3.1.1
    assert [m.payload for m in watcher.messages()] == [b"gone"]  # as if the network had failed


def test_keep_alive_restarted_by_any_control_packet_v311_MQTT_3_1_2_24():
    h = Harness()
    start = h.now
    c = connect311(h, "dev", keep_alive=10)
    h.run_until(start + 14)
    c.send_bytes(PINGREQ)
    assert wire(c) == [b"\xd0\x00"]
    h.run_until(start + 20)
    c.send_bytes(publish_bytes("x", b"y"))  # any packet counts, not only PINGREQ
    h.run_until(start + 34.999)
    assert c.closed is None
    h.run_until(start + 35)
    assert c.closed


def test_keep_alive_needs_a_whole_control_packet_not_a_trickle_of_bytes_v311_MQTT_3_1_2_24():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    start = h.now
    c = connect311(h, "dev", keep_alive=10, will=will())
    data = publish_bytes("a/b", b"payload")
    h.run_until(start + 9)
    c.send_bytes(data[:3])  # bytes, but no complete Control Packet
    h.run_until(start + 14)
    c.send_bytes(data[3:5])
    h.run_until(start + 14.999)
    assert c.closed is None
    h.run_until(start + 15)
    assert_closed_silently(c)
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_keep_alive_0_never_times_out_v311_MQTT_3_1_2_24():
    h = Harness()
    c = connect311(h, "dev", keep_alive=0)
    h.advance(10**6)
    assert c.closed is None


# ---- 3.1.3 CONNECT payload --------------------------------------------------------------------------------


def test_payload_fields_read_in_order_v311_MQTT_3_1_3_1():
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    payload = s("dev") + s("dead/dev") + s(b"will payload") + s("user") + s(b"pass")
    c = raw_client(h, connect_bytes(payload, flags=0x02 | 0x04 | 0x08 | 0x80 | 0x40))
    assert wire(c) == [b"\x20\x02\x00\x00"]
    assert "dev" in h.core.sessions
    c.drop()
    assert [(m.topic, m.payload, m.qos) for m in watcher.messages()] == [("dead/dev", b"will payload", 1)]


def test_client_id_missing_closes_without_connack_v311_MQTT_3_1_3_3():
    h = Harness()
    c = raw_client(h, connect_bytes(b""))
    assert_closed_silently(c)
    assert h.core.sessions == {}


def test_client_id_must_be_first_field_v311_MQTT_3_1_3_3():
    """With the will fields first, the will topic is read as the ClientId: the rest no longer parses."""
    h = Harness()
    c = raw_client(h, connect_bytes(s("dead/c") + s(b"gone"), flags=0x06))
    assert_closed_silently(c)
    assert h.core.sessions == {}


@pytest.mark.parametrize("client_id", [
    "a", "Z", "0", "abcdefghijklmnopqrstuvw", "0123456789ABCDEFGHIJKLM", "ABCDEFGHIJKLMNOPQRSTUVW", "x1Y2z3",
])
def test_client_ids_of_1_to_23_alphanumerics_allowed_v311_MQTT_3_1_3_5(client_id):
    h = Harness()
    c = raw_client(h, connect_bytes(s(client_id), flags=0x00))
    assert wire(c) == [b"\x20\x02\x00\x00"]
    assert client_id in h.core.sessions and c.closed is None


def test_zero_byte_client_id_gets_unique_id_v311_MQTT_3_1_3_6():
    h = Harness()
    a = raw_client(h, connect_bytes(s(""), flags=0x02))
    b = raw_client(h, connect_bytes(s(""), flags=0x02))
    assert wire(a) == wire(b) == [b"\x20\x02\x00\x00"]
    assert a.closed is None and b.closed is None  # two different ids: neither took the other over
    assert len(h.core.sessions) == 2 and "" not in h.core.sessions
    a.send_bytes(subscribe_bytes(1, ("for/a", 0)))
    b.send_bytes(subscribe_bytes(1, ("for/b", 0)))
    assert wire(a) == wire(b) == [b"\x90\x03\x00\x01\x00"]
    p = connect311(h, "p")
    p.publish("for/a", b"A")
    p.publish("for/b", b"B")
    assert [m.payload for m in a.messages()] == [b"A"] and [m.payload for m in b.messages()] == [b"B"]


def test_zero_byte_client_id_with_clean_session_0_gets_return_code_2_v311_MQTT_3_1_3_8_MQTT_3_2_2_4_MQTT_3_2_2_5():
    h = Harness()
    c = raw_client(h, connect_bytes(s(""), flags=0x00) + subscribe_bytes(1, ("a", 0)))
    assert wire(c) == [b"\x20\x02\x00\x02"]  # Session Present 0, return code 2 (identifier rejected)
    assert c.closed
    assert h.core.sessions == {}


def test_rejected_client_id_gets_return_code_2_then_close_mqtt31_v311_MQTT_3_1_3_9():
    """MQTT 3.1 requires a ClientId of 1 to 23 characters: the server rejects an empty one."""
    h = Harness()
    c = h.connect("", version=V31, clean_start=True, expect=None)
    assert wire(c, V31) == [b"\x20\x02\x00\x02"]
    assert c.closed and h.core.sessions == {}


def test_rejected_client_id_gets_return_code_2_then_close_v311_MQTT_3_1_3_9():
    h = Harness()
    c = h.connect("", version=V311, clean_start=False, expect=None)
    assert wire(c) == [b"\x20\x02\x00\x02"]
    assert c.closed


# ---- 3.1.4 CONNECT actions ----------------------------------------------------------------------------

NON_CONFORMING_CONNECT = [
    pytest.param(connect_bytes(s("dev") + b"\x00"), id="trailing-byte"),
    pytest.param(connect_bytes(s("dev") + s("extra")), id="trailing-field"),
    pytest.param(connect_bytes(s("dev"), flags=0x03), id="reserved-flag"),
    pytest.param(connect_bytes(s("dev") + s("w") + s(b"x"), flags=0x06 | 0x18), id="will-qos-3"),
    pytest.param(connect_bytes(s("dev"), flags=0x22), id="will-retain-without-will"),
    pytest.param(connect_bytes(s("dev") + s(b"p"), flags=0x42), id="password-without-user-name"),
    pytest.param(packet(0x10, s("MQTT") + bytes((V311, 0x02))), id="no-keep-alive"),
    pytest.param(packet(0x10, s("MQTT") + bytes((V311, 0x02)) + u16(0) + b"\x00\x05ab"), id="short-client-id"),
    pytest.param(packet(0x11, s("MQTT") + bytes((V311, 0x02)) + u16(0) + s("dev")), id="fixed-header-flags"),
]


@pytest.mark.parametrize("data", NON_CONFORMING_CONNECT)
def test_non_conforming_connect_closed_without_connack_v311_MQTT_3_1_4_1(data):
    h = Harness()
    c = raw_client(h, data)
    assert_closed_silently(c)
    assert h.core.sessions == {}


@pytest.mark.parametrize("clean", [True, False])
def test_existing_client_with_same_id_is_disconnected_v311_MQTT_3_1_4_2(clean):
    h = Harness()
    old = connect311(h, "dev", clean_start=clean)
    new = connect311(h, "dev", clean_start=clean)
    assert_closed_silently(old)  # closed, and no DISCONNECT: 3.1.1 has no server DISCONNECT
    assert new.closed is None
    assert h.core.sessions["dev"].conn.conn_id == new.conn_id


def test_takeover_applies_clean_session_processing_v311_MQTT_3_1_4_3():
    h = Harness()
    old = connect311(h, "dev", clean_start=False)
    old.subscribe("keep/#", qos=1)
    resumed = connect311(h, "dev", clean_start=False)
    assert old.closed
    assert resumed.connack.session_present and "keep/#" in h.core.sessions["dev"].subscriptions
    fresh = connect311(h, "dev", clean_start=True)
    assert resumed.closed
    assert not fresh.connack.session_present and h.core.sessions["dev"].subscriptions == {}
    fresh.subscribe("gone/#", qos=1)
    # the Clean Session 1 session lasted as long as its connection: a taker-over finds none
    after = connect311(h, "dev", clean_start=False)
    assert fresh.closed
    assert not after.connack.session_present and h.core.sessions["dev"].subscriptions == {}


def test_connack_return_code_0_on_accept_v311_MQTT_3_1_4_4():
    h = Harness()
    for flags in (0x00, 0x02):
        c = raw_client(h, connect_bytes(s(f"dev{flags}"), flags=flags))
        assert wire(c) == [b"\x20\x02\x00\x00"]


REFUSED_THEN_MORE = [
    pytest.param(connect_bytes(s(""), flags=0x00), b"\x20\x02\x00\x02", id="identifier-rejected"),
    pytest.param(connect_bytes(s("dev"), level=6), b"\x20\x02\x00\x01", id="unacceptable-protocol-level"),
]


@pytest.mark.parametrize("refused,connack", REFUSED_THEN_MORE)
def test_nothing_after_a_refused_connect_is_processed_v311_MQTT_3_1_4_5(refused, connack):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    more = publish_bytes("a/b", b"x", qos=1, packet_id=1) + subscribe_bytes(2, ("a/#", 1)) + PINGREQ
    c = raw_client(h, refused + more)
    assert wire(c) == [connack]  # only the CONNACK: no PUBACK, no SUBACK, no PINGRESP
    assert c.closed
    c.send_bytes(more)  # nor anything arriving later
    assert c.take() == [] and watcher.messages() == [] and len(h.core.tree) == 1


# ---- 3.2 CONNACK ----------------------------------------------------------------------------------------


def test_connack_is_the_first_packet_even_with_a_session_to_resume_v311_MQTT_3_2_0_1():
    h = Harness()
    sub = connect311(h, "s", clean_start=False)
    sub.subscribe("a", qos=1)
    p = connect311(h, "p")
    p.publish("a", b"in flight", qos=1)
    sub.drop()
    p.publish("a", b"queued", qos=1)
    back = raw_client(h, connect_bytes(s("s"), flags=0x00))
    sent = back.take()
    assert type(sent[0]).__name__ == "Connack"
    assert [p.payload for p in sent[1:]] == [b"in flight", b"queued"]


def test_session_present_0_with_clean_session_1_v311_MQTT_3_2_2_1():
    h = Harness()
    connect311(h, "s", clean_start=False).drop()
    assert "s" in h.core.sessions
    c = raw_client(h, connect_bytes(s("s"), flags=0x02))
    assert wire(c) == [b"\x20\x02\x00\x00"]


def test_session_present_1_with_stored_session_v311_MQTT_3_2_2_2():
    h = Harness()
    connect311(h, "s", clean_start=False).drop()
    c = raw_client(h, connect_bytes(s("s"), flags=0x00))
    assert wire(c) == [b"\x20\x02\x01\x00"]


def test_session_present_0_without_stored_session_v311_MQTT_3_2_2_3():
    h = Harness()
    c = raw_client(h, connect_bytes(s("s"), flags=0x00))
    assert wire(c) == [b"\x20\x02\x00\x00"]
    c.send_bytes(DISCONNECT)
    connect311(h, "s", clean_start=True).send_bytes(DISCONNECT)  # discards it
    again = raw_client(h, connect_bytes(s("s"), flags=0x00))
    assert wire(again) == [b"\x20\x02\x00\x00"]


def test_refusal_has_session_present_0_and_closes_v311_MQTT_3_2_2_4_MQTT_3_2_2_5():
    h = Harness()
    c = raw_client(h, connect_bytes(s("s"), level=7))
    (connack,) = wire(c)
    assert connack[2] == 0 and connack[3] != 0
    assert c.closed


def test_will_qos_above_server_maximum_closed_without_connack_v311_MQTT_3_2_2_6():
    """3.1.1 has no return code for a will QoS the server does not support: close, no CONNACK."""
    h = Harness(maximum_qos=1)
    watcher = h.subscriber("dead/#", qos=1, version=V311)
    c = raw_client(h, connect_bytes(s("dev") + s("dead/c") + s(b"gone"), flags=0x06 | 0x10))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions and watcher.messages() == []


def test_will_retain_without_retain_support_closed_without_connack_v311_MQTT_3_2_2_6():
    h = Harness(retain_available=False)
    c = raw_client(h, connect_bytes(s("dev") + s("dead/c") + s(b"gone"), flags=0x06 | 0x20))
    assert_closed_silently(c)
    assert "dev" not in h.core.sessions


def test_will_topic_with_wildcard_closed_without_connack_v311_MQTT_3_2_2_6():
    h = Harness()
    c = raw_client(h, connect_bytes(s("dev") + s("dead/#") + s(b"gone"), flags=0x06))
    assert_closed_silently(c)


# ---- 3.3 PUBLISH ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_dup_set_on_redelivery_with_original_identifier_v311_MQTT_3_3_1_1_MQTT_4_4_0_1(qos):
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=qos, version=V311, clean_start=False)
    connect311(h, "p").publish("a", b"x", qos=qos)
    (m,) = sub.messages()
    assert not m.dup
    sub.drop()
    back = connect311(h, "s", clean_start=False)
    (again,) = back.messages()
    assert again.dup and again.packet_id == m.packet_id and again.payload == b"x" and again.qos == qos
    assert encode(again, V311)[0] == (0x38 | (qos << 1))


def test_incoming_dup_not_propagated_v311_MQTT_3_3_1_3():
    h = Harness()
    sub = h.subscriber("a", qos=2, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"1", qos=1, packet_id=1, dup=True))
    p.send_bytes(publish_bytes("a", b"2", qos=2, packet_id=2, dup=True))
    msgs = sub.messages()
    assert [(m.payload, m.dup) for m in msgs] == [(b"1", False), (b"2", False)]


def test_publish_with_both_qos_bits_set_closes_v311_MQTT_3_3_1_4():
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(b"\x36\x05\x00\x01a\x00\x01")
    assert_closed_silently(c)
    assert [m.payload for m in watcher.messages()] == [b"gone"]  # the will only, not the bad PUBLISH


def test_retained_message_stored_with_its_qos_v311_MQTT_3_3_1_5():
    h = Harness()
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("r", b"kept", qos=1, packet_id=1, retain=True))
    stored = h.core.retained.get("r")
    assert (stored.payload, stored.qos) == (b"kept", 1)
    for sub_qos, expected in ((2, 1), (1, 1), (0, 0)):
        c = connect311(h, f"late{sub_qos}")
        c.subscribe("r", qos=sub_qos)
        assert [(m.payload, m.qos, m.retain) for m in c.messages()] == [(b"kept", expected, True)]


def test_new_subscription_gets_last_retained_message_of_each_matching_topic_v311_MQTT_3_3_1_6():
    h = Harness()
    p = connect311(h, "p")
    p.publish("r/1", b"first", qos=1, retain=True)
    p.publish("r/1", b"last", qos=1, retain=True)
    p.publish("r/2", b"two", qos=0, retain=True)
    p.publish("other", b"no", qos=0, retain=True)
    c = connect311(h, "c")
    c.subscribe("r/+", qos=1)
    assert sorted(c.payloads()) == [b"last", b"two"]


def test_retained_qos0_replaces_previous_retained_v311_MQTT_3_3_1_7():
    h = Harness()
    p = connect311(h, "p")
    p.publish("r", b"old", qos=1, retain=True)
    p.send_bytes(publish_bytes("r", b"new", qos=0, retain=True))
    c = connect311(h, "c")
    c.subscribe("r", qos=1)
    # never the old one; the new one is kept too (what the spec says the server SHOULD do)
    assert c.payloads() == [b"new"]


def test_retain_flag_1_when_sent_because_of_new_subscription_v311_MQTT_3_3_1_8():
    h = Harness()
    connect311(h, "p").publish("r", b"kept", qos=0, retain=True)
    c = connect311(h, "c")
    c.send_bytes(subscribe_bytes(1, ("r", 0)))
    assert wire(c) == [b"\x90\x03\x00\x01\x00", publish_bytes("r", b"kept", retain=True)]


def test_retain_flag_1_again_when_identical_subscription_repeated_v311_MQTT_3_3_1_8_MQTT_3_8_4_3():
    h = Harness()
    connect311(h, "p").publish("r", b"kept", qos=1, retain=True)
    c = connect311(h, "c")
    c.subscribe("r", qos=0)
    assert [(m.payload, m.retain, m.qos) for m in c.messages()] == [(b"kept", True, 0)]
    c.subscribe("r", qos=1)  # replaces the subscription: the retained message is re-sent
    assert [(m.payload, m.retain, m.qos) for m in c.messages()] == [(b"kept", True, 1)]
    assert len(h.core.tree) == 1
    connect311(h, "p2").publish("r", b"live", qos=1)
    assert [(m.payload, m.retain, m.qos) for m in c.messages()] == [(b"live", False, 1)]  # once, new QoS


def test_retain_flag_0_to_established_subscription_v311_MQTT_3_3_1_9():
    h = Harness()
    c = connect311(h, "c")
    c.subscribe("r", qos=1)
    connect311(h, "p").send_bytes(publish_bytes("r", b"x", qos=1, packet_id=1, retain=True))
    (m,) = c.messages()
    assert not m.retain and encode(m, V311)[0] & 0x01 == 0


def test_zero_byte_retained_publish_delivered_and_clears_retained_v311_MQTT_3_3_1_10_MQTT_3_3_1_11():
    h = Harness()
    existing = connect311(h, "existing")
    existing.subscribe("r", qos=1)
    p = connect311(h, "p")
    p.publish("r", b"kept", qos=1, retain=True)
    existing.messages()
    p.send_bytes(publish_bytes("r", b"", qos=1, packet_id=7, retain=True))
    # processed as normal: existing subscribers get it, without the RETAIN flag
    assert [(m.payload, m.retain) for m in existing.messages()] == [(b"", False)]
    # and nothing is retained any more, the empty message included
    assert h.core.retained.get("r") is None
    late = connect311(h, "late")
    late.subscribe("r", qos=1)
    assert late.messages() == []


def test_retain_0_neither_stores_nor_removes_retained_v311_MQTT_3_3_1_12():
    h = Harness()
    p = connect311(h, "p")
    p.publish("r", b"kept", qos=1, retain=True)
    p.send_bytes(publish_bytes("r", b"plain", qos=1, packet_id=2))
    p.send_bytes(publish_bytes("r", b"", qos=0))
    p.send_bytes(publish_bytes("s", b"not kept", qos=1, packet_id=3))
    assert h.core.retained.get("r").payload == b"kept"
    assert h.core.retained.get("s") is None
    late = connect311(h, "late")
    late.subscribe("#", qos=1)
    assert late.payloads() == [b"kept"]


@pytest.mark.parametrize("data", [
    pytest.param(packet(0x30, b""), id="empty"),
    pytest.param(packet(0x30, b"\x00"), id="half-length"),
    pytest.param(packet(0x30, b"\x00\x05ab"), id="topic-cut-short"),
    pytest.param(packet(0x32, s("a") + b"\x00"), id="no-room-for-packet-id"),
])
def test_publish_without_a_complete_topic_name_closes_v311_MQTT_3_3_2_1(data):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h)
    c.send_bytes(data)
    assert_closed_silently(c)
    assert watcher.messages() == []


def test_topic_name_sent_to_subscriber_matches_its_filter_v311_MQTT_3_3_2_3():
    h = Harness()
    c = connect311(h, "c")
    c.subscribe("a/+/c", qos=0)
    c.subscribe("x/#", qos=0)
    p = connect311(h, "p")
    for topic in ("a/b/c", "a/b/d", "a/c", "x", "x/y/z", "y/x", "a/b/c/d"):
        p.publish(topic, topic.encode())
    assert [m.topic for m in c.messages()] == ["a/b/c", "x", "x/y/z"]


def test_publish_acknowledged_according_to_its_qos_v311_MQTT_3_3_4_1():
    h = Harness()
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"0", qos=0))
    p.send_bytes(publish_bytes("a", b"1", qos=1, packet_id=1))
    p.send_bytes(publish_bytes("a", b"2", qos=2, packet_id=2))
    assert wire(p) == [b"\x40\x02\x00\x01", b"\x50\x02\x00\x02"]  # nothing for QoS 0


def test_overlapping_subscriptions_respect_the_highest_qos_v311_MQTT_3_3_5_1():
    h = Harness()
    c = connect311(h, "c")
    c.subscribe("a/#", qos=0)
    c.subscribe("a/b", qos=2)
    c.subscribe("+/b", qos=1)
    connect311(h, "p").publish("a/b", b"x", qos=2)
    msgs = c.messages()
    assert msgs and max(m.qos for m in msgs) == 2
    assert all(m.payload == b"x" for m in msgs)


@pytest.mark.parametrize("config,data", [
    pytest.param({"retain_available": False}, publish_bytes("a", b"x", qos=1, packet_id=1, retain=True),
                 id="retain-not-allowed"),
    pytest.param({"maximum_qos": 1}, publish_bytes("a", b"x", qos=2, packet_id=1), id="qos-not-allowed"),
])
def test_publish_not_accepted_is_closed_not_negatively_acknowledged_v311_MQTT_3_3_5_2(config, data):
    """The PUBLISHes this broker does not accept from a client (it has no per-topic authorization; its
    configuration can rule out retained messages or QoS 2) are answered by closing the connection:
    3.1.1 has no way to refuse a PUBLISH, so never a PUBACK / PUBREC that pretends otherwise."""
    h = Harness(**config)
    watcher = h.subscriber("a", qos=1, version=V311)
    c = connect311(h, "p")
    c.send_bytes(data)
    assert_closed_silently(c)  # no PUBACK / PUBREC of any kind, no DISCONNECT: just the close
    assert watcher.messages() == []


# ---- 3.8 / 3.9 SUBSCRIBE and SUBACK ------------------------------------------------------------------


@pytest.mark.parametrize("options", [0x03, 0x04, 0x80, 0x41, 0xFF])
def test_subscribe_requested_qos_byte_reserved_bits_or_qos_3_closes_v311_MQTT_3_8_3_4(options):
    h = Harness()
    c = connect311(h)
    c.send_bytes(packet(0x82, u16(1) + s("a") + b"\x00" + s("b") + bytes((options,))))
    assert_closed_silently(c)
    assert len(h.core.tree) == 0  # the valid first filter was not subscribed either


def test_subscribe_with_wildcards_rejected_when_not_supported_v311_MQTT_3_8_3_2():
    h = Harness(wildcard_subscription_available=False)
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, ("a/#", 1), ("a/b", 1), ("+/b", 0)))
    assert wire(c) == [b"\x90\x05\x00\x01\x80\x01\x80"]
    assert list(h.core.sessions["c"].subscriptions) == ["a/b"]


def test_subscribe_with_wildcards_accepted_when_supported_v311_MQTT_3_8_3_2():
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, ("a/#", 1), ("+/b", 0)))
    assert wire(c) == [b"\x90\x04\x00\x01\x01\x00"]


def test_subscribe_without_payload_closes_v311_MQTT_3_8_3_3():
    h = Harness()
    c = connect311(h)
    c.send_bytes(packet(0x82, u16(1)))
    assert_closed_silently(c)


def test_subscribe_answered_with_suback_v311_MQTT_3_8_4_1():
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(3, ("a", 2)))
    c.send_bytes(subscribe_bytes(4, ("a/#/b", 1)))  # even a refused filter gets its SUBACK
    assert wire(c) == [b"\x90\x03\x00\x03\x02", b"\x90\x03\x00\x04\x80"]


def test_multiple_filters_handled_as_a_sequence_of_subscribes_v311_MQTT_3_8_4_4():
    h = Harness()
    connect311(h, "p").publish("b", b"retained b", retain=True)
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, ("a", 0), ("b", 1), ("a", 2)))  # the second "a" replaces the first
    sent = c.take()
    assert [type(p).__name__ for p in sent] == ["Suback", "Publish"]  # one SUBACK for the three
    assert encode(sent[0], V311) == b"\x90\x05\x00\x01\x00\x01\x02"
    assert sent[1].payload == b"retained b"
    assert len(h.core.tree) == 2
    connect311(h, "p2").publish("a", b"x", qos=2)
    assert [(m.payload, m.qos) for m in c.messages()] == [(b"x", 2)]


def test_suback_has_a_return_code_per_filter_granted_or_failure_in_order_v311_MQTT_3_8_4_5_MQTT_3_9_3_1():
    h = Harness(maximum_qos=1)
    c = connect311(h)
    c.send_bytes(subscribe_bytes(9, ("q2", 2), ("bad/#/x", 0), ("q0", 0), ("q1", 1), ("bad+", 2)))
    # granted QoS may be lower than requested (2 -> 1); failures are 0x80; the order is the filters'
    assert wire(c) == [b"\x90\x07\x00\x09\x01\x80\x00\x01\x80"]


def test_delivered_qos_is_min_of_published_and_granted_v311_MQTT_3_8_4_6():
    h = Harness()
    subs = {q: connect311(h, f"s{q}") for q in (0, 1, 2)}
    for q, c in subs.items():
        c.subscribe("t", qos=q)
    p = connect311(h, "p")
    for q in (0, 1, 2):
        p.publish("t", bytes((q,)), qos=q)
    for granted, c in subs.items():
        assert [(m.payload[0], m.qos) for m in c.messages()] == [(q, min(q, granted)) for q in (0, 1, 2)]


def test_suback_return_codes_only_0_1_2_or_0x80_v311_MQTT_3_9_3_2():
    h = Harness(shared_subscription_available=False, wildcard_subscription_available=False, maximum_qos=1)
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, ("$share/g/t", 1), ("a/#", 1), ("a//", 2), ("#/x", 0), ("x", 0)))
    (suback,) = wire(c)
    assert set(suback[4:]) <= {0x00, 0x01, 0x02, 0x80}
    assert suback == b"\x90\x07\x00\x01\x80\x80\x01\x80\x00"


# ---- 3.10 UNSUBSCRIBE -------------------------------------------------------------------------------------


def test_unsubscribe_without_payload_closes_v311_MQTT_3_10_3_2():
    h = Harness()
    c = connect311(h)
    c.subscribe("a", qos=0)
    c.send_bytes(packet(0xA2, u16(1)))
    assert_closed_silently(c)


def test_unsubscribe_matches_filters_character_by_character_v311_MQTT_3_10_4_1():
    h = Harness()
    c = connect311(h)
    c.subscribe("a/+", qos=0)
    c.subscribe("A/b", qos=0)
    for near_miss in ("a/b", "a/#", "a/+/", "A/B", "a /+"):  # ("a/ +" is invalid: the connection closes)
        c.send_bytes(unsubscribe_bytes(1, near_miss))
    assert set(h.core.sessions["c"].subscriptions) == {"a/+", "A/b"}
    p = connect311(h, "p")
    p.publish("a/b", b"1")
    assert c.payloads() == [b"1"]
    c.send_bytes(unsubscribe_bytes(2, "a/+"))
    assert set(h.core.sessions["c"].subscriptions) == {"A/b"}
    p.publish("a/b", b"2")
    p.publish("A/b", b"3")
    assert c.payloads() == [b"3"]


def test_unsubscribe_stops_new_messages_v311_MQTT_3_10_4_2():
    h = Harness()
    c = connect311(h, "c", clean_start=False)
    c.subscribe("t", qos=1)
    p = connect311(h, "p")
    p.publish("t", b"before", qos=1)
    assert c.payloads() == [b"before"]
    c.send_bytes(unsubscribe_bytes(5, "t"))
    assert wire(c) == [b"\xb0\x02\x00\x05"]
    p.publish("t", b"after", qos=1)
    assert c.messages() == []
    c.drop()
    p.publish("t", b"offline", qos=1)
    assert not h.core.sessions["c"].queue
    back = connect311(h, "c", clean_start=False)
    # only the one whose delivery had started comes back (unacknowledged) [MQTT-3.10.4-3]
    assert [(m.payload, m.dup) for m in back.messages()] == [(b"before", True)]


def test_unsubscribe_completes_deliveries_already_started_v311_MQTT_3_10_4_3():
    h = Harness()
    sub = h.subscriber("t", client_id="s", qos=2, version=V311)
    p = connect311(h, "p")
    p.publish("t", b"q2", qos=2)
    (m,) = sub.messages()
    sub.send_bytes(unsubscribe_bytes(9, "t"))
    assert wire(sub) == [b"\xb0\x02\x00\x09"]
    sub.send_bytes(packet(0x50, u16(m.packet_id)))  # PUBREC: the flow goes on
    assert wire(sub) == [packet(PUBREL, u16(m.packet_id))]
    sub.send_bytes(packet(0x70, u16(m.packet_id)))
    assert h.core.sessions["s"].inflight == {}


def test_unsubscribe_completes_qos1_delivery_on_resume_v311_MQTT_3_10_4_3():
    h = Harness()
    sub = h.subscriber("t", client_id="s", qos=1, version=V311, clean_start=False)
    connect311(h, "p").publish("t", b"q1", qos=1)
    (m,) = sub.messages()
    sub.send_bytes(unsubscribe_bytes(9, "t"))
    sub.drop()
    back = connect311(h, "s", clean_start=False)
    (again,) = back.messages()  # still re-delivered until acknowledged
    assert again.packet_id == m.packet_id and again.dup


def test_unsuback_with_same_identifier_even_when_nothing_deleted_v311_MQTT_3_10_4_4_MQTT_3_10_4_5():
    h = Harness()
    c = connect311(h)
    c.subscribe("a", qos=0)
    c.send_bytes(unsubscribe_bytes(0x1234, "a"))
    c.send_bytes(unsubscribe_bytes(0x4321, "a"))
    c.send_bytes(unsubscribe_bytes(0x0007, "never"))
    assert wire(c) == [b"\xb0\x02\x12\x34", b"\xb0\x02\x43\x21", b"\xb0\x02\x00\x07"]


def test_multiple_filters_unsubscribed_with_one_unsuback_v311_MQTT_3_10_4_6():
    h = Harness()
    c = connect311(h)
    c.subscribe("a", qos=0)
    c.subscribe("b", qos=0)
    c.subscribe("c", qos=0)
    c.send_bytes(unsubscribe_bytes(3, "a", "x", "c", "a"))
    assert wire(c) == [b"\xb0\x02\x00\x03"]
    assert list(h.core.sessions["c"].subscriptions) == ["b"]


# ---- 3.12 PINGREQ ----------------------------------------------------------------------------------------


def test_pingreq_answered_with_pingresp_v311_MQTT_3_12_4_1():
    h = Harness()
    c = connect311(h)
    c.send_bytes(PINGREQ + PINGREQ)
    assert wire(c) == [b"\xd0\x00", b"\xd0\x00"]


def test_pingreq_answered_with_pingresp_mqtt31_v311_MQTT_3_12_4_1():
    h = Harness()
    c = h.connect("c", version=V31)
    c.send_bytes(PINGREQ)
    assert wire(c, V31) == [b"\xd0\x00"]


# ---- 4.1 session state --------------------------------------------------------------------------------------


def test_session_state_kept_for_the_whole_session_v311_MQTT_4_1_0_1():
    h = Harness()
    watcher = h.subscriber("in", client_id="w", version=V311)
    sub = connect311(h, "s", clean_start=False)
    sub.subscribe("out", qos=2)
    p = connect311(h, "p")
    p.publish("out", b"unacked", qos=2)
    (m,) = sub.messages()
    # inbound QoS 2 from this client, not yet released
    sub.send_bytes(publish_bytes("in", b"once", qos=2, packet_id=77))
    assert wire(sub) == [b"\x50\x02\x00\x4d"]
    assert [x.payload for x in watcher.messages()] == [b"once"]
    sub.drop()
    h.advance(10**5)
    back = connect311(h, "s", clean_start=False)
    assert back.connack.session_present
    # the subscription, the unacknowledged outbound message and the inbound identifier are all kept
    (again,) = back.messages()
    assert again.packet_id == m.packet_id and again.dup
    back.send_bytes(publish_bytes("in", b"once", qos=2, packet_id=77, dup=True))
    assert wire(back) == [b"\x50\x02\x00\x4d"]
    assert watcher.messages() == []  # no duplicate onward
    back.send_bytes(packet(PUBREL, u16(77)))
    assert wire(back) == [b"\x70\x02\x00\x4d"]
    p.publish("out", b"later", qos=2)
    assert [x.payload for x in back.messages()] == [b"later"]


def test_session_lasts_as_long_as_the_connection_v311_MQTT_4_1_0_2():
    h = Harness()
    c = connect311(h, "c", clean_start=True, keep_alive=0)
    c.subscribe("t", qos=1)
    h.advance(10**7)
    assert h.core.sessions["c"].conn is not None
    connect311(h, "p").publish("t", b"still here", qos=1)
    assert c.payloads() == [b"still here"]


# ---- 4.3 QoS flows ------------------------------------------------------------------------------------


def test_qos0_sent_with_qos_0_and_dup_0_v311_MQTT_4_3_1_1():
    h = Harness()
    sub = h.subscriber("a", qos=2, version=V311)
    connect311(h, "p").publish("a", b"x", qos=0)
    assert wire(sub) == [b"\x30\x04\x00\x01ax"]


def test_qos1_sender_keeps_publish_unacknowledged_until_puback_v311_MQTT_4_3_2_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=1, version=V311, clean_start=False)
    p = connect311(h, "p")
    p.publish("a", b"acked", qos=1)
    p.publish("a", b"unacked", qos=1)
    acked, unacked = sub.messages()
    assert (acked.qos, acked.dup, unacked.qos, unacked.dup) == (1, False, 1, False)
    sub.send_bytes(packet(0x40, u16(acked.packet_id)))
    sub.drop()
    back = connect311(h, "s", clean_start=False)
    assert [(m.payload, m.dup) for m in back.messages()] == [(b"unacked", True)]


def test_qos1_receiver_acks_and_treats_reused_identifier_as_new_v311_MQTT_4_3_2_2():
    h = Harness()
    watcher = h.subscriber("a", qos=1, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"1", qos=1, packet_id=7))
    assert wire(p) == [b"\x40\x02\x00\x07"]
    p.send_bytes(publish_bytes("a", b"2", qos=1, packet_id=7, dup=True))  # after PUBACK: a new publication
    assert wire(p) == [b"\x40\x02\x00\x07"]
    assert [m.payload for m in watcher.messages()] == [b"1", b"2"]


def test_qos2_sender_flow_and_no_publish_resent_after_pubrel_v311_MQTT_4_3_3_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=2, version=V311, clean_start=False)
    connect311(h, "p").publish("a", b"x", qos=2)
    (m,) = sub.messages()
    assert (m.qos, m.dup) == (2, False)
    # unacknowledged until PUBREC: re-sent as PUBLISH on resume
    sub.drop()
    sub = connect311(h, "s", clean_start=False)
    (m2,) = sub.messages()
    assert m2.packet_id == m.packet_id and m2.dup
    sub.send_bytes(packet(0x50, u16(m.packet_id)))
    assert wire(sub) == [packet(PUBREL, u16(m.packet_id))]
    # after PUBREL only the PUBREL is re-sent, never the PUBLISH, until PUBCOMP
    sub.drop()
    sub = connect311(h, "s", clean_start=False)
    assert wire(sub) == [packet(PUBREL, u16(m.packet_id))]
    sub.send_bytes(packet(0x70, u16(m.packet_id)))
    sub.drop()
    sub = connect311(h, "s", clean_start=False)
    assert sub.take() == []


def test_qos2_receiver_flow_v311_MQTT_4_3_3_2():
    h = Harness()
    watcher = h.subscriber("a", qos=2, version=V311)
    p = connect311(h, "p")
    p.send_bytes(publish_bytes("a", b"1", qos=2, packet_id=3))
    assert wire(p) == [b"\x50\x02\x00\x03"]
    p.send_bytes(publish_bytes("a", b"1", qos=2, packet_id=3, dup=True))  # before PUBREL: PUBREC again
    assert wire(p) == [b"\x50\x02\x00\x03"]
    assert [m.payload for m in watcher.messages()] == [b"1"]  # and no duplicate onward
    p.send_bytes(packet(PUBREL, u16(3)))
    assert wire(p) == [b"\x70\x02\x00\x03"]
    p.send_bytes(publish_bytes("a", b"2", qos=2, packet_id=3))  # after PUBCOMP: a new publication
    assert wire(p) == [b"\x50\x02\x00\x03"]
    assert [m.payload for m in watcher.messages()] == [b"2"]


def test_unacknowledged_publish_and_pubrel_resent_with_original_ids_v311_MQTT_4_4_0_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=2, version=V311, clean_start=False)
    p = connect311(h, "p")
    p.publish("a", b"q1", qos=1)
    p.publish("a", b"q2-released", qos=2)
    p.publish("a", b"q2", qos=2)
    m1, m2, m3 = sub.messages()
    sub.send_bytes(packet(0x50, u16(m2.packet_id)))
    sub.take()
    sub.drop()
    back = connect311(h, "s", clean_start=False)
    sent = back.take()
    resent = {type(x).__name__ + ":" + str(x.packet_id) for x in sent}
    assert resent == {f"Publish:{m1.packet_id}", f"Pubrel:{m2.packet_id}", f"Publish:{m3.packet_id}"}
    assert all(x.dup for x in sent if isinstance(x, Publish))


# ---- 4.5 / 4.6 ownership and ordering ---------------------------------------------------------------


def test_message_added_to_session_of_each_matching_subscriber_v311_MQTT_4_5_0_1():
    h = Harness()
    online = h.subscriber("t/#", client_id="online", version=V311)
    offline = connect311(h, "offline", clean_start=False)
    offline.subscribe("t/+", qos=2)
    offline.drop()
    other = h.subscriber("u/#", client_id="other", version=V311)
    connect311(h, "p").publish("t/1", b"x", qos=2)
    assert online.payloads() == [b"x"]
    assert [d.message.payload for d in h.core.sessions["offline"].queue] == [b"x"]
    assert other.messages() == []


def test_publish_resent_in_original_order_v311_MQTT_4_6_0_1():
    h = Harness()
    sub = h.subscriber("a", client_id="s", qos=2, version=V311, clean_start=False)
    p = connect311(h, "p")
    for i, q in enumerate([1, 2, 1, 2, 1]):
        p.publish("a", bytes((i,)), qos=q)
    first = sub.messages()
    sub.drop()
    back = connect311(h, "s", clean_start=False)
    again = back.messages()
    assert [m.packet_id for m in again] == [m.packet_id for m in first]
    assert [m.payload for m in again] == [bytes((i,)) for i in range(5)]


def test_puback_sent_in_order_of_publish_v311_MQTT_4_6_0_2():
    h = Harness()
    p = connect311(h, "p")
    p.send_bytes(b"".join(publish_bytes("a", b"x", qos=1, packet_id=i) for i in (30, 1, 500, 2)))
    assert wire(p) == [b"\x40\x02" + u16(i) for i in (30, 1, 500, 2)]


def test_pubrec_sent_in_order_of_publish_v311_MQTT_4_6_0_3():
    h = Harness()
    p = connect311(h, "p")
    p.send_bytes(b"".join(publish_bytes("a", b"x", qos=2, packet_id=i) for i in (9, 4, 6)))
    assert wire(p) == [b"\x50\x02" + u16(i) for i in (9, 4, 6)]


def test_pubrel_sent_in_order_of_pubrec_v311_MQTT_4_6_0_4():
    h = Harness()
    sub = h.subscriber("a", qos=2, version=V311)
    p = connect311(h, "p")
    for i in range(3):
        p.publish("a", bytes((i,)), qos=2)
    ids = [m.packet_id for m in sub.messages()]
    order = [ids[2], ids[0], ids[1]]
    sub.send_bytes(b"".join(packet(0x50, u16(i)) for i in order))
    assert wire(sub) == [packet(PUBREL, u16(i)) for i in order]


def test_topics_are_ordered_by_default_v311_MQTT_4_6_0_5():
    h = Harness()
    subs = [h.subscriber("t/#", client_id=f"s{q}", qos=q, version=V311) for q in (0, 1, 2)]
    p = connect311(h, "p")
    for i in range(50):
        p.publish("t/x", i.to_bytes(2, "big"), qos=i % 3)
    for sub in subs:
        received = [int.from_bytes(m.payload, "big") for m in sub.messages()]
        assert received == list(range(50))


def test_messages_from_a_client_forwarded_in_order_across_reconnect_v311_MQTT_4_6_0_6():
    h = Harness()
    sub = h.subscriber("t/#", client_id="s", qos=2, version=V311, clean_start=False)
    a = connect311(h, "a")
    b = connect311(h, "b")
    a.publish("t/x", b"a1", qos=1)
    b.publish("t/x", b"b1", qos=2)
    a.publish("t/x", b"a2", qos=1)
    sub.drop()  # a1, b1, a2 in flight, unacknowledged
    b.publish("t/x", b"b2", qos=2)
    a.publish("t/x", b"a3", qos=1)  # queued while offline
    back = connect311(h, "s", clean_start=False)
    got = [m.payload for m in back.messages()]
    assert [x for x in got if x.startswith(b"a")] == [b"a1", b"a2", b"a3"]
    assert [x for x in got if x.startswith(b"b")] == [b"b1", b"b2"]
    assert got == [b"a1", b"b1", b"a2", b"b2", b"a3"]


# ---- 4.7 topics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a/+", "+", "a/#", "#", "a+b", "a/b#"])
def test_wildcards_in_publish_topic_name_close_v311_MQTT_4_7_1_1_MQTT_3_3_2_2(topic):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h)
    c.send_bytes(publish_bytes(topic, b"x"))
    assert_closed_silently(c)
    assert watcher.messages() == []


@pytest.mark.parametrize("bad,good", [("a/#/b", "a/#"), ("a/b#", "a/b/#"), ("##", "#"), ("#/", "+/")])
def test_multi_level_wildcard_only_alone_and_last_v311_MQTT_4_7_1_2(bad, good):
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, (bad, 1), (good, 1)))
    assert wire(c) == [b"\x90\x04\x00\x01\x80\x01"]


@pytest.mark.parametrize("bad,good", [("a+", "+"), ("a/+b", "a/+"), ("+a/b", "+/+/b"), ("a/++", "+/#")])
def test_single_level_wildcard_occupies_a_whole_level_v311_MQTT_4_7_1_3(bad, good):
    h = Harness()
    c = connect311(h)
    c.send_bytes(subscribe_bytes(1, (bad, 1), (good, 1)))
    assert wire(c) == [b"\x90\x04\x00\x01\x80\x01"]


def test_leading_wildcards_do_not_match_dollar_topics_v311_MQTT_4_7_2_1():
    h = Harness()
    hash_ = h.subscriber("#", client_id="hash", version=V311)
    plus = h.subscriber("+/x", client_id="plus", version=V311)
    # a $ topic other than $SYS: clients may not publish to $SYS (tests/core/test_sys_presence.py)
    dollar = h.subscriber("$test/#", client_id="dollar", version=V311)
    dollar_plus = h.subscriber("$test/+", client_id="dollar_plus", version=V311)
    connect311(h, "p").publish("$test/x", b"x")
    assert hash_.messages() == [] and plus.messages() == []
    assert dollar.payloads() == [b"x"] and dollar_plus.payloads() == [b"x"]


@pytest.mark.parametrize("data", [
    pytest.param(publish_bytes("", b"x"), id="publish-empty-topic"),
    pytest.param(subscribe_bytes(1, ("", 0)), id="subscribe-empty-filter"),
    pytest.param(unsubscribe_bytes(1, ""), id="unsubscribe-empty-filter"),
])
def test_empty_topic_name_or_filter_closes_v311_MQTT_4_7_3_1(data):
    h = Harness()
    watcher = h.subscriber("#", version=V311)
    c = connect311(h)
    c.send_bytes(data)
    assert_closed_silently(c)
    assert watcher.messages() == []


def test_longest_topic_of_65535_bytes_kept_whole_v311_MQTT_4_7_3_3():
    topic = "t/" + "\u00e9" * 32766 + "z"  # 2 + 65532 + 1 = 65535 bytes of UTF-8
    assert len(topic.encode()) == 65535
    h = Harness(max_topic_length=65535)  # the default limit is lower: 4096
    c = connect311(h, "c")
    c.send_bytes(subscribe_bytes(1, (topic, 0)))
    assert wire(c) == [b"\x90\x03\x00\x01\x00"]
    connect311(h, "p").send_bytes(publish_bytes(topic, b"x"))
    (m,) = c.messages()
    assert m.topic == topic
    assert encode(m, V311)[:8] == packet(0x30, s(topic) + b"x")[:8]


def test_topic_length_beyond_packet_closes_v311_MQTT_4_7_3_3():
    """A topic length that claims more bytes than the packet holds cannot be a topic: close."""
    h = Harness()
    c = connect311(h)
    c.send_bytes(packet(0x30, b"\xff\xff" + b"a" * 10))
    assert_closed_silently(c)


@pytest.mark.parametrize("filter_,topic", [
    ("caf\u00e9", "cafe\u0301"),  # NFC filter, NFD topic
    ("cafe\u0301", "caf\u00e9"),
    ("a/b", "A/B"),
    ("a/b", "a//b"),
    ("a/b", "a/b/"),
    ("a/b", " a/b"),
    ("\ufb01", "fi"),  # a ligature, not its compatibility decomposition
])
def test_no_normalization_when_matching_v311_MQTT_4_7_3_4(filter_, topic):
    h = Harness()
    c = connect311(h, "c")
    c.send_bytes(subscribe_bytes(1, (filter_, 0)))
    c.take()
    p = connect311(h, "p")
    p.send_bytes(publish_bytes(topic, b"other"))
    p.send_bytes(publish_bytes(filter_, b"same"))
    msgs = c.messages()
    assert [(m.topic, m.payload) for m in msgs] == [(filter_, b"same")]
    assert encode(msgs[0], V311) == publish_bytes(filter_, b"same")


# ---- 4.8 handling errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    pytest.param(b"\x20\x02\x00\x00", id="CONNACK"),
    pytest.param(b"\x90\x03\x00\x01\x00", id="SUBACK"),
    pytest.param(b"\xb0\x02\x00\x01", id="UNSUBACK"),
    pytest.param(b"\xd0\x00", id="PINGRESP"),
    pytest.param(b"\xf0\x00", id="type-15-reserved-in-3.1.1"),
    pytest.param(b"\x00\x00", id="type-0-reserved"),
    pytest.param(b"\xe0\x01\x00", id="DISCONNECT-with-body"),
    pytest.param(b"\x40\x03\x00\x01\x00", id="PUBACK-with-reason-code"),
    pytest.param(b"\xc0\x01\x00", id="PINGREQ-with-body"),
    pytest.param(b"\x30\xff\xff\xff\xff\x7f", id="remaining-length-five-bytes"),
])
def test_protocol_violation_closes_the_connection_v311_MQTT_4_8_0_1(data):
    h = Harness()
    watcher = h.subscriber("dead/#", version=V311)
    c = connect311(h, "dev", will=will())
    c.send_bytes(data)
    assert_closed_silently(c)
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_protocol_violation_closes_only_that_connection_v311_MQTT_4_8_0_1():
    h = Harness()
    good = h.subscriber("t", client_id="good", version=V311)
    bad = connect311(h, "bad")
    bad.send_bytes(publish_bytes("t", b"ok") + b"\x20\x02\x00\x00" + publish_bytes("t", b"never"))
    assert bad.closed
    assert good.payloads() == [b"ok"] and good.closed is None
    good.send_bytes(PINGREQ)
    assert wire(good) == [b"\xd0\x00"]


# ---- the same will, end to end, on MQTT 3.1 ----------------------------------------------------------


def test_mqtt31_will_and_clean_session_v311_MQTT_3_1_2_8_MQTT_3_1_2_6():
    """MQTT 3.1 (MQIsdp, level 3) is served with the 3.1.1 rules."""
    h = Harness()
    watcher = h.subscriber("dead/#", version=V31)
    c = h.connect("dev", version=V31, will=Will("dead/dev", b"gone", 1, False))
    assert encode(c.connack, V31) == b"\x20\x02\x00\x00"  # MQTT 3.1: no Session Present bit
    c.drop()
    assert [(m.topic, m.payload) for m in watcher.messages()] == [("dead/dev", b"gone")]
    assert "dev" not in h.core.sessions  # Clean Session 1: the session ended with the connection


def test_raw_byte_helpers_agree_with_the_codec():
    """Guards this file's hand-written bytes (not a conformance test: it does not drive the broker)."""
    from lastwill.codec.decoder import decode_packet

    data = connect_bytes(s("dev") + s("w/t") + s(b"bye") + s("u") + s(b"p"), flags=0xC2 | 0x04 | 0x08, keep_alive=30)
    expected = Connect(client_id="dev", clean_start=True, keep_alive=30, protocol_level=V311,
                       will=Will("w/t", b"bye", 1, False), username="u", password=b"p")
    assert decode_packet(data) == expected
    assert encode(expected, V311) == data
    sub = subscribe_bytes(7, ("a/b", 1), ("c/#", 2))
    assert decode_packet(sub, V311) == Subscribe(7, [Subscription("a/b", 1), Subscription("c/#", 2)])
    assert encode(Puback(5), V311) == b"\x40\x02\x00\x05"
    assert encode(Pubrec(5), V311) == b"\x50\x02\x00\x05"
    assert encode(Pubrel(5), V311) == packet(PUBREL, u16(5))
    assert encode(Pubcomp(5), V311) == b"\x70\x02\x00\x05"
    assert encode(Publish("a", b"x", 1, True, True, 3), V311) == publish_bytes("a", b"x", 1, 3, retain=True, dup=True)
