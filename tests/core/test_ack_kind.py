"""An acknowledgement of the wrong kind for a message in flight is a protocol violation (both versions).

The broker sends a QoS 1 PUBLISH and waits for PUBACK [MQTT-4.3.2-3]; a QoS 2 PUBLISH and waits for
PUBREC [MQTT-4.3.3-3], then sends PUBREL and waits for PUBCOMP [MQTT-4.3.3-5]. A client answering a
known packet identifier with another kind breaks the protocol: MQTT 5 DISCONNECT 0x82 then close
[MQTT-4.13.1-1], MQTT 3.1.1 close [MQTT-4.8.0-1]; not a normal disconnect, so the will is published
[MQTT-3.1.2-8]. An acknowledgement for an identifier that is not in flight (a duplicate, one from
before a reconnect) is not a contradiction and keeps its answer: PUBREC gets PUBREL (0x92 in MQTT 5).
"""

from __future__ import annotations

import pytest

from lastwill.codec.packets import Puback, Pubcomp, Pubrec
from tests.core.harness import Harness, will

# (QoS the subscriber gets, acknowledgements it sends for the message's packet id; the last is wrong)
WRONG = {
    "qos1-pubrec": (1, [Pubrec]),
    "qos1-pubcomp": (1, [Pubcomp]),
    "qos2-puback": (2, [Puback]),
    "qos2-pubcomp-before-pubrec": (2, [Pubcomp]),
    "qos2-puback-after-pubrec": (2, [Pubrec, Puback]),
}


def _wrong_ack(version: int, qos: int, acks: list):
    h = Harness()
    watcher = h.subscriber("dead/#", client_id="watcher")
    s = h.connect("s", version=version, will=will(payload=b"s is gone"))
    assert s.subscribe("t", qos=qos) == [qos]
    h.connect("p").publish("t", b"m", qos=qos)
    (m,) = s.messages()
    for ack in acks:
        s.send(ack(m.packet_id))
    return h, s, watcher


@pytest.mark.parametrize("qos,acks", WRONG.values(), ids=WRONG.keys())
def test_ack_of_the_wrong_kind_disconnects_0x82_and_publishes_the_will_v5_MQTT_4_13_1_1_MQTT_3_1_2_8(qos, acks):
    h, s, watcher = _wrong_ack(5, qos, acks)
    s.take("Pubrel")
    (d,) = s.take("Disconnect")
    assert d.reason_code == 0x82 and s.closed and s.inbox == []
    assert watcher.payloads() == [b"s is gone"]


@pytest.mark.parametrize("qos,acks", WRONG.values(), ids=WRONG.keys())
def test_ack_of_the_wrong_kind_closes_and_publishes_the_will_v311_MQTT_4_8_0_1_MQTT_3_1_2_8(qos, acks):
    h, s, watcher = _wrong_ack(4, qos, acks)
    s.take("Pubrel")
    assert s.closed and s.inbox == []  # 3.1.1 has no DISCONNECT from the server: just the close
    assert watcher.payloads() == [b"s is gone"]


@pytest.mark.parametrize("version", [4, 5])
def test_acks_for_ids_not_in_flight_keep_their_answers_MQTT_4_3_3_4(version):
    h = Harness()
    s = h.connect("s", version=version, clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=2)
    p = h.connect("p")
    p.publish("t", b"1", qos=1)
    p.publish("t", b"2", qos=2)
    one, two = s.messages()
    s.send(Puback(one.packet_id))
    s.send(Puback(one.packet_id))  # a duplicate: nothing in flight any more, ignored
    s.send(Pubrec(two.packet_id))
    s.send(Pubrec(two.packet_id))  # repeated while PUBREL is unanswered: PUBREL again
    s.send(Pubcomp(two.packet_id))
    s.send(Pubcomp(two.packet_id))  # a duplicate: ignored
    s.send(Pubrec(4242))  # for nothing: PUBREL (0x92 Packet Identifier not found in MQTT 5)
    s.send(Puback(4243))
    s.send(Pubcomp(4244))
    rels = s.take("Pubrel")
    assert [r.packet_id for r in rels] == [two.packet_id, two.packet_id, 4242]
    assert rels[-1].reason_code == (0x92 if version == 5 else 0)
    assert not s.closed and s.inbox == []
    # a message in flight when the connection dropped: its PUBACK on the next connection still counts
    p.publish("t", b"3", qos=1)
    (three,) = s.messages()
    s.drop()
    s = h.connect("s", version=version, clean_start=False, session_expiry_interval=100)
    (again,) = s.messages()
    assert again.dup and again.packet_id == three.packet_id
    s.send(Puback(three.packet_id))
    assert not s.closed and h.core.sessions["s"].inflight == {}


def test_pubrec_for_a_message_sent_before_a_reconnect_is_answered_v5_MQTT_4_3_3_4():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=2)
    h.connect("p").publish("t", b"x", qos=2)
    (m,) = s.messages()
    s.drop()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.messages()
    s.send(Pubrec(m.packet_id))
    assert [r.packet_id for r in s.take("Pubrel")] == [m.packet_id] and not s.closed
    s.send(Pubcomp(m.packet_id))
    assert h.core.sessions["s"].inflight == {}
