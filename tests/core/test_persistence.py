"""Restarts and crashes on the core, with a fake clock: what comes back, and when wills fire.

A "restart" is a new BrokerCore restored from the same store, with a new monotonic origin and the
wall clock moved on by the downtime.
"""

from __future__ import annotations

import pytest

from lastwill.codec.packets import Puback, Pubrec
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will


def node(**config) -> Harness:
    return Harness(store=MemoryStorage(), **config)


def test_pending_delayed_will_keeps_its_deadline_across_restart_MQTT_3_1_3_9():
    h = node()
    h.connect("dev", will=will(will_delay_interval=60), session_expiry_interval=600)
    h.clients[max(h.clients)].drop()
    h.advance(20)  # 40 s left
    h2 = h.restart(downtime=10)  # the broker was down 10 s: 30 s left
    w = h2.subscriber("dead/#")
    h2.advance(29.9)
    assert w.messages() == []
    h2.advance(0.1)
    assert [m.payload for m in w.messages()] == [b"gone"]


def test_will_due_during_downtime_published_at_start_MQTT_3_1_3_9():
    h = node()
    keeper = h.connect("w", clean_start=False, session_expiry_interval=600)
    keeper.subscribe("dead/#", qos=1)
    keeper.drop()
    c = h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=600)
    c.drop()
    h2 = h.restart(downtime=100)
    h2.advance(0)
    back = h2.connect("w", clean_start=False)
    assert [m.payload for m in back.messages()] == [b"gone"]


def test_crash_recovered_will_published_after_grace_MQTT_3_1_2_8():
    h = node(recovery_grace=15)
    h.connect("dev", will=will())  # connected when the broker dies; 3.1.1-like session expiry 0
    h2 = h.restart(downtime=3, recovery_grace=15)
    w = h2.subscriber("dead/#")
    h2.advance(14.9)
    assert w.messages() == []
    h2.advance(0.1)
    assert [m.payload for m in w.messages()] == [b"gone"]
    kinds = h2.core.timeline.kinds("dev")
    assert kinds == ["armed", "connection-ended", "deferred", "published"]  # history from before the crash
    assert "crashed" in h2.core.timeline.events("dev")[1].detail


@pytest.mark.parametrize("clean_start", [False, True])
def test_reconnect_within_grace_cancels_recovered_will_MQTT_3_1_3_9(clean_start):
    h = node(recovery_grace=15)
    h.connect("dev", version=4, will=will(), clean_start=False)
    h2 = h.restart(downtime=3, recovery_grace=15)
    w = h2.subscriber("dead/#")
    h2.advance(2)
    h2.connect("dev", version=4, clean_start=clean_start)
    h2.advance(100)
    assert w.messages() == []
    assert h2.core.timeline.kinds("dev") == ["armed", "connection-ended", "deferred", "cancelled", "no-will"]
    assert "recovery grace" in h2.core.timeline.events("dev")[-2].detail


def test_recovered_will_honours_longer_will_delay_MQTT_3_1_3_9():
    h = node(recovery_grace=10)
    h.connect("dev", will=will(will_delay_interval=40), session_expiry_interval=100)
    h2 = h.restart(downtime=1, recovery_grace=10)
    w = h2.subscriber("dead/#")
    h2.advance(39.9)
    assert w.messages() == []
    h2.advance(0.1)
    assert [m.payload for m in w.messages()] == [b"gone"]


def test_recovered_will_exactly_once_across_two_restarts_MQTT_3_1_2_10():
    h = node(recovery_grace=5)
    keeper = h.connect("w", clean_start=False, session_expiry_interval=1000)
    keeper.subscribe("dead/#", qos=1)
    keeper.drop()
    h.connect("dev", will=will())
    h2 = h.restart(downtime=1, recovery_grace=5)
    h2.advance(6)  # published into w's queue
    h3 = h2.restart(downtime=1, recovery_grace=5)
    h3.advance(10)
    back = h3.connect("w", clean_start=False)
    assert [m.payload for m in back.messages()] == [b"gone"]


def test_clean_shutdown_keep_wills_pending_with_grace():
    h = node(recovery_grace=20)
    h.connect("dev", will=will())
    h2 = h.restart(downtime=2, crashed=False, recovery_grace=20)
    w = h2.subscriber("dead/#")
    h2.advance(19.9)
    assert w.messages() == []
    h2.advance(0.1)
    assert [m.payload for m in w.messages()] == [b"gone"]
    assert h2.core.timeline.kinds("dev") == ["armed", "connection-ended", "restored", "deferred", "published"]
    assert "shut down" in h2.core.timeline.events("dev")[2].detail


def test_clean_shutdown_publish_policy_fires_wills_at_shutdown():
    h = node()
    keeper = h.connect("w", clean_start=False, session_expiry_interval=1000)
    keeper.subscribe("dead/#", qos=1)
    h.connect("dev", will=will())
    h2 = h.restart(downtime=2, crashed=False, keep_wills=False)
    back = h2.connect("w", clean_start=False)
    assert [m.payload for m in back.messages()] == [b"gone"]
    h2.advance(100)
    assert "dev" not in h2.core.sessions


def test_sessions_subscriptions_and_queue_survive_restart_MQTT_3_1_2_23():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=600)
    s.subscribe("q/#", qos=1, sub_id=9)
    s.drop()
    p = h.connect("p")
    for i in range(3):
        p.publish("q/x", str(i).encode(), qos=1)
    h2 = h.restart(downtime=5)
    back = h2.connect("s", clean_start=False)
    assert back.connack.session_present
    msgs = back.messages()
    assert [m.payload for m in msgs] == [b"0", b"1", b"2"]
    assert all(m.properties["subscription_identifier"] == [9] for m in msgs)


def test_inflight_resent_with_dup_after_restart_MQTT_4_4_0_1():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=600)
    s.subscribe("q", qos=2)
    h.connect("p").publish("q", b"one", qos=2)
    (m,) = s.messages()
    h2 = h.restart(downtime=1)
    back = h2.connect("s", clean_start=False)
    (again,) = back.messages()
    assert again.dup and again.packet_id == m.packet_id and again.payload == b"one"
    back.send(Pubrec(again.packet_id))
    assert back.take("Pubrel")


def test_inflight_resent_after_restart_keeps_its_properties_MQTT_3_3_2_17_MQTT_3_3_4_3():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=600)
    s.subscribe("q", qos=2, sub_id=7)
    h.connect("p").publish("q", b"one", qos=2, user_property=[("a", "1"), ("b", "2")], content_type="text/plain",
                           message_expiry_interval=100)
    (m,) = s.messages()
    h.advance(10)
    h2 = h.restart(downtime=5)
    (again,) = h2.connect("s", clean_start=False).messages()
    assert again.dup and again.packet_id == m.packet_id
    assert again.properties["user_property"] == [("a", "1"), ("b", "2")]  # unaltered, in order [MQTT-3.3.2-18]
    assert again.properties["content_type"] == "text/plain"  # [MQTT-3.3.2-20]
    assert again.properties["subscription_identifier"] == [7]  # [MQTT-3.3.4-3]
    assert again.properties["message_expiry_interval"] == 85  # 100 less the 15 s waited [MQTT-3.3.2-6]


def test_clean_start_discards_stored_queue_of_old_session_across_restart_MQTT_3_1_2_4():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=600)
    s.subscribe("q/#", qos=1)
    s.drop()
    p = h.connect("p")
    for i in range(3):
        p.publish("q/x", str(i).encode(), qos=1)
    # Clean Start 1 ends the old session with its queue [MQTT-3.1.2-4]; the new one is persistent too,
    # so the old session's deletion and the new session are written in the same commit
    fresh = h.connect("s", clean_start=True, session_expiry_interval=600)
    assert not fresh.connack.session_present and fresh.messages() == []
    fresh.drop()
    h2 = h.restart(downtime=1)
    back = h2.connect("s", clean_start=False)
    assert back.connack.session_present
    assert back.messages() == []  # the old session's queued messages did not come back
    assert h2.core.sessions["s"].subscriptions == {}


def test_acked_message_not_resent_after_restart_MQTT_4_3_2_2():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=600)
    s.subscribe("q", qos=1)
    h.connect("p").publish("q", b"one", qos=1)
    (m,) = s.messages()
    s.send(Puback(m.packet_id))
    h2 = h.restart(downtime=1)
    assert h2.connect("s", clean_start=False).messages() == []


def test_inbound_qos2_awaiting_pubrel_survives_restart_MQTT_4_3_3_10():
    from lastwill.codec.packets import Publish, Pubrel

    h = node()
    sub = h.connect("s", clean_start=False, session_expiry_interval=600)
    sub.subscribe("q", qos=0)
    sub.drop()
    p = h.connect("p", clean_start=False, session_expiry_interval=600)
    p.send(Publish("q", b"x", 2, False, False, 5))
    h2 = h.restart(downtime=1)
    p2 = h2.connect("p", clean_start=False)
    p2.send(Publish("q", b"x", 2, False, True, 5))  # resent: must not be delivered twice
    assert p2.take("Pubrec")
    p2.send(Pubrel(5))
    assert [c.reason_code for c in p2.take("Pubcomp")] == [0]


def test_retained_survives_and_expiry_counts_downtime_MQTT_3_3_2_5():
    h = node()
    p = h.connect("p")
    p.publish("r/keep", b"k", retain=True)
    p.publish("r/short", b"s", retain=True, message_expiry_interval=30)
    h.advance(10)
    h2 = h.restart(downtime=15)  # 25 s of its 30 have passed
    c = h2.connect("c")
    c.subscribe("r/#")
    got = {m.topic: m for m in c.messages()}
    assert set(got) == {"r/keep", "r/short"}
    assert got["r/short"].properties["message_expiry_interval"] == 5
    h2.advance(5)
    assert h2.core.retained.get("r/short") is None and h2.core.retained.get("r/keep") is not None


def test_session_expiry_continues_across_restart_MQTT_3_1_2_23():
    h = node()
    s = h.connect("s", clean_start=False, session_expiry_interval=60)
    s.drop()
    h.advance(30)
    h2 = h.restart(downtime=20)  # 50 s of 60 gone
    h2.advance(9.9)
    assert "s" in h2.core.sessions
    h2.advance(0.1)
    assert "s" not in h2.core.sessions


def test_normal_disconnect_before_crash_no_will_after_MQTT_3_14_4_3():
    h = node(recovery_grace=1)
    c = h.connect("dev", will=will(), session_expiry_interval=100)
    c.disconnect(0)
    h2 = h.restart(downtime=1, recovery_grace=1)
    w = h2.subscriber("dead/#")
    h2.advance(200)
    assert w.messages() == []
