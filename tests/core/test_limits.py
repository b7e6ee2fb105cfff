"""The limits against hostile or broken clients (docs/security.md "Limits"), on the core.

Each limit: enforced with its reason code (MQTT 5) or the 3.1.1 behaviour, counted in
``core.limit_hits`` (the admin API's ``lastwill_limit_hits_total``), and logged with the client.
"""

from __future__ import annotations

import logging

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
)
from lastwill.config import Config
from lastwill.errors import ConfigError
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will


def warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


# ---- max_connections ------------------------------------------------------------------------------


def test_max_connections_closes_one_more_at_accept(caplog):
    h = Harness(max_connections=2)
    a = h.connect("a")
    pending = h.open()  # still to send its CONNECT: it holds a descriptor too
    extra = h.open()
    assert extra.closed == "max_connections (2) reached" and extra.inbox == []
    assert pending.closed is None and a.closed is None
    assert h.core.limit_hits == {"max_connections": 1}
    assert warnings(caplog, "closed at accept: max_connections (2) reached")
    assert f"test:{extra.conn_id}" in warnings(caplog, "max_connections")[0]  # names the peer
    pending.drop()  # a slot is free again
    h.connect("b")
    assert h.open().closed is not None  # full again


def test_max_connections_refusal_log_is_throttled_per_second(caplog):
    h = Harness(max_connections=1)
    h.connect("a")
    for _ in range(50):
        assert h.open().closed
    assert h.core.limit_hits["max_connections"] == 50
    assert len(warnings(caplog, "max_connections")) == 1
    h.advance(1.0)
    assert h.open().closed
    (line,) = warnings(caplog, "49 more not logged")
    assert "max_connections (1) reached" in line


def test_max_connections_zero_means_no_limit():
    h = Harness(max_connections=0)
    for i in range(20):
        h.connect(f"c{i}")
    assert h.core.limit_hits == {}


# ---- max_topic_length, max_topic_levels: PUBLISH ------------------------------------------------


@pytest.mark.parametrize("limits, topic", [
    ({"max_topic_length": 10}, "a/bcdefghij"),                  # 11 bytes
    ({"max_topic_length": 10}, "a/\u00e9\u00e9\u00e9\u00e9\u00e9"),   # 7 characters, 12 bytes
    ({"max_topic_levels": 3}, "a/b/c/d"),
])
def test_publish_topic_over_limit_puback_0x90_v5_MQTT_3_4_2_1(limits, topic, caplog):
    h = Harness(**limits)
    watcher = h.subscriber("#")
    p = h.connect("p")
    p.publish(topic, b"x", qos=1)
    (ack,) = p.take("Puback")
    assert ack.reason_code == 0x90 and "reason_string" in ack.properties  # Topic Name invalid
    p.publish(topic, b"x", qos=2)
    (rec,) = p.take("Pubrec")
    assert rec.reason_code == 0x90
    p.publish(topic, b"x", qos=0)  # QoS 0: dropped, nothing to answer with
    assert p.closed is None and p.take() == []
    assert watcher.messages() == []
    assert sum(h.core.limit_hits.values()) == 3
    assert warnings(caplog, "client_id=p PUBLISH to")
    p.publish("a/ok", b"y", qos=1)  # the connection goes on
    assert [m.topic for m in watcher.messages()] == ["a/ok"]


def test_publish_topic_at_the_limits_is_accepted_v5():
    h = Harness(max_topic_length=7, max_topic_levels=4)
    watcher = h.subscriber("#")
    h.connect("p").publish("a/b/c/d", b"x", qos=1)  # 7 bytes, 4 levels
    assert [m.topic for m in watcher.messages()] == ["a/b/c/d"]
    assert h.core.limit_hits == {}


def test_publish_topic_over_limit_is_not_retained_v5():
    h = Harness(max_topic_levels=2)
    h.connect("p").publish("a/b/c", b"x", qos=1, retain=True)
    assert len(h.core.retained) == 0


def test_topic_alias_cannot_map_a_topic_over_the_limit_v5_MQTT_3_3_2_12():
    h = Harness(max_topic_levels=2, topic_alias_maximum=5)
    watcher = h.subscriber("#")
    p = h.connect("p")
    p.publish("a/b/c", b"x", qos=1, topic_alias=1)
    assert p.take("Puback")[0].reason_code == 0x90
    p.send(Publish("", b"y", 1, False, False, 7, {"topic_alias": 1}))  # the alias was never set
    assert p.closed and watcher.messages() == []


def test_publish_topic_over_limit_closes_v311(caplog):
    h = Harness(max_topic_levels=2)
    watcher = h.subscriber("#", client_id="w")
    p = h.connect("p", version=4, will=will("dead/p"))
    p.publish("a/b/c", b"x", qos=1)
    assert p.closed and p.take() == []  # 3.1.1 has no negative PUBACK: closed, nothing sent
    assert [(m.topic, m.payload) for m in watcher.messages()] == [("dead/p", b"gone")]  # not a DISCONNECT
    assert h.core.limit_hits == {"max_topic_levels": 1}
    assert warnings(caplog, "client_id=p protocol error 0x90")


# ---- the will topic ----------------------------------------------------------------------------


def test_will_topic_over_limit_refused_connack_0x90_v5_MQTT_3_2_2_7(caplog):
    h = Harness(max_topic_length=8)
    watcher = h.subscriber("#")
    c = h.connect("c", will=will("dead/c/long"), expect=0x90)
    assert c.closed  # [MQTT-3.2.2-7] a CONNACK >= 0x80, then the connection is closed
    c2 = h.open()
    c2.drop()
    assert watcher.messages() == [] and "c" not in h.core.sessions  # nothing stored, nothing published
    assert h.core.limit_hits == {"max_topic_length": 1}
    assert warnings(caplog, "client_id=c will topic refused")


def test_will_topic_over_levels_closed_without_connack_v311():
    h = Harness(max_topic_levels=2)
    watcher = h.subscriber("#")
    c = h.connect("c", version=4, will=will("dead/c/x"), expect=None)
    assert c.closed and c.take() == []
    assert watcher.messages() == [] and "c" not in h.core.sessions


# ---- SUBSCRIBE: filters and how many --------------------------------------------------------------


def test_subscribe_filter_over_limits_suback_0x8f_v5_MQTT_3_9_3_1(caplog):
    h = Harness(max_topic_length=14, max_topic_levels=3)
    c = h.connect("c")
    # [MQTT-3.9.3-1] one code per filter, in order: the others are granted
    assert c.subscribe("a/b", "a/b/c/d", "a/+/+/#", "abcdefghijklmno", "$share/g/a/b/c", qos=1) == \
        [1, 0x8F, 0x8F, 0x8F, 1]  # the shared one has 3 levels in its filter (a/b/c), 14 bytes
    assert set(h.core.sessions["c"].subscriptions) == {"a/b", "$share/g/a/b/c"}
    assert h.core.limit_hits == {"max_topic_levels": 2, "max_topic_length": 1}
    assert warnings(caplog, "client_id=c subscribe 'a/b/c/d' refused with 0x8F")


def test_subscribe_filter_over_limit_suback_0x80_v311():
    h = Harness(max_topic_levels=2)
    c = h.connect("c", version=4)
    c.send(Subscribe(1, [Subscription("a/b", 1), Subscription("a/b/c", 1)]))
    assert encode(c.take("Suback")[0], 4) == b"\x90\x04\x00\x01\x01\x80"  # 0x80 Failure


def test_deepest_subscription_allowed_is_matched_without_recursion_error_v5():
    """max_topic_levels is at most 512: the subscription trie is walked recursively."""
    h = Harness(max_topic_levels=512, max_topic_length=65535)
    topic = "/".join(["a"] * 512)
    s = h.connect("s")
    assert s.subscribe(topic, "/".join(["+"] * 511) + "/#", qos=1) == [1, 1]
    h.connect("p").publish(topic, b"deep", qos=1)
    assert [m.payload for m in s.messages()] == [b"deep"]
    with pytest.raises(ConfigError, match="max_topic_levels"):
        Config(max_topic_levels=513).validate()


def test_max_subscriptions_per_client_suback_0x97_v5_MQTT_3_9_3_1(caplog):
    h = Harness(max_subscriptions_per_client=2)
    c = h.connect("c")
    assert c.subscribe("a", "b", "c", qos=1) == [1, 1, 0x97]  # Quota exceeded
    assert c.subscribe("a", qos=0) == [0]  # replacing an existing subscription is not a new one
    assert c.unsubscribe("b") == [0]
    assert c.subscribe("c", "d", qos=1) == [1, 0x97]
    assert h.core.limit_hits == {"max_subscriptions_per_client": 2}
    assert warnings(caplog, "client_id=c subscribe 'c' refused with 0x97")
    # the limit is per client
    assert h.connect("other").subscribe("a", "b", qos=1) == [1, 1]


def test_max_subscriptions_per_client_suback_0x80_v311():
    h = Harness(max_subscriptions_per_client=1)
    c = h.connect("c", version=4)
    c.send(Subscribe(1, [Subscription("a", 1), Subscription("b", 1)]))
    assert encode(c.take("Suback")[0], 4) == b"\x90\x04\x00\x01\x01\x80"  # 0x80 Failure


# ---- max_publish_rate ---------------------------------------------------------------------------


def test_publish_rate_over_limit_puback_0x97_v5_MQTT_3_4_2_1(caplog):
    h = Harness(max_publish_rate=5)
    watcher = h.subscriber("#")
    p = h.connect("p")
    for i in range(7):  # a full bucket holds one second's worth: 5
        p.publish("t", str(i).encode(), qos=1)
    codes = [a.reason_code for a in p.take("Puback")]
    assert codes == [0, 0, 0, 0, 0, 0x97, 0x97]  # Quota exceeded
    assert [m.payload for m in watcher.messages()] == [b"0", b"1", b"2", b"3", b"4"]
    h.advance(0.2)  # 5 per second: one more token
    p.publish("t", b"later", qos=1)
    p.publish("t", b"too soon", qos=1)
    assert [a.reason_code for a in p.take("Puback")] == [0, 0x97]
    h.advance(10)  # the bucket fills up to one second's worth, not more
    for _ in range(6):
        p.publish("t", b"x", qos=1)
    assert [a.reason_code for a in p.take("Puback")] == [0] * 5 + [0x97]
    assert p.closed is None
    assert h.core.limit_hits == {"max_publish_rate": 4}
    assert len(warnings(caplog, "client_id=p PUBLISH to 't' refused with 0x97")) == 2  # one per second at most


def test_publish_rate_qos2_pubrec_0x97_ends_the_exchange_v5_MQTT_4_3_3_4():
    h = Harness(max_publish_rate=1)
    watcher = h.subscriber("#")
    p = h.connect("p")
    p.publish("t", b"a", qos=2)
    pid = p.publish("t", b"b", qos=2)
    recs = p.take("Pubrec")
    assert [r.reason_code for r in recs] == [0, 0x97]
    # a PUBREC >= 0x80 ends the exchange: the packet id is free, and a PUBREL for it is unknown
    p.send(Pubrel(pid))
    assert p.take("Pubcomp") == [Pubcomp(pid, 0x92)]
    assert [m.payload for m in watcher.messages()] == [b"a"]


def test_publish_rate_qos0_dropped_connection_stays_v5():
    h = Harness(max_publish_rate=2)
    watcher = h.subscriber("#")
    p = h.connect("p")
    for i in range(4):
        p.publish("t", str(i).encode())
    assert [m.payload for m in watcher.messages()] == [b"0", b"1"]
    assert p.closed is None and h.core.limit_hits == {"max_publish_rate": 2}


def test_publish_rate_below_one_per_second_v5():
    h = Harness(max_publish_rate=0.5)  # one every 2 s; the bucket holds 1
    p = h.connect("p")
    p.publish("t", b"a", qos=1)
    h.advance(1.5)
    p.publish("t", b"b", qos=1)
    h.advance(0.5)
    p.publish("t", b"c", qos=1)
    assert [a.reason_code for a in p.take("Puback")] == [0, 0x97, 0]


def test_publish_rate_qos1_over_limit_closes_v311(caplog):
    h = Harness(max_publish_rate=1)
    watcher = h.subscriber("#", client_id="w")
    p = h.connect("p", version=4, will=will("dead/p"))
    p.publish("t", b"a", qos=1)
    assert p.take("Puback") == [Puback(1)]
    p.publish("t", b"b", qos=1)  # no PUBACK that would lie: the connection is closed
    assert p.closed and p.take() == []
    assert [m.payload for m in watcher.messages()] == [b"a", b"gone"]  # and the will follows
    assert warnings(caplog, "client_id=p protocol error 0x97")


def test_publish_rate_qos0_over_limit_dropped_v311():
    h = Harness(max_publish_rate=1)
    watcher = h.subscriber("#", client_id="w")
    p = h.connect("p", version=4)
    p.publish("t", b"a")
    p.publish("t", b"b")  # QoS 0 is at most once: dropped, the connection stays
    assert p.closed is None
    assert [m.payload for m in watcher.messages()] == [b"a"]


def test_publish_rate_is_per_connection_and_refills_at_reconnect_v5():
    h = Harness(max_publish_rate=1)
    a, b = h.connect("a"), h.connect("b")
    a.publish("t", b"1", qos=1)
    b.publish("t", b"1", qos=1)
    assert a.take("Puback")[0].reason_code == 0 and b.take("Puback")[0].reason_code == 0
    a.disconnect()
    a = h.connect("a")
    a.publish("t", b"2", qos=1)
    assert a.take("Puback")[0].reason_code == 0


# ---- max_queued_messages, max_queued_bytes ------------------------------------------------------


def offline_subscriber(h: Harness) -> None:
    s = h.connect("s", clean_start=False, session_expiry_interval=3600)
    s.subscribe("t/#", qos=1)
    s.disconnect()


def test_max_queued_bytes_drops_and_counts_v5(caplog):
    h = Harness(max_queued_bytes=2500)
    offline_subscriber(h)
    p = h.connect("p")
    for i in range(4):
        p.publish("t/x", bytes([65 + i]) * 1000, qos=1)  # 1003 bytes each: two fit in 2500
    session = h.core.sessions["s"]
    assert len(session.queue) == 2 and session.queued_bytes == 2006 and session.dropped == 2
    assert h.core.stats["dropped_queue_bytes"] == 2 and h.core.limit_hits == {"max_queued_bytes": 2}
    (line,) = warnings(caplog, "client_id=s queue full")
    assert "max_queued_bytes" in line and "1 message(s) dropped" in line
    s = h.connect("s", clean_start=False, session_expiry_interval=3600)
    assert [m.payload[:1] for m in s.messages()] == [b"A", b"B"]
    assert session.queued_bytes == 0 and not session.queue


def test_max_queued_messages_counted_as_a_limit_v5():
    h = Harness(max_queued_messages=1)
    offline_subscriber(h)
    p = h.connect("p")
    p.publish("t/x", b"1", qos=1)
    p.publish("t/x", b"2", qos=1)
    assert h.core.stats["dropped_queue_full"] == 1 and h.core.limit_hits == {"max_queued_messages": 1}


def test_slow_subscriber_queue_bounded_by_bytes_then_drained_v5():
    """A connected subscriber whose socket is full (the edge: pause_writing) gets its messages
    through its queue, bounded by max_queued_bytes; the rest are dropped and counted."""
    h = Harness(max_queued_bytes=3000)
    s = h.subscriber("t/#", client_id="s")
    h.core.writing_paused(s.conn_id)
    p = h.connect("p")
    for i in range(10):
        p.publish("t/x", bytes([48 + i]) * 997, qos=1)  # 1000 bytes with the topic
    assert s.messages() == []
    session = h.core.sessions["s"]
    assert len(session.queue) == 3 and session.queued_bytes == 3000 and session.dropped == 7
    assert p.take("Puback") == [Puback(i) for i in range(1, 11)]  # the publisher is not held back
    h.dispatch(h.core.writing_resumed(s.conn_id, h.now))
    assert [m.payload[:1] for m in s.messages()] == [b"0", b"1", b"2"]
    assert session.queued_bytes == 0


def test_queued_bytes_restored_after_a_restart_v5():
    h = Harness(store=MemoryStorage(), max_queued_bytes=2500)
    offline_subscriber(h)
    p = h.connect("p")
    p.publish("t/x", b"a" * 997, qos=1)
    h2 = h.restart(5, crashed=True, max_queued_bytes=2500)
    assert h2.core.sessions["s"].queued_bytes == 1000
    p2 = h2.connect("p")
    for _ in range(3):
        p2.publish("t/x", b"b" * 997, qos=1)
    assert len(h2.core.sessions["s"].queue) == 2 and h2.core.stats["dropped_queue_bytes"] == 2


# ---- max_packet_size, connect_timeout: counted -----------------------------------------------------


def test_packet_over_max_packet_size_counted_disconnect_0x95_v5_MQTT_3_2_2_15():
    h = Harness(max_packet_size=100)
    c = h.connect("c")
    c.send_bytes(b"\x30\xe8\x07")  # a PUBLISH announcing 1000 bytes: refused before they arrive
    (d,) = c.take()
    assert isinstance(d, Disconnect) and d.reason_code == 0x95  # Packet too large
    assert c.closed and h.core.limit_hits == {"max_packet_size": 1}


def test_connect_timeout_counted():
    h = Harness(connect_timeout=3)
    c = h.open()
    c.send_bytes(b"\x10\x20\x00\x04MQ")  # a CONNECT that never completes
    h.advance(2.9)
    assert c.closed is None
    h.advance(0.2)
    assert c.closed == "no CONNECT within connect_timeout"
    assert h.core.limit_hits == {"connect_timeout": 1}


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, expected", [
    ("max_connections", -1, "expected an integer from 0"),
    ("max_queued_bytes", "16M", "expected an integer from 0"),
    ("max_topic_length", 0, "expected an integer from 1 to 65535"),
    ("max_topic_length", 70000, "expected an integer from 1 to 65535"),
    ("max_topic_levels", 0, "expected an integer from 1 to 512"),
    ("max_subscriptions_per_client", 0, "expected an integer from 1"),
    ("max_publish_rate", -1, "expected PUBLISH packets per second"),
    ("max_publish_rate", True, "expected PUBLISH packets per second"),
    ("max_publish_rate", "fast", "expected PUBLISH packets per second"),
])
def test_bad_limit_settings_name_the_key(key, value, expected):
    with pytest.raises(ConfigError) as info:
        Config(**{key: value}).validate()
    assert f"config key '{key}'" in str(info.value) and expected in str(info.value)


def test_limit_defaults():
    c = Config()
    assert (c.max_connections, c.max_queued_bytes, c.max_topic_length, c.max_topic_levels,
            c.max_subscriptions_per_client, c.max_publish_rate) == (100_000, 16 * 1024 * 1024, 4096, 128, 10_000, 0)


def test_qos2_over_rate_does_not_block_a_later_message_with_the_same_packet_id_v5():
    h = Harness(max_publish_rate=1)
    watcher = h.subscriber("#")
    p = h.connect("p")
    p.send(Publish("t", b"a", 2, False, False, 9))
    p.send(Publish("t", b"b", 2, False, False, 10))
    assert [r.reason_code for r in p.take("Pubrec")] == [0, 0x97]
    h.advance(1.0)
    p.send(Publish("t", b"c", 2, False, False, 10))  # the refused id is reused: a new message
    assert p.take("Pubrec") == [Pubrec(10)]
    assert [m.payload for m in watcher.messages()] == [b"a", b"c"]
