"""The timer queue and the topic trie, on their own."""

from __future__ import annotations

import pytest

from lastwill.core.timers import TimerQueue
from lastwill.core.topics import (
    SubOptions,
    SubscriptionTree,
    TopicError,
    parse_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)


def test_timer_queue_orders_by_deadline_not_insertion():
    q = TimerQueue()
    q.schedule("long", 100.0)
    q.schedule("short", 15.0)
    assert q.next_deadline() == 15.0
    assert q.pop_due(20.0) == ["short"]
    assert q.pop_due(99.9) == []
    assert q.pop_due(100.0) == ["long"]
    assert q.next_deadline() is None


def test_timer_queue_reschedule_and_cancel_are_lazy():
    q = TimerQueue()
    q.schedule("k", 10.0)
    q.schedule("k", 30.0)  # replaces
    assert q.next_deadline() == 30.0
    assert q.pop_due(10.0) == []
    q.schedule("j", 5.0)
    assert q.cancel("j")
    assert not q.cancel("j")
    assert q.next_deadline() == 30.0 and len(q) == 1


def test_timer_queue_compacts_stale_entries():
    q = TimerQueue()
    for i in range(1000):
        q.schedule("same", float(i))
    assert len(q._heap) < 300
    assert q.pop_due(1e9) == ["same"]


def test_timer_queue_many_due_at_once_earliest_first():
    q = TimerQueue()
    for i in range(1000):
        q.schedule(i, 50.0 - i * 0.001)
    due = q.pop_due(50.0)
    assert len(due) == 1000 and due[0] == 999 and due[-1] == 0


@pytest.mark.parametrize("f,t,ok", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True), ("+", "a/b", False),
    ("a/+/c", "a//c", True), ("+/b", "/b", True), ("sport/tennis/#", "sport/tennis", True),
])
def test_topic_matching_wildcards_v5_MQTT_4_7_1_1_MQTT_4_7_1_2(f, t, ok):
    assert topic_matches(f, t) is ok
    tree = SubscriptionTree()
    tree.add("c", f, SubOptions())
    assert bool(tree.match(t)[0]) is ok


@pytest.mark.parametrize("f", ["#", "+/monitor/Clients", "+"])
def test_dollar_topics_not_matched_by_leading_wildcard_MQTT_4_7_2_1(f):
    assert not topic_matches(f, "$SYS/monitor/Clients")
    tree = SubscriptionTree()
    tree.add("c", f, SubOptions())
    assert tree.match("$SYS/monitor/Clients") == ([], [])
    tree.add("c", "$SYS/#", SubOptions())
    assert len(tree.match("$SYS/monitor/Clients")[0]) == 1


@pytest.mark.parametrize("bad", ["a/b#", "a/#/c", "a+", "a/+b", "#/a", ""])
def test_invalid_topic_filters_v311_MQTT_4_7_1_2_MQTT_4_7_1_3(bad):
    with pytest.raises(TopicError):
        validate_topic_filter(bad)


@pytest.mark.parametrize("bad", ["a/+", "#", "", "a\x00b"])
def test_invalid_topic_names_MQTT_3_3_2_2_MQTT_4_7_3_1(bad):
    with pytest.raises(TopicError):
        validate_topic_name(bad)


@pytest.mark.parametrize("bad", ["$share/g", "$share//a", "$share/g+/a", "$share/g/"])
def test_invalid_shared_subscriptions_MQTT_4_8_2_1_MQTT_4_8_2_2(bad):
    with pytest.raises(TopicError):
        parse_shared(bad)


def test_shared_subscription_parsed_MQTT_4_8_2_1():
    assert parse_shared("$share/grp/a/+/c") == ("grp", "a/+/c")
    assert parse_shared("a/b") == (None, "a/b")


def test_trie_remove_prunes_and_cache_invalidates():
    tree = SubscriptionTree()
    tree.add("c1", "a/+/c", SubOptions(qos=1))
    tree.add("c2", "a/#", SubOptions(qos=2))
    assert {cid for cid, _ in tree.match("a/b/c")[0]} == {"c1", "c2"}
    assert tree.remove("c1", "a/+/c")
    assert [cid for cid, _ in tree.match("a/b/c")[0]] == ["c2"]
    assert not tree.remove("c1", "a/+/c")
    assert tree.remove("c2", "a/#")
    assert tree.match("a/b/c") == ([], []) and tree._root.children == {}


def test_trie_shared_groups():
    tree = SubscriptionTree()
    tree.add("c1", "$share/g/a/#", SubOptions())
    tree.add("c2", "$share/g/a/#", SubOptions())
    tree.add("c3", "$share/h/a/b", SubOptions())
    normal, shared = tree.match("a/b")
    assert normal == []
    assert sorted((key, sorted(m)) for key, _g, m in shared) == [("g/a/#", ["c1", "c2"]), ("h/a/b", ["c3"])]
    assert len(tree) == 3


def test_tick_with_a_limit_handles_a_storm_of_due_wills_in_slices_MQTT_3_1_3_9():
    """The edge takes a storm of due timers in slices (core.tick(now, limit)): each slice publishes
    the earliest ones, next_deadline() says more are due, none is lost or published twice."""
    from tests.core.harness import Harness, will

    h = Harness()
    watcher = h.subscriber("dead/#")
    for i in range(150):
        h.connect(f"dev{i}", will=will(topic=f"dead/dev{i}", will_delay_interval=5),
                  session_expiry_interval=60).drop()
    due = h.now + 5
    h.clock.set(due)
    sizes = []
    while h.core.next_deadline() is not None and h.core.next_deadline() <= due:
        h.dispatch(h.core.tick(due, 64))
        sizes.append(len(watcher.messages()))
    assert sizes == [64, 64, 22]
    h.advance(100)
    assert watcher.messages() == []  # each published once
