"""MQTT 5.0 3.1.2.11.4: the client's Maximum Packet Size bounds every packet the broker generates.

[MQTT-3.1.2-24] "The Server MUST NOT send packets exceeding Maximum Packet Size to the Client". A
Reason String or User Property goes first; a packet that still does not fit is not sent, and what
follows depends on the packet (core/fit.py): a CONNACK that would accept the CONNECT refuses it
(nothing stored, no will), an acknowledgement the client waits for ends the connection (its will is
published), a refusing CONNACK or a DISCONNECT is left out of a close that happens anyway.
"""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Disconnect, Publish, Subscribe, Subscription, Unsubscribe
from tests.core.harness import Harness, will


def _sizes(packets) -> list[int]:
    return [len(encode(p, 5)) for p in packets]


def test_connack_that_cannot_fit_is_not_sent_and_no_will_is_stored_v5_MQTT_3_1_2_24_MQTT_3_1_2_7():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("c", maximum_packet_size=2, will=will(), expect=None)
    assert c.inbox == [] and c.closed  # not even CONNACK 0x95 (5 bytes) fits in 2
    assert "c" not in h.core.sessions and h.core.timeline.kinds("c") == ["refused"]
    (event,) = h.core.timeline.events("c")
    assert event.rule == "MQTT-3.1.2-24" and "is never published" in event.detail
    h.advance(100)
    assert watcher.messages() == []  # the CONNECT was not accepted: no will to publish


@pytest.mark.parametrize("limit", [5, 8, 15])
def test_connack_refused_0x95_when_only_the_accepting_connack_is_too_large_v5_MQTT_3_1_2_24(limit):
    # the CONNACK accepting it is 16 bytes here (Receive Maximum, Maximum Packet Size, Topic Alias Maximum)
    h = Harness()
    assert len(encode(h.connect("probe").connack, 5)) == 16
    c = h.connect("c", maximum_packet_size=limit, request_problem_information=1, will=will(), expect=0x95)
    assert len(encode(c.connack, 5)) <= limit and "reason_string" not in c.connack.properties
    assert c.closed and "c" not in h.core.sessions and h.core.timeline.kinds("c") == ["refused"]


def test_connack_that_fits_exactly_is_sent_v5_MQTT_3_1_2_24():
    h = Harness()
    c = h.connect("c", maximum_packet_size=16)
    assert len(encode(c.connack, 5)) == 16 and not c.closed


def test_refusing_connack_that_cannot_fit_even_without_reason_string_is_not_sent_v5_MQTT_3_1_2_24():
    h = Harness()
    c = h.connect("c", maximum_packet_size=4, authentication_method="SCRAM-SHA-256", will=will(), expect=None)
    assert c.inbox == [] and c.closed  # CONNACK 0x8C is 5 bytes without its Reason String
    assert h.core.timeline.kinds("c") == ["refused"]


def test_connack_without_maximum_packet_size_when_the_server_has_no_limit_beyond_the_protocol_v5():
    # 3.2.2.3.6: absent means no limit beyond the protocol's, so at the protocol's limit it is left out
    h = Harness(max_packet_size=268_435_460, receive_maximum=65535, topic_alias_maximum=0)
    c = h.connect("c", maximum_packet_size=5)
    assert c.connack.properties == {} and len(encode(c.connack, 5)) == 5


def test_suback_that_cannot_fit_ends_the_connection_and_publishes_the_will_v5_MQTT_3_1_2_24_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("c", maximum_packet_size=16, request_problem_information=1, will=will(payload=b"bye"))
    # SUBACK: fixed header 2, packet id 2, property length 1, 12 reason codes: 17 bytes
    c.send(Subscribe(1, [Subscription(f"t/{i}", 1) for i in range(12)]))
    assert c.take("Suback") == []
    (d,) = c.take("Disconnect")
    assert d.reason_code == 0x95 and len(encode(d, 5)) <= 16  # Packet too large, no Reason String
    assert c.closed and watcher.payloads() == [b"bye"]
    assert "max_packet_size" not in h.core.limit_hits  # the broker's own limit was not hit
    # 11 filters fit: the SUBACK is sent, the connection stays
    c = h.connect("c", maximum_packet_size=16)
    c.send(Subscribe(1, [Subscription(f"t/{i}", 1) for i in range(11)]))
    (ack,) = c.take("Suback")
    assert len(encode(ack, 5)) == 16 and not c.closed


def test_unsuback_that_cannot_fit_ends_the_connection_and_publishes_the_will_v5_MQTT_3_1_2_24_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("c", maximum_packet_size=16, will=will(payload=b"bye"))
    c.send(Unsubscribe(1, [f"t/{i}" for i in range(12)]))
    assert c.take("Unsuback") == []
    (d,) = c.take("Disconnect")
    assert d.reason_code == 0x95 and c.closed and watcher.payloads() == [b"bye"]


@pytest.mark.parametrize("limit", range(1, 41))
def test_no_packet_the_broker_generates_exceeds_the_client_maximum_v5_MQTT_3_1_2_24(limit):
    h = Harness()
    p = h.connect("p")
    c = h.connect("c", maximum_packet_size=limit, request_problem_information=1, expect=None)
    if not c.closed:
        c.send(Subscribe(1, [Subscription("t", 2), Subscription("a/#/b", 1), Subscription("x/y", 1)]))
    if not c.closed:
        c.send(Unsubscribe(2, ["t/never", "x/y", "bad/#/x"]))
    if not c.closed:
        for qos in (0, 1, 2):
            p.publish("t", b"m" * 10, qos=qos)
            c.publish("u", b"n", qos=qos)
    if not c.closed:
        c.send_bytes(b"\x41\x02\x00\x01")  # PUBACK with reserved flags: DISCONNECT 0x81
    sent = c.take()
    assert all(size <= limit for size in _sizes(sent)), list(zip(_sizes(sent), sent, strict=True))
    assert c.closed
    if limit >= 16:  # accepted: every answer got through, or the packet that could not was a PUBLISH
        assert any(isinstance(x, Disconnect) and x.reason_code == 0x81 for x in sent)
        # the PUBLISHes to it are 16 (QoS 0) and 18 bytes: discarded for it when larger [MQTT-3.1.2-25]
        assert len([x for x in sent if isinstance(x, Publish)]) == sum(1 for n in (16, 18, 18) if n <= limit)
