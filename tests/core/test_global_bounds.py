"""The global bounds (core/limits.py, docs/security.md "Global bounds"), on the core with a fake clock.

Each bound: reached, the new thing refused with its reason code (CONNACK/PUBACK/SUBACK 0x97; 3.1.1:
return code 3, a close or 0x80), counted in ``limit_hits``, logged once per interval, and what was
accepted before (sessions, queued messages, wills) intact.
"""

from __future__ import annotations

import gc
import logging
import tracemalloc

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Puback, Publish
from lastwill.codec.reason_codes import ReasonCode
from lastwill.config import Config
from lastwill.core.limits import GLOBAL_LOG_INTERVAL, QUEUE_ENTRY_OVERHEAD, UNLIMITED, Bounds
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will

QUOTA = ReasonCode.QUOTA_EXCEEDED
MIB = 1024 * 1024


def warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def bound(h: Harness, limit: str):
    return next(b for b in h.core.view.counters().bounds if b.limit == limit)


# ---- the bounds in force ------------------------------------------------------------------------


def test_bounds_are_derived_from_memory_budget_unless_set():
    b = Bounds.of(Config(memory_budget=512 * MIB))
    assert b.queued_bytes == 192 * MIB
    assert b.sessions == 16384 and b.offline_sessions == 16384 and b.wills == 16384
    assert b.retained_messages == 131072 and b.retained_bytes == 64 * MIB
    assert b.subscriptions == 262144 and b.inflight_bytes == 2 * MIB
    b = Bounds.of(Config(memory_budget=512 * MIB, max_sessions=10, max_total_queued_bytes=1000))
    assert b.sessions == 10 and b.wills == 10 and b.offline_sessions == 10 and b.queued_bytes == 1000
    b = Bounds.of(Config(memory_budget=0, max_wills=3))
    assert b.sessions == UNLIMITED and b.queued_bytes == UNLIMITED and b.wills == 3


def test_the_default_budget_is_half_the_machine():
    from lastwill.config import machine_memory
    assert Config().memory_budget == machine_memory() // 2 > 0


# ---- max_sessions -------------------------------------------------------------------------------


def test_max_sessions_refuses_a_new_session_with_connack_0x97_and_keeps_the_others(caplog):
    h = Harness(max_sessions=2)
    watcher = h.subscriber("dead/#")
    a = h.connect("a", will=will("dead/a"))
    refused = h.connect("b", expect=QUOTA)
    assert refused.closed
    assert h.core.limit_hits["max_sessions"] == 1
    assert "max_sessions" in warnings(caplog, "0x97 quota exceeded")[0]
    h.connect("old", version=4, expect=QUOTA)  # 3.1.1: return code 3 on the wire (the next test)
    # the sessions held are intact: a reconnect to one of them is not a new session
    assert set(h.core.sessions) == {"watcher", "a"}
    a.drop()  # its will, armed before the bound was reached, goes out
    assert watcher.payloads() == [b"gone"]
    h.connect("c")  # a's session ended with its connection: room again
    assert bound(h, "max_sessions").used == 2


def test_max_sessions_v311_refusal_is_return_code_3_on_the_wire():
    h = Harness(max_sessions=1)
    h.connect("a", version=4)
    c = h.connect("b", version=4, expect=QUOTA)
    assert encode(c.connack, 4) == bytes((0x20, 2, 0, 3))  # Server unavailable


def test_a_global_refusal_is_logged_once_per_interval_and_counted_every_time(caplog):
    h = Harness(max_sessions=1)
    h.connect("a")
    for i in range(20):
        h.connect(f"x{i}", expect=QUOTA)
    assert h.core.limit_hits["max_sessions"] == 20
    assert len(warnings(caplog, "max_sessions")) == 1
    h.advance(GLOBAL_LOG_INTERVAL)
    h.connect("y", expect=QUOTA)
    lines = warnings(caplog, "max_sessions")
    assert len(lines) == 2 and "(19 more not logged)" in lines[1]


def test_expire_oldest_ends_the_offline_session_disconnected_longest_ago_and_publishes_its_will():
    h = Harness(max_sessions=3, offline_session_overflow="expire_oldest")
    watcher = h.subscriber("dead/#")
    old = h.connect("old", clean_start=False, session_expiry_interval=3600,
                    will=will("dead/old", will_delay_interval=600))
    old.drop()
    h.advance(1)
    newer = h.connect("newer", clean_start=False, session_expiry_interval=3600)
    newer.drop()
    assert watcher.payloads() == []  # old's will waits for its delay
    h.connect("fresh")
    assert "old" not in h.core.sessions and "newer" in h.core.sessions and "fresh" in h.core.sessions
    assert watcher.payloads() == [b"gone"]  # published, not dropped, as the session ended
    assert h.core.limit_hits["max_sessions"] == 1


# ---- max_offline_sessions -----------------------------------------------------------------------


def test_max_offline_sessions_refuses_a_new_persistent_session():
    h = Harness(max_offline_sessions=1)
    h.connect("p1", clean_start=False, session_expiry_interval=60).drop()
    h.connect("p2", clean_start=False, session_expiry_interval=60, expect=QUOTA)
    h.connect("p3", version=4, clean_start=False, expect=QUOTA)  # 3.1.1 Clean Session 0: persistent
    h.connect("transient")  # expiry 0: never offline
    resumed = h.connect("p1", clean_start=False, session_expiry_interval=60)  # its own session: resumed
    assert resumed.connack.session_present
    assert h.core.limit_hits["max_offline_sessions"] == 2


def test_max_offline_sessions_expire_oldest_at_disconnect():
    h = Harness(max_offline_sessions=2, offline_session_overflow="expire_oldest")
    for name in ("s1", "s2", "s3"):
        h.connect(name, clean_start=False, session_expiry_interval=60).drop()
        h.advance(1)
    assert sorted(h.core.sessions) == ["s2", "s3"]


# ---- max_wills ----------------------------------------------------------------------------------


def test_max_wills_refuses_a_connect_with_one_more_will_and_keeps_the_stored_ones():
    h = Harness(max_wills=1)
    watcher = h.subscriber("dead/#")
    a = h.connect("a", will=will("dead/a"))
    h.connect("b", will=will("dead/b"), expect=QUOTA)
    h.connect("b")  # without a will: accepted
    h.connect("a", will=will("dead/a", b"again"))  # a takeover replaces a's will: not one more
    assert watcher.payloads() == [b"gone"]  # (the takeover published the first one)
    assert bound(h, "max_wills").used == 1
    assert h.core.limit_hits["max_wills"] == 1
    assert a.closed  # taken over


# ---- retained messages --------------------------------------------------------------------------


def test_max_retained_messages_refuses_one_more_with_puback_0x97():
    h = Harness(max_retained_messages=2)
    watcher = h.subscriber("r/#")
    p = h.connect("p")
    p.publish("r/1", b"one", qos=1, retain=True)
    p.publish("r/2", b"two", qos=1, retain=True)
    p.publish("r/3", b"three", qos=1, retain=True)
    acks = p.take("Puback")
    assert [a.reason_code for a in acks] == [0, 0, QUOTA]
    assert watcher.payloads() == [b"one", b"two"]  # refused: neither retained nor routed
    p.publish("r/1", b"replaced", qos=1, retain=True)  # replacing one is not one more
    p.publish("r/2", b"", qos=1, retain=True)  # clearing one frees a place
    p.publish("r/3", b"three", qos=1, retain=True)
    assert [a.reason_code for a in p.take("Puback")] == [0, 0, 0]
    assert sorted(t for t, _ in h.core.retained.items()) == ["r/1", "r/3"]
    assert h.core.limit_hits["max_retained_messages"] == 1


def test_max_retained_bytes_and_the_311_close():
    h = Harness(max_retained_bytes=100)
    p = h.connect("p", version=4)
    p.publish("r/a", b"x" * 90, qos=1, retain=True)
    assert p.take("Puback")
    p.publish("r/b", b"x" * 20, qos=1, retain=True)
    assert p.closed  # 3.1.1 cannot refuse a PUBLISH: closed, and no PUBACK lies
    assert p.take("Puback") == []
    assert h.core.retained.nbytes == 93
    assert h.core.limit_hits["max_retained_bytes"] == 1


def test_a_will_that_would_be_retained_beyond_the_bound_is_refused_with_its_connect():
    h = Harness(max_retained_messages=1)
    h.connect("p").publish("r/1", b"one", retain=True)
    h.connect("c", will=will("dead/c", retain=True), expect=QUOTA)
    h.connect("d", will=will("dead/d"))  # not retained: accepted


def test_an_accepted_will_is_retained_even_beyond_the_bound():
    h = Harness(max_retained_messages=1)
    c = h.connect("c", will=will("dead/c", retain=True))
    h.connect("p").publish("r/1", b"one", retain=True)  # the store is full now
    c.drop()
    assert h.core.retained.get("dead/c") is not None  # a will is never refused once accepted
    assert len(h.core.retained) == 2


# ---- max_total_queued_bytes ---------------------------------------------------------------------


def _offline_subscriber(h: Harness, name: str = "sub", topic: str = "q/#") -> None:
    s = h.connect(name, clean_start=False, session_expiry_interval=3600)
    s.subscribe(topic, qos=1)
    s.drop()


def test_max_total_queued_bytes_refuses_qos1_with_puback_0x97_and_keeps_what_was_queued():
    entry = 100 + 3 + QUEUE_ENTRY_OVERHEAD  # one queued message as the bound counts it
    h = Harness(max_total_queued_bytes=3 * entry, queue_qos0=True)
    _offline_subscriber(h)
    p = h.connect("p")
    for i in range(5):
        p.publish("q/1", bytes([i]) * 100, qos=1)
    assert [a.reason_code for a in p.take("Puback")] == [0, 0, 0, QUOTA, QUOTA]
    assert h.core.limits.queued_total() == 3 * entry
    assert bound(h, "max_total_queued_bytes").used == 3 * entry
    p.publish("q/1", b"qos0", qos=0)  # QoS 0 into a full broker: dropped (at most once)
    assert h.core.limit_hits["max_total_queued_bytes"] == 3
    s = h.connect("sub", clean_start=False, session_expiry_interval=3600)
    got = s.messages()
    assert [m.payload[:1] for m in got] == [b"\x00", b"\x01", b"\x02"]  # every accepted one, in order
    assert h.core.limits.queued_total() == 0
    s.ack_all()


def test_a_will_is_queued_beyond_the_global_queue_bound_into_its_reserve_then_dropped_and_recorded():
    h = Harness(max_total_queued_bytes=1000)  # (a reserve of 250 above it)
    _offline_subscriber(h, topic="dead/#")
    c = h.connect("c", will=will("dead/c"))
    d = h.connect("d", will=will("dead/d", b"d gone"))
    p = h.connect("p")
    for _ in range(5):
        p.publish("dead/x", b"filler", qos=1)  # 302 bytes each as counted
    assert [a.reason_code for a in p.take("Puback")] == [0, 0, 0, 0, QUOTA]  # full at 1208
    c.drop()  # its will goes into the reserve: 1508
    assert h.core.limits.queued_total() == 1208 + 4 + 6 + QUEUE_ENTRY_OVERHEAD
    d.drop()  # the reserve is used up: published (no subscriber online), its queued delivery dropped
    timeline = [e.detail for e in h.core.view.timeline("d")]
    assert any("queues are full" in t for t in timeline), timeline
    s = h.connect("sub", clean_start=False, session_expiry_interval=3600)
    assert s.payloads() == [b"filler"] * 4 + [b"gone"]


def test_the_queue_account_follows_session_ends_and_restarts():
    store = MemoryStorage()
    h = Harness(store=store)
    _offline_subscriber(h, "s1")
    _offline_subscriber(h, "s2")
    p = h.connect("p")
    for _ in range(4):
        p.publish("q/x", b"y" * 10, qos=1)
    assert h.core.limits.queued_messages == 8 and h.core.limits.queued_bytes == 8 * 13
    h.connect("s1", clean_start=True)  # Clean Start 1 ends s1 with its queue
    assert h.core.limits.queued_messages == 4
    h2 = h.restart(5)
    assert h2.core.limits.queued_messages == 4 and h2.core.limits.queued_bytes == 4 * 13


def test_queue_entry_overhead_matches_a_measurement_within_10_percent():
    """What the account charges for a queued message against tracemalloc's count of what it took."""
    # QoS 1 to one offline session: each PUBLISH leaves one Delivery (and its Message) in the queue
    h = Harness(memory_budget=0)
    _offline_subscriber(h, "only", "m/#")
    p = h.connect("p")
    payloads = [bytes([i % 256]) * 200 for i in range(2000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, payload in enumerate(payloads):
            p.send(Publish(f"m/{i % 7}", payload, 1, False, False, i % 65535 + 1, {}))
            p.inbox.clear()
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the payloads existed before (the test holds them): the queue's own cost is the rest, plus them
    measured += sum(len(x) for x in payloads)
    accounted = h.core.limits.queued_total()
    assert h.core.limits.queued_messages == 2000
    print(f"queued: accounted {accounted} bytes, measured {measured}")
    assert abs(accounted - measured) / measured < 0.10, (accounted, measured)


# ---- max_inflight_bytes -------------------------------------------------------------------------


def test_max_inflight_bytes_holds_deliveries_in_the_queue_until_acknowledged():
    h = Harness(max_inflight_bytes=1000)
    s = h.subscriber("i/#", client_id="s")
    p = h.connect("p")
    for i in range(5):
        p.publish("i/x", bytes([i]) * 600, qos=1)
    first = s.messages()
    assert len(first) == 2  # 600 (one always goes), then 1203 >= 1000: the rest wait
    assert len(h.core.sessions["s"].queue) == 3
    s.send(Puback(first[0].packet_id))
    assert len(s.messages()) == 1
    s.send(Puback(first[1].packet_id))
    rest = s.messages()
    assert len(rest) == 2 or len(rest) == 1
    assert h.core.sessions["s"].inflight_bytes <= 2 * 603


# ---- max_total_subscriptions --------------------------------------------------------------------


def test_max_total_subscriptions_refuses_with_suback_0x97_and_0x80_in_311():
    h = Harness(max_total_subscriptions=2)
    a = h.connect("a")
    assert a.subscribe("t/1", "t/2", "t/3", qos=1) == [1, 1, QUOTA]
    assert a.subscribe("t/1", qos=1) == [1]  # the same filter again: not one more
    b = h.connect("b", version=4)
    assert b.subscribe("t/4", qos=1) == [QUOTA]  # encoded as 0x80 Failure in 3.1.1
    assert h.core.limit_hits["max_total_subscriptions"] == 2
    a.unsubscribe("t/2")
    assert b.subscribe("t/4", qos=1) == [1]
