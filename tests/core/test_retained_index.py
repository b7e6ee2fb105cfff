"""The retained store's topic tree finds exactly what testing every topic against the filter finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lastwill.core.message import Message
from lastwill.core.retained import RetainedStore
from lastwill.core.topics import topic_matches

TOPICS = st.lists(st.sampled_from(["a", "b", "", "$SYS", "$x", "sport"]), min_size=1, max_size=4).map("/".join)
FILTER_LEVELS = st.sampled_from(["a", "b", "", "$SYS", "$x", "sport", "+"])


@st.composite
def filters(draw):
    levels = draw(st.lists(FILTER_LEVELS, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


def message(topic: str, payload: bytes = b"p", expiry_at: float | None = None) -> Message:
    return Message(topic, payload, 0, True, {}, "c", expiry_at)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TOPICS, st.booleans())), filters())
def test_matching_equals_testing_every_topic_MQTT_4_7_1_2_MQTT_4_7_2_1(ops, topic_filter):
    store = RetainedStore()
    expected: dict[str, Message] = {}
    for topic, keep in ops:  # store, or clear with an empty payload [MQTT-3.3.1-6]
        m = message(topic, b"p" if keep else b"")
        store.store(m)
        if keep:
            expected[topic] = m
        else:
            expected.pop(topic, None)
    got = store.matching(topic_filter, now=0.0)
    want = [m for t, m in expected.items() if topic_matches(topic_filter, t)]
    assert sorted(m.topic for m in got) == sorted(m.topic for m in want)
    assert len(store) == len(expected)


def test_hash_matches_parent_level_and_not_dollar_topics_MQTT_4_7_1_2_MQTT_4_7_2_1():
    store = RetainedStore()
    for t in ("sport", "sport/tennis", "sport/tennis/p1", "$SYS/x", "other"):
        store.store(message(t))
    assert sorted(m.topic for m in store.matching("sport/#", 0.0)) == ["sport", "sport/tennis", "sport/tennis/p1"]
    assert sorted(m.topic for m in store.matching("#", 0.0)) == ["other", "sport", "sport/tennis", "sport/tennis/p1"]
    assert [m.topic for m in store.matching("+/x", 0.0)] == []
    assert [m.topic for m in store.matching("$SYS/#", 0.0)] == ["$SYS/x"]


def test_expired_retained_not_returned_and_removed_MQTT_3_3_2_5():
    store = RetainedStore()
    store.store(message("a/b", expiry_at=10.0))
    store.store(message("a/c"))
    assert [m.topic for m in store.matching("a/+", now=10.0)] == ["a/c"]
    assert store.get("a/b") is None and len(store) == 1
    assert store.matching("a/b", now=0.0) == []  # gone from the tree too


def test_cleared_topic_leaves_no_empty_levels_behind():
    store = RetainedStore()
    store.store(message("a/b/c"))
    store.store(message("a/b/c", b""))
    assert store._root.children == {}
    store.store(message("a/b"))
    old = store.get("a/b")
    assert store.remove_if("a/b", message("a/b")) is False  # not the message it holds
    assert store.remove_if("a/b", old) is True and store._root.children == {}
