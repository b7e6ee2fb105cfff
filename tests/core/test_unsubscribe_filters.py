"""UNSUBSCRIBE's Topic Filters are checked exactly as SUBSCRIBE's (core/topics.py validate_filter).

MQTT 5: an invalid filter gets UNSUBACK 0x8F Topic Filter invalid, as SUBSCRIBE gets SUBACK 0x8F; the
others in the packet are handled as usual. MQTT 3.1.1 has no reason codes in UNSUBACK: an invalid
filter is a protocol violation and the connection is closed [MQTT-4.8.0-1], its will published.
"""

from __future__ import annotations

import pytest

from lastwill.codec.packets import Subscribe, Subscription, Unsubscribe
from tests.core.harness import Harness, will

INVALID = ["#/test/topic", "a/#/b", "a/b#", "a+/b", "a/+b", "+a", "", "a\x00b", "$share/g", "$share//t",
           "$share/g+/t", "$share/g/a/#/b", "$share/g/"]
VALID = ["#", "+", "a/+/b", "a/#", "/", "+/+", "$share/g/#", "$share/g/a/+", "$SYS/#", "a//b"]


@pytest.mark.parametrize("topic_filter", INVALID)
def test_unsubscribe_invalid_filter_gets_0x8F_v5_MQTT_4_7_1_1_MQTT_4_7_1_2(topic_filter):
    h = Harness()
    c = h.connect("c")
    assert c.subscribe("x/y") == [1]
    assert c.unsubscribe("x/y", topic_filter, "never") == [0x00, 0x8F, 0x11]
    assert not c.closed and h.core.sessions["c"].subscriptions == {}


def test_unsubscribe_and_subscribe_refuse_the_same_filters_v5_MQTT_4_7_1_1_MQTT_4_7_1_2():
    h = Harness()
    c = h.connect("c")
    for f in INVALID + VALID:
        c.send(Subscribe(1, [Subscription(f, 1)]))
        (sub_code,) = c.take("Suback")[0].reason_codes
        (unsub_code,) = c.unsubscribe(f)
        assert (sub_code == 0x8F) == (unsub_code == 0x8F) == (f in INVALID), (f, sub_code, unsub_code)
    assert not c.closed


@pytest.mark.parametrize("topic_filter", INVALID)
def test_unsubscribe_invalid_filter_closes_the_connection_v311_MQTT_4_7_1_2_MQTT_4_7_1_3_MQTT_4_8_0_1(topic_filter):
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("c", version=4, will=will(payload=b"c is gone"), clean_start=False)
    assert c.subscribe("x/y") == [1]
    c.send(Unsubscribe(7, ["x/y", topic_filter]))
    assert c.take("Unsuback") == [] and c.closed
    assert watcher.payloads() == [b"c is gone"]
    # the packet was refused whole: the valid filter before the invalid one is still subscribed
    assert list(h.core.sessions["c"].subscriptions) == ["x/y"]


def test_unsubscribe_valid_filters_answered_v311_MQTT_3_10_4_5():
    h = Harness()
    c = h.connect("c", version=4)
    assert c.subscribe("a/#") == [1]
    c.send(Unsubscribe(7, VALID))
    (ack,) = c.take("Unsuback")
    assert ack.packet_id == 7 and not c.closed and h.core.sessions["c"].subscriptions == {}
