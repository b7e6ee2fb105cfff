"""Every will rule of MQTT 3.1.1 and 5.0, on the core, with a fake clock and no sleeps."""

from __future__ import annotations

import pytest

from lastwill.codec.packets import Connect, Disconnect, Publish, Subscribe, Subscription
from tests.core.harness import Harness, will

# ---- stored only when the CONNECT is accepted ------------------------------------------------


def test_will_armed_on_accepted_connect_v5_MQTT_3_1_2_7():
    h = Harness()
    h.connect("dev", will=will())
    session = h.core.sessions["dev"]
    assert session.will is not None and session.will.topic == "dead/c"
    assert h.core.timeline.kinds("dev") == ["armed"]


def test_refused_connect_will_qos_above_maximum_publishes_nothing_MQTT_3_2_2_12():
    h = Harness(maximum_qos=1)
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(qos=2), expect=0x9B)
    assert c.closed
    h.advance(100)
    assert watcher.messages() == []
    assert "dev" not in h.core.sessions


def test_refused_connect_will_retain_unsupported_MQTT_3_2_2_13():
    h = Harness(retain_available=False)
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(retain=True), expect=0x9A)
    assert c.closed and watcher.messages() == []


def test_refused_connect_empty_client_id_clean_session_0_publishes_nothing_v311_MQTT_3_1_3_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("", version=4, clean_start=False, will=will(), expect=0x85)
    assert c.closed
    assert watcher.messages() == []


def test_refused_connect_does_not_take_over_existing_client_v5_MQTT_3_1_4_2():
    h = Harness()
    first = h.connect("dev", will=will(payload=b"first"))
    h.connect("dev", will=will(), authentication_method="SCRAM", expect=0x8C)
    assert first.closed is None  # the refused CONNECT did not take the session over
    assert h.core.sessions["dev"].will.payload == b"first"


@pytest.mark.parametrize("topic", ["dead/+", "dead/#", ""])
def test_will_topic_invalid_refused_and_nothing_published_v5_MQTT_3_1_3_11(topic):
    h = Harness()
    watcher = h.subscriber("#")
    c = h.connect("dev", will=will(topic=topic), expect=0x90)
    assert c.closed and watcher.messages() == []
    assert "dev" not in h.core.sessions


def test_will_topic_wildcard_closes_without_connack_v311_MQTT_4_7_1_1():
    h = Harness()
    watcher = h.subscriber("#", version=4)
    c = h.connect("dev", version=4, will=will(topic="a/+"), expect=None)
    assert c.take("Connack") == [] and c.closed
    assert watcher.messages() == []


# ---- published when the connection ends without DISCONNECT 0x00 ---------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_published_on_connection_lost_MQTT_3_1_2_8(version):
    h = Harness()
    watcher = h.subscriber("dead/#", version=version)
    c = h.connect("dev", version=version, will=will(qos=1))
    c.drop()
    msgs = watcher.messages()
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [("dead/c", b"gone", 1, False)]
    assert h.core.timeline.kinds("dev") == ["armed", "connection-ended", "published"]


def test_will_published_once_only_v5_MQTT_3_1_2_10():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(), session_expiry_interval=60)
    c.drop(ConnectionResetError())
    h.advance(120)  # session expiry passes too: nothing more
    assert len(watcher.messages()) == 1
    assert h.core.sessions.get("dev") is None


@pytest.mark.parametrize("version", [4, 5])
def test_no_will_after_normal_disconnect_MQTT_3_14_4_3(version):
    h = Harness()
    watcher = h.subscriber("dead/#", version=version)
    c = h.connect("dev", version=version, will=will())
    c.disconnect(0)
    assert c.closed
    c.drop()  # the socket closing afterwards changes nothing
    h.advance(1000)
    assert watcher.messages() == []
    assert h.core.timeline.kinds("dev") == ["armed", "cancelled"]


def test_will_removed_from_session_after_normal_disconnect_v5_MQTT_3_1_2_10():
    h = Harness()
    c = h.connect("dev", will=will(), session_expiry_interval=100)
    c.disconnect(0)
    assert h.core.sessions["dev"].will is None


def test_will_on_keep_alive_expiry_exactly_at_one_and_a_half_v5_MQTT_3_1_2_22():
    h = Harness()
    watcher = h.subscriber("dead/#", keep_alive=0)
    start = h.now
    c = h.connect("dev", keep_alive=10, will=will())
    h.run_until(start + 14.999)
    assert watcher.messages() == [] and c.closed is None
    h.run_until(start + 15.0)
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    assert c.take("Disconnect")[0].reason_code == 0x8D
    assert c.closed


def test_keep_alive_any_packet_counts_as_activity_v5_MQTT_3_1_2_22():
    h = Harness()
    watcher = h.subscriber("dead/#")
    start = h.now
    c = h.connect("dev", keep_alive=10, will=will())
    h.run_until(start + 14)
    c.publish("x/y", b"1")  # not a PINGREQ, but activity all the same
    h.run_until(start + 28.9)
    assert c.closed is None
    h.run_until(start + 29.0)
    assert c.closed and [m.payload for m in watcher.messages() if m.topic == "dead/c"] == [b"gone"]


def test_keep_alive_expiry_closes_without_disconnect_packet_v311_MQTT_3_1_2_24():
    h = Harness()
    watcher = h.subscriber("dead/#", version=4)
    c = h.connect("dev", version=4, keep_alive=2, will=will())
    h.advance(3)
    assert c.take("Disconnect") == [] and c.closed
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_will_on_protocol_error_MQTT_4_13_1_1():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.send(Publish("a/b", b"x", 1, False, False, 1, {"subscription_identifier": [3]}))  # [MQTT-3.3.4-6]
    assert c.take("Disconnect")[0].reason_code == 0x82
    assert c.closed
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    events = h.core.timeline.events("dev")
    assert events[1].kind == "connection-ended" and events[1].rule == "MQTT-3.3.4-6"


def test_will_on_malformed_bytes_v5_MQTT_3_3_1_4():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.send_bytes(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3: malformed
    assert c.take("Disconnect")[0].reason_code == 0x81
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_will_on_packet_cut_off_midway_v5_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.send_bytes(b"\x30\x10\x00\x03a/b")  # a PUBLISH announcing 16 bytes, only 5 arrive
    assert watcher.messages() == []
    c.drop()
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_will_on_second_connect_v5_MQTT_3_1_0_2():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.send(Connect(client_id="dev", protocol_level=5))
    assert c.closed
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_will_on_server_shutdown_v5_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#", client_id="w", clean_start=False, session_expiry_interval=100)
    c = h.connect("dev", will=will())
    h.dispatch(h.core.shutdown(h.now))
    assert c.take("Disconnect")[0].reason_code == 0x8B
    assert [m.payload for m in watcher.take("Publish")] == [b"gone"]


def test_will_on_takeover_with_clean_start_v5_MQTT_3_1_4_3():
    h = Harness()
    watcher = h.subscriber("dead/#")
    old = h.connect("dev", will=will(payload=b"old", will_delay_interval=30), session_expiry_interval=300)
    new = h.connect("dev", clean_start=True)
    assert old.take("Disconnect")[0].reason_code == 0x8E and old.closed
    assert new.closed is None
    # Clean Start 1 ended the old session: its will goes out at once, delay or not
    assert [m.payload for m in watcher.messages()] == [b"old"]


def test_takeover_with_clean_start_0_before_will_delay_cancels_will_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(will_delay_interval=30), session_expiry_interval=300)
    new = h.connect("dev", clean_start=False)
    assert new.connack.session_present
    h.advance(1000)
    assert watcher.messages() == []
    assert h.core.timeline.kinds("dev") == ["armed", "connection-ended", "deferred", "cancelled", "no-will"]


def test_takeover_without_will_delay_publishes_will_v311_MQTT_3_1_4_2():
    h = Harness()
    watcher = h.subscriber("dead/#", version=4)
    old = h.connect("dev", version=4, clean_start=False, will=will())
    h.connect("dev", version=4, clean_start=False)
    assert old.closed and old.take("Disconnect") == []  # 3.1.1 has no server DISCONNECT
    assert [m.payload for m in watcher.messages()] == [b"gone"]


# ---- MQTT 5: DISCONNECT reason codes ----------------------------------------------------------


def test_disconnect_with_will_message_0x04_publishes_will_MQTT_3_14_2_1():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.disconnect(0x04)
    assert c.closed
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_disconnect_0x04_honours_will_delay_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=60)
    c.disconnect(0x04)
    h.advance(4.9)
    assert watcher.messages() == []
    h.advance(0.1)
    assert [m.payload for m in watcher.messages()] == [b"gone"]


@pytest.mark.parametrize("code", [0x80, 0x81, 0x83, 0x90, 0x9C])
def test_disconnect_with_error_reason_keeps_will_v5_MQTT_3_1_2_8(code):
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.disconnect(code)
    assert [m.payload for m in watcher.messages()] == [b"gone"]


# ---- MQTT 5: Will Delay Interval and session expiry -----------------------------------------------


def test_will_delay_defers_publication_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100)
    closed_at = h.now
    c.drop()
    assert watcher.messages() == []
    assert h.core.next_deadline() == closed_at + 10
    h.run_until(closed_at + 9.999)
    assert watcher.messages() == []
    h.run_until(closed_at + 10)
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    assert h.core.timeline.kinds("dev") == ["armed", "connection-ended", "deferred", "published"]


def test_session_expiry_shorter_than_delay_publishes_at_session_end_v5_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=100), session_expiry_interval=7)
    closed_at = h.now
    c.drop()
    h.run_until(closed_at + 6.99)
    assert watcher.messages() == []
    h.run_until(closed_at + 7)
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    assert "dev" not in h.core.sessions


def test_session_expiry_zero_publishes_at_once_despite_delay_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=100))  # Session Expiry absent: 0
    c.drop()
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_disconnect_changes_session_expiry_used_for_will_v5_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=100), session_expiry_interval=50)
    c.disconnect(0x04, session_expiry_interval=3)
    h.advance(2.9)
    assert watcher.messages() == []
    h.advance(0.1)
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_disconnect_raising_zero_session_expiry_is_protocol_error_and_will_published_MQTT_3_14_2_1():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())  # session expiry 0
    c.disconnect(0, session_expiry_interval=30)  # invalid: the DISCONNECT does not count
    assert c.take("Disconnect")[0].reason_code == 0x82
    assert [m.payload for m in watcher.messages()] == [b"gone"]


def test_reconnect_clean_start_0_cancels_delayed_will_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100)
    c.drop()
    h.advance(9)
    again = h.connect("dev", clean_start=False)
    assert again.connack.session_present
    h.advance(1000)
    assert watcher.messages() == []
    assert h.core.timeline.kinds("dev")[-2:] == ["cancelled", "no-will"]  # the new CONNECT had no will
    assert h.core.timeline.events("dev")[-2].rule == "MQTT-3.1.3-9"


def test_reconnect_clean_start_1_publishes_pending_will_at_once_v5_MQTT_3_1_2_4():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100)
    c.drop()
    h.advance(2)
    again = h.connect("dev", clean_start=True)
    assert not again.connack.session_present
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    h.advance(100)
    assert watcher.messages() == []


def test_resumed_session_new_will_replaces_old_v5_MQTT_3_1_2_7():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(payload=b"one", will_delay_interval=10), session_expiry_interval=100)
    c.drop()
    again = h.connect("dev", clean_start=False, will=will(payload=b"two"))
    again.drop()
    h.advance(200)
    assert [m.payload for m in watcher.messages()] == [b"two"]


def test_resumed_session_without_will_has_none_v5_MQTT_3_1_2_7():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100)
    c.drop()
    again = h.connect("dev", clean_start=False)
    again.drop()
    h.advance(200)
    assert watcher.messages() == []


def test_later_shorter_will_delay_not_held_back_by_earlier_longer_one_v5_MQTT_3_1_3_9():
    """The mosquitto bug: a will-delay list ordered by interval, not deadline."""
    h = Harness()
    watcher = h.subscriber("dead/#")
    a = h.connect("a", will=will(topic="dead/a", will_delay_interval=100), session_expiry_interval=1000)
    b = h.connect("b", will=will(topic="dead/b", will_delay_interval=5), session_expiry_interval=1000)
    t0 = h.now
    a.drop()
    h.advance(10)
    b.drop()  # scheduled later, due earlier: t0 + 15 versus t0 + 100
    assert h.core.next_deadline() == t0 + 15
    h.run_until(t0 + 15)
    assert [m.topic for m in watcher.messages()] == ["dead/b"]
    h.run_until(t0 + 100)
    assert [m.topic for m in watcher.messages()] == ["dead/a"]


def test_session_expiry_never_still_fires_after_delay_v5_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will(will_delay_interval=20), session_expiry_interval=0xFFFFFFFF)
    c.drop()
    h.advance(20)
    assert [m.payload for m in watcher.messages()] == [b"gone"]
    assert "dev" in h.core.sessions  # the session itself lives on


# ---- delivered like any publish -----------------------------------------------------------------


@pytest.mark.parametrize("will_qos,sub_qos,expected", [(2, 1, 1), (1, 2, 1), (0, 2, 0), (2, 2, 2)])
def test_will_delivered_at_min_of_will_and_granted_qos_v5_MQTT_3_1_2_12(will_qos, sub_qos, expected):
    h = Harness()
    watcher = h.subscriber("dead/#", qos=sub_qos)
    c = h.connect("dev", will=will(qos=will_qos))
    c.drop()
    assert [m.qos for m in watcher.messages()] == [expected]


def test_will_retain_stores_retained_message_v5_MQTT_3_1_2_15():
    h = Harness()
    c = h.connect("dev", will=will(retain=True))
    c.drop()
    late = h.connect("late")
    late.subscribe("dead/#")
    msgs = late.messages()
    assert [(m.payload, m.retain) for m in msgs] == [(b"gone", True)]


def test_will_retain_replaces_and_clears_retained_v5_MQTT_3_3_1_6():
    h = Harness()
    p = h.connect("pub")
    p.publish("dead/c", b"alive", qos=1, retain=True)
    c = h.connect("dev", will=will(retain=True))
    c.drop()
    assert h.core.retained.get("dead/c").payload == b"gone"
    c2 = h.connect("dev2", will=will(retain=True, payload=b""))
    c2.drop()
    assert h.core.retained.get("dead/c") is None  # an empty retained will clears it [MQTT-3.3.1-7]


def test_will_without_retain_is_not_stored_v5_MQTT_3_1_2_14():
    h = Harness()
    c = h.connect("dev", will=will(retain=False))
    c.drop()
    assert h.core.retained.get("dead/c") is None


@pytest.mark.parametrize("rap,expected", [(True, True), (False, False)])
def test_will_retain_as_published_honoured_v5_MQTT_3_3_1_12(rap, expected):
    h = Harness()
    w = h.connect("w")
    w.subscribe("dead/#", retain_as_published=rap)
    c = h.connect("dev", will=will(retain=True))
    c.drop()
    assert [m.retain for m in w.messages()] == [expected]


def test_will_properties_forwarded_and_delay_not_forwarded_v5_MQTT_3_1_3_10():
    h = Harness()
    watcher = h.subscriber("dead/#")
    props = dict(will_delay_interval=1, payload_format_indicator=1, content_type="text/plain",
                 response_topic="r/t", correlation_data=b"\x01\x02",
                 user_property=[("b", "2"), ("a", "1"), ("b", "3")])
    c = h.connect("dev", will=will(**props), session_expiry_interval=10)
    c.drop()
    h.advance(1)
    (m,) = watcher.messages()
    assert "will_delay_interval" not in m.properties
    assert m.properties["user_property"] == [("b", "2"), ("a", "1"), ("b", "3")]  # order kept
    for key in ("payload_format_indicator", "content_type", "response_topic", "correlation_data"):
        assert m.properties[key] == props[key]


def test_will_message_expiry_counts_down_from_publication_MQTT_3_3_2_6():
    h = Harness()
    w = h.connect("w", clean_start=False, session_expiry_interval=1000)
    w.subscribe("dead/#", qos=1)
    w.drop()
    c = h.connect("dev", will=will(message_expiry_interval=30, will_delay_interval=50), session_expiry_interval=100)
    c.drop()
    h.advance(50)  # the will is published now, into w's queue
    h.advance(10)  # it waits 10 s
    w2 = h.connect("w", clean_start=False)
    (m,) = w2.messages()
    assert m.properties["message_expiry_interval"] == 20


def test_will_message_expired_in_queue_is_not_delivered_MQTT_3_3_2_5():
    h = Harness()
    w = h.connect("w", clean_start=False, session_expiry_interval=1000)
    w.subscribe("dead/#", qos=1)
    w.drop()
    c = h.connect("dev", will=will(message_expiry_interval=5))
    c.drop()
    h.advance(6)
    w2 = h.connect("w", clean_start=False)
    assert w2.messages() == []


def test_will_carries_subscription_identifier_MQTT_3_3_4_3():
    h = Harness()
    w = h.connect("w")
    w.subscribe("dead/#", qos=1, sub_id=42)
    c = h.connect("dev", will=will())
    c.drop()
    (m,) = w.messages()
    assert m.properties["subscription_identifier"] == [42]


def test_will_queued_for_offline_persistent_subscriber_v5_MQTT_3_1_2_23():
    h = Harness()
    w = h.connect("w", clean_start=False, session_expiry_interval=1000)
    w.subscribe("dead/#", qos=1)
    w.drop()
    c = h.connect("dev", will=will())
    c.drop()
    back = h.connect("w", clean_start=False)
    assert back.connack.session_present
    assert [m.payload for m in back.messages()] == [b"gone"]


def test_will_queued_for_offline_persistent_subscriber_v311_MQTT_3_1_2_4():
    h = Harness()
    w = h.connect("w", version=4, clean_start=False)
    w.subscribe("dead/#", qos=1)
    w.drop()
    c = h.connect("dev", version=4, will=will())
    c.drop()
    back = h.connect("w", version=4, clean_start=False)
    assert [m.payload for m in back.messages()] == [b"gone"]


def test_will_goes_to_one_member_of_shared_group_MQTT_4_8_2_2():
    h = Harness()
    members = [h.connect(f"m{i}") for i in range(3)]
    for m in members:
        assert m.subscribe("$share/g/dead/#", qos=1) == [1]
    c = h.connect("dev", will=will())
    c.drop()
    got = [len(m.messages()) for m in members]
    assert sorted(got) == [0, 0, 1]


def test_refused_connect_processes_nothing_after_MQTT_3_1_4_6():
    """Data after a refused CONNECT is not processed: no will is armed, none is published."""
    h = Harness(maximum_qos=1)
    watcher = h.subscriber("dead/#")
    c = h.open()
    c.send(Connect(client_id="dev", protocol_level=5, will=will(qos=2)))
    assert c.take("Connack")[0].reason_code == 0x9B
    assert c.closed
    assert watcher.messages() == []


def test_will_not_sent_to_its_own_session_with_no_local_v5_MQTT_3_8_3_3():
    """No Local compares client ids: the will of 'dev' is not queued for dev's own No Local subscription."""
    h = Harness()
    other = h.subscriber("dead/#", client_id="other")
    c = h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=10)
    c.send(Subscribe(7, [Subscription("dead/#", 1, no_local=True)]))
    c.drop()
    h.advance(5)
    assert [m.payload for m in other.messages()] == [b"gone"]
    assert len(h.core.sessions["dev"].queue) == 0 and not h.core.sessions["dev"].inflight


def test_no_will_published_for_connection_without_will_v5_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("#")
    c = h.connect("dev")
    c.drop()
    assert watcher.messages() == []
    assert h.core.timeline.kinds("dev") == ["no-will"]  # says so: nothing to publish


def test_will_not_published_when_disconnect_normal_then_socket_reset_v311_MQTT_3_14_4_3():
    h = Harness()
    watcher = h.subscriber("#", version=4)
    c = h.connect("dev", version=4, will=will())
    c.send(Disconnect())
    c.drop(ConnectionResetError())
    assert watcher.messages() == []
