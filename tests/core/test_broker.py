"""The broker core beyond wills: CONNECT, QoS flows, retained, subscriptions, sessions, flow control."""

from __future__ import annotations

import pytest

from lastwill.codec.packets import (
    Auth,
    Connect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
)
from tests.core.harness import Harness

# ---- CONNECT / CONNACK -----------------------------------------------------------------------


def test_first_packet_must_be_connect_MQTT_3_1_0_1():
    h = Harness()
    c = h.open()
    c.send(Publish("a", b"x"))
    assert c.closed and c.take() == []


def test_connack_is_first_packet_and_success_v5_MQTT_3_2_0_1_MQTT_3_1_4_5():
    h = Harness()
    c = h.connect("a")
    assert c.connack.reason_code == 0 and not c.connack.session_present


def test_empty_client_id_assigned_v5_MQTT_3_2_2_16():
    h = Harness()
    c = h.connect("")
    assert c.connack.properties["assigned_client_identifier"] == "auto-1"
    assert "auto-1" in h.core.sessions


def test_empty_client_id_with_clean_session_assigned_v311_MQTT_3_1_3_6_MQTT_3_1_3_7():
    h = Harness()
    h.connect("", version=4, clean_start=True)
    assert "auto-1" in h.core.sessions


def test_session_present_only_for_existing_session_v5_MQTT_3_2_2_2_MQTT_3_2_2_3():
    h = Harness()
    c = h.connect("a", clean_start=False, session_expiry_interval=60)
    assert not c.connack.session_present
    c.disconnect()
    c2 = h.connect("a", clean_start=False)
    assert c2.connack.session_present
    c2.disconnect()
    c3 = h.connect("a", clean_start=True)
    assert not c3.connack.session_present


def test_clean_start_discards_session_v5_MQTT_3_1_2_4():
    h = Harness()
    c = h.connect("a", clean_start=False, session_expiry_interval=60)
    c.subscribe("t/#")
    c.disconnect()
    c2 = h.connect("a", clean_start=True, session_expiry_interval=60)
    assert h.core.sessions["a"].subscriptions == {}
    p = h.connect("p")
    p.publish("t/1", b"x")
    assert c2.messages() == []


def test_resumed_session_keeps_subscriptions_v5_MQTT_3_1_2_5():
    h = Harness()
    c = h.connect("a", clean_start=False, session_expiry_interval=60)
    c.subscribe("t/#")
    c.drop()
    c2 = h.connect("a", clean_start=False)
    h.connect("p").publish("t/1", b"x")
    assert c2.payloads() == [b"x"]


def test_session_expires_after_interval_v5_MQTT_3_1_2_23():
    h = Harness()
    c = h.connect("a", clean_start=False, session_expiry_interval=30)
    c.subscribe("t/#")
    c.drop()
    h.advance(29.9)
    assert "a" in h.core.sessions
    h.advance(0.1)
    assert "a" not in h.core.sessions and len(h.core.tree) == 0


def test_clean_session_0_never_expires_v311_MQTT_3_1_2_4():
    h = Harness()
    c = h.connect("a", version=4, clean_start=False)
    c.subscribe("t/#")
    c.drop()
    h.advance(10 ** 7)
    assert "a" in h.core.sessions


def test_server_caps_session_expiry_and_says_so():
    h = Harness(max_session_expiry=100)
    c = h.connect("a", session_expiry_interval=1000)
    assert c.connack.properties["session_expiry_interval"] == 100


def test_server_keep_alive_sent_when_capped_MQTT_3_2_2_21():
    h = Harness(max_keep_alive=30)
    c = h.connect("a", keep_alive=100)
    assert c.connack.properties["server_keep_alive"] == 30
    start = h.now
    h.run_until(start + 44.9)
    assert c.closed is None
    h.run_until(start + 45)
    assert c.closed


def test_server_keep_alive_for_zero_when_not_allowed_MQTT_3_2_2_22():
    h = Harness(max_keep_alive=60, allow_zero_keep_alive=False)
    c = h.connect("a", keep_alive=0)
    assert c.connack.properties["server_keep_alive"] == 60


def test_no_server_keep_alive_when_client_value_used_MQTT_3_2_2_22():
    h = Harness()
    c = h.connect("a", keep_alive=30)
    assert "server_keep_alive" not in c.connack.properties


def test_connack_advertises_limits_MQTT_3_2_2_9():
    h = Harness(receive_maximum=10, maximum_qos=1, topic_alias_maximum=5, max_packet_size=2048,
                retain_available=False)
    props = h.connect("a").connack.properties
    assert props["receive_maximum"] == 10 and props["maximum_qos"] == 1
    assert props["topic_alias_maximum"] == 5 and props["maximum_packet_size"] == 2048
    assert props["retain_available"] == 0


def test_authentication_method_refused_MQTT_4_12_0_1():
    h = Harness()
    c = h.connect("a", authentication_method="SCRAM-SHA-1", expect=0x8C)
    assert c.closed


def test_auth_without_method_is_protocol_error_MQTT_4_12_0_7():
    h = Harness()
    c = h.connect("a")
    c.send(Auth(0x18))
    assert c.take("Disconnect")[0].reason_code == 0x82 and c.closed


def test_connect_timeout_closes_silent_connection():
    h = Harness(connect_timeout=5)
    c = h.open()
    h.advance(4.9)
    assert c.closed is None
    h.advance(0.1)
    assert c.closed


def test_takeover_sends_session_taken_over_v5_MQTT_3_1_4_3():
    h = Harness()
    old = h.connect("a")
    new = h.connect("a")
    assert old.take("Disconnect")[0].reason_code == 0x8E and old.closed
    assert new.closed is None
    assert h.core.sessions["a"].conn.conn_id == new.conn_id


# ---- PUBLISH: QoS 0, 1, 2 ------------------------------------------------------------------------


def test_qos1_publish_gets_puback_v5_MQTT_3_3_4_1():
    h = Harness()
    p = h.connect("p")
    pid = p.publish("a", b"x", qos=1)
    assert [(a.packet_id, a.reason_code) for a in p.take("Puback")] == [(pid, 0)]


def test_qos2_inbound_handshake_and_no_duplicate_delivery_MQTT_4_3_3_10_MQTT_4_3_3_11():
    h = Harness()
    s = h.subscriber("a")
    p = h.connect("p")
    p.send(Publish("a", b"x", 2, False, False, 7))
    assert [r.packet_id for r in p.take("Pubrec")] == [7]
    p.send(Publish("a", b"x", 2, False, True, 7))  # resent before PUBREL: PUBREC again, no delivery
    assert [r.packet_id for r in p.take("Pubrec")] == [7]
    assert len(s.messages()) == 1
    p.send(Pubrel(7))
    assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(7, 0)]
    p.send(Publish("a", b"y", 2, False, False, 7))  # after PUBCOMP: a new message [MQTT-4.3.3-12]
    assert [m.payload for m in s.messages()] == [b"y"]


def test_pubrel_unknown_id_gets_pubcomp_not_found_MQTT_4_3_3_11():
    h = Harness()
    p = h.connect("p")
    p.send(Pubrel(99))
    assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(99, 0x92)]


def test_qos2_outbound_handshake_MQTT_4_3_3_4():
    h = Harness()
    s = h.subscriber("a", qos=2)
    h.connect("p").publish("a", b"x", qos=2)
    (m,) = s.messages()
    assert m.qos == 2 and not m.dup and m.packet_id
    s.send(Pubrec(m.packet_id))
    assert [r.packet_id for r in s.take("Pubrel")] == [m.packet_id]
    s.send(Pubcomp(m.packet_id))
    assert h.core.sessions["watcher"].inflight == {}


def test_qos_downgraded_to_subscription_MQTT_3_8_4_8():
    h = Harness()
    s = h.subscriber("a", qos=0)
    h.connect("p").publish("a", b"x", qos=2)
    assert [m.qos for m in s.messages()] == [0]


def test_publish_above_maximum_qos_disconnects_MQTT_3_2_2_11():
    h = Harness(maximum_qos=1)
    p = h.connect("p")
    p.send(Publish("a", b"x", 2, False, False, 1))
    assert p.take("Disconnect")[0].reason_code == 0x9B and p.closed


def test_retain_when_unavailable_disconnects_MQTT_3_2_2_14():
    h = Harness(retain_available=False)
    p = h.connect("p")
    p.publish("a", b"x", retain=True)
    assert p.take("Disconnect")[0].reason_code == 0x9A


def test_receive_maximum_exceeded_disconnects_0x93_MQTT_3_3_4_9():
    h = Harness(receive_maximum=2)
    p = h.connect("p")
    p.send(Publish("a", b"1", 2, False, False, 1))
    p.send(Publish("a", b"2", 2, False, False, 2))
    assert p.closed is None
    p.send(Publish("a", b"3", 2, False, False, 3))
    assert p.take("Disconnect")[0].reason_code == 0x93 and p.closed


def test_client_receive_maximum_respected_MQTT_4_9_0_2():
    h = Harness()
    s = h.subscriber("a", receive_maximum=2)
    p = h.connect("p")
    for i in range(5):
        p.publish("a", str(i).encode(), qos=1)
    first = s.messages()
    assert [m.payload for m in first] == [b"0", b"1"]
    s.send(Puback(first[0].packet_id))
    nxt = s.messages()
    assert [m.payload for m in nxt] == [b"2"]
    s.send(Puback(first[1].packet_id))
    s.send(Puback(nxt[0].packet_id))
    assert [m.payload for m in s.messages()] == [b"3", b"4"]


def test_qos0_not_held_back_by_full_send_quota_MQTT_3_3_4_10():
    h = Harness()
    s = h.subscriber("a", receive_maximum=1)
    p = h.connect("p")
    p.publish("a", b"q1", qos=1)
    p.publish("a", b"q1b", qos=1)
    p.publish("a", b"q0", qos=0)
    assert [m.payload for m in s.messages()] == [b"q1", b"q0"]


def test_inflight_resent_with_dup_on_resume_v5_MQTT_4_4_0_1_MQTT_3_3_1_1():
    h = Harness()
    s = h.subscriber("a", client_id="s", clean_start=False, session_expiry_interval=100)
    h.connect("p").publish("a", b"x", qos=1)
    (m,) = s.messages()
    assert not m.dup
    s.drop()
    s2 = h.connect("s", clean_start=False)
    (again,) = s2.messages()
    assert again.dup and again.packet_id == m.packet_id and again.payload == b"x"


def test_pubrel_resent_on_resume_v5_MQTT_4_4_0_1():
    h = Harness()
    s = h.subscriber("a", client_id="s", qos=2, clean_start=False, session_expiry_interval=100)
    h.connect("p").publish("a", b"x", qos=2)
    (m,) = s.messages()
    s.send(Pubrec(m.packet_id))
    s.take()
    s.drop()
    s2 = h.connect("s", clean_start=False)
    assert [r.packet_id for r in s2.take("Pubrel")] == [m.packet_id]
    assert s2.messages() == []  # the PUBLISH is not re-sent after PUBREL [MQTT-4.3.3-6]


def test_offline_queue_bounded_and_counted():
    h = Harness(max_queued_messages=3)
    s = h.subscriber("a", client_id="s", clean_start=False, session_expiry_interval=100)
    s.drop()
    p = h.connect("p")
    for i in range(5):
        p.publish("a", str(i).encode(), qos=1)
    assert h.core.sessions["s"].dropped == 2
    assert h.core.stats["dropped_queue_full"] == 2
    s2 = h.connect("s", clean_start=False)
    assert s2.payloads() == [b"0", b"1", b"2"]


def test_qos0_not_queued_offline_by_default():
    h = Harness()
    s = h.subscriber("a", client_id="s", clean_start=False, session_expiry_interval=100)
    s.drop()
    h.connect("p").publish("a", b"x", qos=0)
    assert h.connect("s", clean_start=False).messages() == []


# ---- properties on forward -----------------------------------------------------------------


def test_properties_forwarded_unchanged_in_order_MQTT_3_3_2_17_MQTT_3_3_2_18():
    h = Harness()
    s = h.subscriber("a")
    props = dict(payload_format_indicator=1, content_type="application/json", response_topic="resp/1",
                 correlation_data=b"id", user_property=[("z", "1"), ("a", "2"), ("z", "3")])
    h.connect("p").publish("a", b"{}", qos=1, **props)
    (m,) = s.messages()
    for k, v in props.items():
        assert m.properties[k] == v


def test_message_expiry_decremented_on_forward_MQTT_3_3_2_6():
    h = Harness()
    s = h.subscriber("a", client_id="s", clean_start=False, session_expiry_interval=100)
    s.drop()
    h.connect("p").publish("a", b"x", qos=1, message_expiry_interval=60)
    h.advance(25)
    (m,) = h.connect("s", clean_start=False).messages()
    assert m.properties["message_expiry_interval"] == 35


def test_expired_message_not_delivered_MQTT_3_3_2_5():
    h = Harness()
    s = h.subscriber("a", client_id="s", clean_start=False, session_expiry_interval=100)
    s.drop()
    h.connect("p").publish("a", b"x", qos=1, message_expiry_interval=5)
    h.advance(5)
    assert h.connect("s", clean_start=False).messages() == []


def test_topic_alias_inbound_MQTT_3_3_2_12():
    h = Harness()
    s = h.subscriber("long/topic/name")
    p = h.connect("p")
    p.publish("long/topic/name", b"1", topic_alias=3)
    p.publish("", b"2", topic_alias=3)
    assert [(m.topic, m.payload) for m in s.messages()] == [("long/topic/name", b"1"), ("long/topic/name", b"2")]


def test_topic_alias_above_maximum_disconnects_0x94_MQTT_3_2_2_17():
    h = Harness(topic_alias_maximum=2)
    p = h.connect("p")
    p.publish("a", b"1", topic_alias=3)
    assert p.take("Disconnect")[0].reason_code == 0x94


def test_unknown_topic_alias_is_protocol_error_MQTT_3_3_2_8():
    h = Harness()
    p = h.connect("p")
    p.publish("", b"1", topic_alias=1)
    assert p.take("Disconnect")[0].reason_code == 0x82


def test_topic_alias_not_carried_across_connections_MQTT_3_3_2_7():
    h = Harness()
    p = h.connect("p", clean_start=False, session_expiry_interval=60)
    p.publish("a/b", b"1", topic_alias=1)
    p.drop()
    p2 = h.connect("p", clean_start=False)
    p2.publish("", b"2", topic_alias=1)
    assert p2.take("Disconnect")[0].reason_code == 0x82


def test_outbound_topic_alias_within_client_maximum_MQTT_3_1_2_26_MQTT_3_1_2_27():
    h = Harness()
    s = h.subscriber("#", topic_alias_maximum=1)
    p = h.connect("p")
    p.publish("t/1", b"a")
    p.publish("t/1", b"b")
    p.publish("t/2", b"c")
    m1, m2, m3 = s.messages()
    assert (m1.topic, m1.properties["topic_alias"]) == ("t/1", 1)
    assert (m2.topic, m2.properties["topic_alias"]) == ("", 1)
    assert m3.topic == "t/2" and "topic_alias" not in m3.properties
    s0 = h.subscriber("#", client_id="noalias")
    p.publish("t/1", b"d")
    assert "topic_alias" not in s0.messages()[0].properties


def test_message_larger_than_client_maximum_packet_size_dropped_MQTT_3_1_2_25():
    h = Harness()
    s = h.subscriber("a", maximum_packet_size=64)
    p = h.connect("p")
    p.publish("a", b"x" * 100, qos=1)
    p.publish("a", b"small", qos=1)
    assert s.payloads() == [b"small"]
    assert h.core.stats["dropped_too_large"] == 1


def test_publish_with_subscription_identifier_is_protocol_error_MQTT_3_3_4_6():
    h = Harness()
    p = h.connect("p")
    p.send(Publish("a", b"x", 0, False, False, None, {"subscription_identifier": [1]}))
    assert p.take("Disconnect")[0].reason_code == 0x82


# ---- SUBSCRIBE ------------------------------------------------------------------------------


def test_suback_codes_per_filter_in_order_v5_MQTT_3_8_4_6_MQTT_3_9_3_1():
    h = Harness(maximum_qos=1)
    c = h.connect("c")
    c.send(Subscribe(5, [Subscription("a", 2), Subscription("b/#/c", 1), Subscription("c", 0)]))
    (ack,) = c.take("Suback")
    assert ack.packet_id == 5 and ack.reason_codes == [1, 0x8F, 0]


def test_suback_failure_v311_MQTT_3_9_3_2():
    h = Harness()
    c = h.connect("c", version=4)
    c.send(Subscribe(5, [Subscription("a/#/b", 1)]))
    assert c.take("Suback")[0].reason_codes == [0x8F]  # encoded as 0x80 for 3.1.1


def test_identical_filter_replaces_subscription_v5_MQTT_3_8_4_3():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a", qos=0)
    c.subscribe("a", qos=2)
    assert len(h.core.tree) == 1
    h.connect("p").publish("a", b"x", qos=2)
    assert [m.qos for m in c.messages()] == [2]


def test_overlapping_subscriptions_one_delivery_max_qos_all_ids_MQTT_3_3_4_2_MQTT_3_3_4_3():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a/+", qos=0, sub_id=1)
    c.subscribe("a/#", qos=2, sub_id=2)
    h.connect("p").publish("a/b", b"x", qos=2)
    (m,) = c.messages()
    assert m.qos == 2 and sorted(m.properties["subscription_identifier"]) == [1, 2]


def test_no_local_v5_MQTT_3_8_3_3():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a", no_local=True)
    c.publish("a", b"mine")
    assert c.messages() == []
    h.connect("p").publish("a", b"theirs")
    assert c.payloads() == [b"theirs"]


def test_no_local_on_shared_subscription_is_protocol_error_v5_MQTT_3_8_3_4():
    h = Harness()
    c = h.connect("c")
    c.send(Subscribe(1, [Subscription("$share/g/a", 1, no_local=True)]))
    assert c.take("Disconnect")[0].reason_code == 0x82


def test_retained_delivered_on_subscribe_with_retain_flag_v5_MQTT_3_3_1_9():
    h = Harness()
    h.connect("p").publish("r/1", b"keep", qos=1, retain=True)
    c = h.connect("c")
    c.subscribe("r/#")
    (m,) = c.messages()
    assert m.payload == b"keep" and m.retain


def test_retain_handling_1_only_for_new_subscription_v5_MQTT_3_3_1_10():
    h = Harness()
    h.connect("p").publish("r/1", b"keep", retain=True)
    c = h.connect("c")
    c.subscribe("r/#", retain_handling=1)
    assert len(c.messages()) == 1
    c.subscribe("r/#", retain_handling=1)
    assert c.messages() == []


def test_retain_handling_2_never_v5_MQTT_3_3_1_11():
    h = Harness()
    h.connect("p").publish("r/1", b"keep", retain=True)
    c = h.connect("c")
    c.subscribe("r/#", retain_handling=2)
    assert c.messages() == []


def test_retain_as_published_v5_MQTT_3_3_1_12_MQTT_3_3_1_13():
    h = Harness()
    a, b = h.connect("a"), h.connect("b")
    a.subscribe("r", retain_as_published=True)
    b.subscribe("r", retain_as_published=False)
    h.connect("p").publish("r", b"x", retain=True)
    assert [m.retain for m in a.messages()] == [True]
    assert [m.retain for m in b.messages()] == [False]


def test_retain_flag_cleared_on_forward_v311_MQTT_3_3_1_9():
    h = Harness()
    c = h.connect("c", version=4)
    c.subscribe("r")
    h.connect("p").publish("r", b"x", retain=True)
    assert [m.retain for m in c.messages()] == [False]


def test_retained_replaced_and_cleared_v5_MQTT_3_3_1_5_MQTT_3_3_1_6_MQTT_3_3_1_7():
    h = Harness()
    p = h.connect("p")
    p.publish("r", b"1", retain=True)
    p.publish("r", b"2", retain=True)
    assert h.core.retained.get("r").payload == b"2"
    p.publish("r", b"", retain=True)
    assert h.core.retained.get("r") is None
    c = h.connect("c")
    c.subscribe("r")
    assert c.messages() == []


def test_non_retained_publish_leaves_retained_alone_v5_MQTT_3_3_1_8():
    h = Harness()
    p = h.connect("p")
    p.publish("r", b"1", retain=True)
    p.publish("r", b"2", retain=False)
    assert h.core.retained.get("r").payload == b"1"


def test_retained_message_expires_MQTT_3_3_2_5():
    h = Harness()
    h.connect("p").publish("r", b"x", retain=True, message_expiry_interval=10)
    h.advance(10)
    assert h.core.retained.get("r") is None


def test_shared_subscription_round_robin_one_member_each_MQTT_4_8_2_3():
    h = Harness()
    m1, m2 = h.connect("m1"), h.connect("m2")
    m1.subscribe("$share/g/t", qos=1)
    m2.subscribe("$share/g/t", qos=1)
    p = h.connect("p")
    for i in range(4):
        p.publish("t", str(i).encode(), qos=1)
    a, b = m1.payloads(), m2.payloads()
    assert len(a) == 2 and len(b) == 2 and sorted(a + b) == [b"0", b"1", b"2", b"3"]


def test_no_retained_to_shared_subscription_MQTT_4_8_2_1():
    h = Harness()
    h.connect("p").publish("t", b"x", retain=True)
    c = h.connect("c")
    c.subscribe("$share/g/t")
    assert c.messages() == []


def test_unsubscribe_codes_v5_MQTT_3_10_4_4_MQTT_3_10_4_5():
    h = Harness()
    c = h.connect("c")
    c.subscribe("a")
    assert c.unsubscribe("a", "b") == [0x00, 0x11]
    h.connect("p").publish("a", b"x")
    assert c.messages() == []


def test_pingreq_pingresp_v5_MQTT_3_12_4_1():
    h = Harness()
    c = h.connect("c")
    c.ping()
    assert len(c.take("Pingresp")) == 1


def test_dollar_topic_not_delivered_to_hash_v5_MQTT_4_7_2_1():
    h = Harness()
    c = h.connect("c")
    c.subscribe("#")
    h.connect("p").publish("$internal/x", b"x")
    assert c.messages() == []


@pytest.mark.parametrize("version", [4, 5])
def test_publish_topic_with_wildcard_is_refused_MQTT_3_3_2_2(version):
    h = Harness()
    c = h.connect("c", version=version)
    c.send_bytes(b"\x30\x05\x00\x03a/+")
    assert c.closed


def test_unsupported_protocol_version_gets_connack_0x84_MQTT_3_1_2_2():
    h = Harness()
    c = h.open()
    c.send_bytes(b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01a")
    acks = c.take("Connack")
    assert acks and acks[0].reason_code == 0x84 and c.closed


def test_packet_after_refused_connect_not_processed_MQTT_3_1_4_6():
    h = Harness()
    s = h.subscriber("a")
    c = h.open()
    c.send(Connect(client_id="x", protocol_level=5, properties={"authentication_method": "X"}))
    assert c.closed
    assert s.messages() == []


def test_second_connect_is_protocol_error_v5_MQTT_3_1_0_2():
    h = Harness()
    c = h.connect("c")
    c.send(Connect(client_id="c", protocol_level=5))
    assert c.closed  # closed without a DISCONNECT (4.13.1 allows both; see core/broker.py)
    assert c.take("Disconnect") == []


def test_qos2_puback_for_unknown_id_ignored():
    h = Harness()
    c = h.connect("c")
    c.send(Puback(123))
    c.send(Pubcomp(123))
    assert c.closed is None


def test_pubrec_error_code_ends_exchange_MQTT_4_8_2_6():
    h = Harness()
    s = h.subscriber("a", qos=2)
    h.connect("p").publish("a", b"x", qos=2)
    (m,) = s.messages()
    s.send(Pubrec(m.packet_id, 0x80))
    assert s.take("Pubrel") == [] and h.core.sessions["watcher"].inflight == {}


# ---- slow subscribers: the socket's backpressure reaches the core ------------------------------


def test_slow_subscriber_messages_held_in_queue_until_resumed():
    h = Harness()
    s = h.subscriber("a", qos=1)
    p = h.connect("p")
    h.core.writing_paused(s.conn_id)
    p.publish("a", b"q0", qos=0)
    p.publish("a", b"q1", qos=1)
    assert s.messages() == []
    assert len(h.core.sessions["watcher"].queue) == 2
    h.dispatch(h.core.writing_resumed(s.conn_id, h.now))
    assert s.payloads() == [b"q0", b"q1"]


def test_slow_subscriber_queue_bounded_by_max_queued_messages():
    h = Harness(max_queued_messages=2)
    s = h.subscriber("a", qos=1)
    p = h.connect("p")
    h.core.writing_paused(s.conn_id)
    for i in range(5):
        p.publish("a", str(i).encode(), qos=1)
    assert h.core.stats["dropped_queue_full"] == 3
    h.dispatch(h.core.writing_resumed(s.conn_id, h.now))
    assert s.payloads() == [b"0", b"1"]
