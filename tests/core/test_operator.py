"""An operator's actions on the core with a fake clock (core/operator.py): disconnect with or without the
will, delete a session, publish or cancel a pending will, delete retained messages; each recorded on
the client's will timeline with who asked."""

from __future__ import annotations

import pytest

from lastwill.codec.reason_codes import ReasonCode
from lastwill.core.operator import AdminAction, AdminOutcome, AdminRequest
from lastwill.core.will import WillOutcome
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will

WHO = "admin API from 127.0.0.1:50000"


def act(h: Harness, action: AdminAction, target: str, discard_will: bool = False):
    result, actions = h.core.administer(AdminRequest(action, target, WHO, discard_will), h.now)
    h.dispatch(actions)
    return result


def kinds(h: Harness, client_id: str) -> list[str]:
    return [e.kind for e in h.core.view.timeline(client_id)]


# ---- disconnect ------------------------------------------------------------------------------------


def test_operator_disconnect_publishes_the_will_MQTT_3_1_2_8_v5():
    h = Harness()
    watcher = h.subscriber("dead/#")
    dev = h.connect("dev", will=will(topic="dead/dev"))
    r = act(h, AdminAction.DISCONNECT, "dev")
    assert r.done and r.will is WillOutcome.PUBLISHED
    [d] = dev.take("Disconnect")
    assert d.reason_code == ReasonCode.ADMINISTRATIVE_ACTION  # 0x98
    assert dev.closed is not None
    assert watcher.payloads() == [b"gone"]
    assert kinds(h, "dev") == ["armed", "operator", "connection-ended", "published"]
    events = h.core.view.timeline("dev")
    assert WHO in events[1].detail and "with its will" in events[1].detail
    assert events[2].data["cause"] == "administrative" and WHO in events[2].detail
    assert h.core.wills.published_by_cause == {"administrative": 1}


def test_operator_disconnect_publishes_the_will_MQTT_3_1_2_8_v311():
    h = Harness()
    watcher = h.subscriber("dead/#", version=4)
    dev = h.connect("dev", version=4, will=will(topic="dead/dev"))
    r = act(h, AdminAction.DISCONNECT, "dev")
    assert r.done and r.will is WillOutcome.PUBLISHED
    assert dev.take() == []  # MQTT 3.1.1 has no DISCONNECT from the server: the connection just closes
    assert dev.closed is not None
    assert watcher.payloads() == [b"gone"]


def test_operator_disconnect_keeps_the_will_delay_MQTT_3_1_3_9():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(topic="dead/dev", will_delay_interval=30), session_expiry_interval=300)
    r = act(h, AdminAction.DISCONNECT, "dev")
    assert r.will is WillOutcome.DEFERRED and r.fire_at == h.now + 30
    h.advance(29.9)
    assert watcher.payloads() == []
    h.advance(0.1)
    assert watcher.payloads() == [b"gone"]


def test_operator_disconnect_without_its_will_discards_it_first():
    h = Harness()
    watcher = h.subscriber("dead/#")
    dev = h.connect("dev", will=will(topic="dead/dev"))
    r = act(h, AdminAction.DISCONNECT, "dev", discard_will=True)
    assert r.done and r.will is WillOutcome.CANCELLED
    assert dev.take("Disconnect")[0].reason_code == 0x98
    assert watcher.payloads() == []
    assert kinds(h, "dev") == ["armed", "operator", "cancelled"]
    cancelled = h.core.view.timeline("dev")[2]
    assert cancelled.data["cause"] == "operator" and WHO in cancelled.detail and cancelled.rule is None
    assert h.core.wills.cancelled_by_cause == {"operator": 1}
    assert h.core.wills.published == 0


def test_operator_disconnect_of_a_client_that_is_not_connected():
    h = Harness()
    h.connect("gone", session_expiry_interval=60).drop()
    assert act(h, AdminAction.DISCONNECT, "gone").outcome is AdminOutcome.NOT_CONNECTED
    assert act(h, AdminAction.DISCONNECT, "nobody").outcome is AdminOutcome.UNKNOWN_CLIENT


def test_operator_disconnect_is_durable_before_the_answer():
    store = MemoryStorage()
    h = Harness(store=store)
    h.connect("dev", will=will(topic="dead/dev", will_delay_interval=60), session_expiry_interval=600)
    act(h, AdminAction.DISCONNECT, "dev", discard_will=True)
    stored = store.load().sessions["dev"]
    assert stored.will is None
    assert [e.kind for e in store.load().timeline["dev"]][-2:] == ["operator", "cancelled"]


# ---- delete a session ---------------------------------------------------------------------------------


def test_operator_delete_session_publishes_its_pending_will_first_MQTT_3_1_2_8():
    h = Harness()
    watcher = h.subscriber("dead/#")
    dev = h.connect("dev", will=will(topic="dead/dev", will_delay_interval=100), session_expiry_interval=600)
    dev.subscribe("cmd/dev")
    dev.drop()
    assert watcher.payloads() == []  # pending: 100 s
    r = act(h, AdminAction.DELETE_SESSION, "dev")
    assert r.done and r.will is WillOutcome.PUBLISHED
    assert watcher.payloads() == [b"gone"]
    assert h.core.view.session("dev") is None
    assert kinds(h, "dev")[-2:] == ["operator", "published"]
    h.advance(200)
    assert watcher.payloads() == []  # once only [MQTT-3.1.2-10]
    back = h.connect("dev", clean_start=False, session_expiry_interval=600)
    assert back.connack.session_present is False  # the session, its subscriptions with it, is gone


def test_operator_delete_session_discarding_its_will():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(topic="dead/dev", will_delay_interval=100), session_expiry_interval=600).drop()
    r = act(h, AdminAction.DELETE_SESSION, "dev", discard_will=True)
    assert r.will is WillOutcome.CANCELLED
    h.advance(200)
    assert watcher.payloads() == []
    assert h.core.view.session("dev") is None
    assert kinds(h, "dev")[-2:] == ["operator", "cancelled"]


def test_operator_delete_session_of_a_connected_client_v5():
    h = Harness()
    watcher = h.subscriber("dead/#")
    dev = h.connect("dev", will=will(topic="dead/dev", will_delay_interval=100), session_expiry_interval=600)
    r = act(h, AdminAction.DELETE_SESSION, "dev")
    assert r.will is WillOutcome.PUBLISHED
    assert dev.take("Disconnect")[0].reason_code == 0x98 and dev.closed is not None
    assert watcher.payloads() == [b"gone"]  # the session ended: its will did not wait for its delay
    assert h.core.view.session("dev") is None
    assert act(h, AdminAction.DELETE_SESSION, "dev").outcome is AdminOutcome.UNKNOWN_CLIENT


# ---- a pending will ------------------------------------------------------------------------------------


def test_operator_publishes_a_pending_will_now():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(topic="dead/dev", will_delay_interval=100), session_expiry_interval=600).drop()
    h.advance(10)
    r = act(h, AdminAction.PUBLISH_WILL, "dev")
    assert r.done and r.will is WillOutcome.PUBLISHED
    assert watcher.payloads() == [b"gone"]
    published = h.core.view.timeline("dev")[-1]
    assert published.kind == "published" and WHO in published.detail and published.rule is None
    h.advance(200)
    assert watcher.payloads() == []  # not again at its old deadline
    assert h.core.view.session("dev") is not None  # the session stays


def test_operator_cannot_publish_an_armed_will():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(topic="dead/dev"))
    r = act(h, AdminAction.PUBLISH_WILL, "dev")
    assert r.outcome is AdminOutcome.NO_PENDING_WILL and "armed" in r.detail
    assert watcher.payloads() == []
    assert act(h, AdminAction.CANCEL_WILL, "dev").outcome is AdminOutcome.NO_PENDING_WILL
    h.connect("plain")
    assert "no will" in act(h, AdminAction.PUBLISH_WILL, "plain").detail


def test_operator_cancels_a_pending_will():
    h = Harness()
    watcher = h.subscriber("dead/#")
    h.connect("dev", will=will(topic="dead/dev", will_delay_interval=100), session_expiry_interval=600).drop()
    r = act(h, AdminAction.CANCEL_WILL, "dev")
    assert r.done and r.will is WillOutcome.CANCELLED
    h.advance(200)
    assert watcher.payloads() == []
    assert h.core.view.will("dev").phase.value == "none"
    assert "pending will" in h.core.view.timeline("dev")[-1].detail


# ---- retained messages -----------------------------------------------------------------------------------


def test_operator_deletes_retained_messages_by_filter_without_publishing():
    store = MemoryStorage()
    h = Harness(store=store)
    pub = h.connect("pub")
    for topic in ("a/1", "a/2", "a/b/3", "b/1"):
        pub.publish(topic, b"v", retain=True)
    watcher = h.subscriber("#", client_id="w")
    assert len(watcher.messages()) == 4
    assert [r.topic for r in h.core.view.retained("a/+", h.now)] == ["a/1", "a/2"]
    r = act(h, AdminAction.DELETE_RETAINED, "a/#")
    assert r.done and r.count == 3
    assert watcher.messages() == []  # deleting publishes nothing
    assert [r.topic for r in h.core.view.retained("#", h.now)] == ["b/1"]
    assert set(store.load().retained) == {"b/1"}
    assert act(h, AdminAction.DELETE_RETAINED, "a/#").count == 0


@pytest.mark.parametrize("bad", ["a/#/b", "a+", "", "$share/g/a"])
def test_operator_delete_retained_refuses_what_is_not_a_filter(bad):
    h = Harness()
    assert act(h, AdminAction.DELETE_RETAINED, bad).outcome is AdminOutcome.INVALID_FILTER


def test_retained_listing_leaves_out_expired_messages():
    h = Harness()
    pub = h.connect("pub")
    pub.publish("t/short", b"v", retain=True, message_expiry_interval=5)
    pub.publish("t/long", b"v", retain=True)
    h.advance(6)
    assert [r.topic for r in h.core.view.retained("t/#", h.now)] == ["t/long"]
