"""The change feed of core/changes.py on the core with a fake clock: nothing is collected while nobody
watches; while watched, connects, disconnects (with how they ended), will decisions and session ends
name their client."""

from __future__ import annotations

from lastwill.core.causes import Cause
from tests.core.harness import Harness, will


def test_nothing_is_collected_while_nobody_watches():
    h = Harness()
    h.connect("a", will=will()).drop()
    assert h.core.changes.changed is None and h.core.changes.take() == {}


def test_connects_disconnects_and_will_decisions_while_watched():
    h = Harness()
    feed = h.core.changes
    feed.watch()
    a = h.connect("a", will=will(will_delay_interval=10), session_expiry_interval=20)
    assert feed.take() == {"a": None}
    assert feed.take() == {}
    a.drop()
    changed = feed.take()
    assert list(changed) == ["a"] and changed["a"].cause is Cause.EOF  # how it ended, for the dashboard
    h.advance(10)  # the will is published
    assert feed.take() == {"a": None}
    h.advance(10)  # the session expires
    assert feed.take() == {"a": None}
    h.connect("b").disconnect()
    changed = feed.take()
    assert changed["b"].cause is Cause.NORMAL
    feed.unwatch()
    h.connect("c")
    assert feed.changed is None and feed.take() == {}
