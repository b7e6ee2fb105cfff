"""The will timeline on the core, with a fake clock: every event of a will's life, each cause told
apart, the counters the metrics read, the bounds, and the history kept in the store across restarts."""

from __future__ import annotations

import pytest

from lastwill.codec.packets import Connect, Disconnect, Publish, Subscribe, Subscription
from lastwill.core.causes import CAUSES, PEER_CLOSED, Cause, lost
from lastwill.core.timeline import Timeline
from lastwill.storage.base import TIMELINE_PER_CLIENT
from lastwill.storage.memory import MemoryStorage
from lastwill.storage.sqlite import SqliteStorage
from tests.core.harness import Harness, will


def ended(h: Harness, client_id: str = "dev"):
    return [e for e in h.core.timeline.events(client_id) if e.kind == "connection-ended"]


# ---- armed, no will, refused ------------------------------------------------------------------


def test_armed_records_the_will_and_its_parameters_MQTT_3_1_2_7():
    h = Harness()
    h.connect("dev", will=will(qos=2, retain=True, will_delay_interval=30), session_expiry_interval=300)
    [e] = h.core.timeline.events("dev")
    assert (e.kind, e.rule, e.at) == ("armed", "MQTT-3.1.2-7", h.now)
    assert e.data == {"topic": "dead/c", "qos": 2, "retain": True, "delay": 30, "session_expiry": 300}
    assert e.detail == "topic 'dead/c' qos 2 retain 1 payload 4 bytes delay 30s, session expiry 300s"
    assert h.core.wills.armed == 1


def test_connect_without_a_will_is_recorded_as_such():
    h = Harness()
    h.connect("dev", version=4, clean_start=False)
    [e] = h.core.timeline.events("dev")
    assert e.kind == "no-will" and "without a will" in e.detail
    assert e.data == {"session_expiry": 0xFFFFFFFF}
    assert h.core.wills.armed == 0


def test_connects_without_a_will_recorded_once_per_run():
    h = Harness()
    for _ in range(5):
        h.connect("dev", version=4).disconnect(0)
    h.connect("dev", will=will()).disconnect(0)
    h.connect("dev").disconnect(0)
    assert h.core.timeline.kinds("dev") == ["no-will", "armed", "cancelled", "no-will"]


def test_refused_connect_recorded_with_its_rule_v5_MQTT_3_2_2_12():
    h = Harness(maximum_qos=1)
    h.connect("dev", will=will(qos=2), expect=0x9B)
    [e] = h.core.timeline.events("dev")
    assert (e.kind, e.rule) == ("refused", "MQTT-3.2.2-12")
    assert "0x9B will QoS 2 > maximum 1" in e.detail and "nothing of it is stored" in e.detail
    # the refused will itself is named, so "why no will?" has its answer [MQTT-3.1.2-7]
    assert "its will (topic 'dead/c' qos 2" in e.detail and "is never published" in e.detail


def test_refused_connect_without_will_says_so_MQTT_3_1_2_7():
    h = Harness()
    h.connect("dev", authentication_method="SCRAM", expect=0x8C)  # enhanced authentication is not offered
    [e] = h.core.timeline.events("dev")
    assert e.kind == "refused" and "it carried no will" in e.detail


@pytest.mark.parametrize("kw,rule,text", [
    ({"maximum_qos": 1}, "MQTT-3.2.2-6", "will QoS 2 > maximum 1"),
    ({"retain_available": False}, "MQTT-3.2.2-6", "will retain not supported"),
])
def test_refused_connect_recorded_v311(kw, rule, text):
    h = Harness(**kw)
    h.connect("dev", version=4, will=will(qos=2 if "maximum_qos" in kw else 1, retain=True), expect=None)
    [e] = h.core.timeline.events("dev")
    assert (e.kind, e.rule) == ("refused", rule) and text in e.detail


def test_refused_will_topic_recorded_v311_MQTT_4_7_1_1():
    h = Harness()
    h.connect("dev", version=4, will=will(topic="a/+"), expect=None)
    [e] = h.core.timeline.events("dev")
    assert e.kind == "refused" and "will topic" in e.detail and e.rule


def test_refused_connect_leaves_the_connected_clients_will_armed_MQTT_3_1_4_2():
    h = Harness()
    h.connect("dev", will=will())
    h.connect("dev", will=will(), authentication_method="SCRAM", expect=0x8C)
    assert h.core.timeline.kinds("dev") == ["armed", "refused"]
    assert h.core.sessions["dev"].will is not None


# ---- how the connection ended: every cause told apart -----------------------------------------


def _eof(h, c):
    c.drop(PEER_CLOSED)


def _reset(h, c):
    c.drop(ConnectionResetError(104, "Connection reset by peer"))


def _network_error(h, c):
    c.drop(TimeoutError(110, "Connection timed out"))


def _keep_alive(h, c):
    h.advance(16)


def _protocol_error(h, c):
    c.send(Publish("a/b", b"x", 1, False, False, 1, {"subscription_identifier": [3]}))


def _malformed(h, c):
    c.send_bytes(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3


def _second_connect(h, c):
    c.send(Connect(client_id="dev", protocol_level=5))


def _takeover(h, c):
    h.connect("dev", clean_start=False)


def _shutdown(h, c):
    h.dispatch(h.core.shutdown(h.now))


def _disconnect_0x04(h, c):
    c.disconnect(0x04)


def _disconnect_0x80(h, c):
    c.disconnect(0x80)


@pytest.mark.parametrize("end,kind,rule,text", [
    (_eof, "eof", "MQTT-3.1.2-8", "connection lost: EOF (peer closed its side)"),
    (_reset, "reset", "MQTT-3.1.2-8", "connection lost: ConnectionResetError"),
    (_network_error, "network_error", "MQTT-3.1.2-8", "connection lost: TimeoutError"),
    (_keep_alive, "keep_alive", "MQTT-3.1.2-22", "keep-alive timeout (10s x 1.5 without a packet)"),
    (_protocol_error, "protocol_error", "MQTT-3.3.4-6", "protocol error 0x82: PUBLISH from a client carries"),
    (_malformed, "protocol_error", None, "protocol error 0x81"),
    (_second_connect, "protocol_error", "MQTT-3.1.0-2", "protocol error 0x82: second CONNECT on one connection"),
    (_takeover, "takeover", "MQTT-3.1.4-3", "session taken over by a new connection"),
    (_shutdown, "server_shutdown", "MQTT-3.1.2-8", "server shutting down"),
    (_disconnect_0x04, "disconnect_with_will", "MQTT-3.14.2-1", "client sent DISCONNECT 0x04"),
    (_disconnect_0x80, "disconnect_error", "MQTT-3.1.2-8", "client sent DISCONNECT 0x80"),
])
def test_connection_end_cause_recorded_and_distinguishable_MQTT_3_1_2_8(end, kind, rule, text):
    h = Harness()
    c = h.connect("dev", keep_alive=10, will=will(), session_expiry_interval=60)
    end(h, c)
    [e] = ended(h)
    assert e.data["cause"] == kind
    if rule is not None:
        assert e.rule == rule
    else:
        assert e.rule  # the decoder's rule for the malformed packet
    assert e.detail.startswith(text)
    assert not e.detail.endswith("]"), "the rule is given once, in its field, not repeated in the text"
    [published] = [e for e in h.core.timeline.events("dev") if e.kind == "published"]
    assert published.data["cause"] == kind and published.seq > e.seq
    assert h.core.wills.published_by_cause == {kind: 1}


def test_crash_recovery_is_its_own_cause_MQTT_3_1_2_8():
    h = Harness(store=MemoryStorage(), recovery_grace=10)
    h.connect("dev", will=will())
    h2 = h.restart(downtime=5, recovery_grace=10)
    [e] = ended(h2)
    assert e.data["cause"] == "broker_crash" and "crashed" in e.detail
    h2.advance(10)
    published = h2.core.timeline.events("dev")[-1]
    assert published.data["cause"] == "broker_crash" and published.rule == "MQTT-3.1.2-8"
    assert published.detail.startswith("the client did not reconnect within the recovery grace period")
    assert h2.core.wills.published_by_cause == {"broker_crash": 1}


def test_clean_shutdown_keeping_wills_then_restart_told_apart_from_a_crash():
    h = Harness(store=MemoryStorage(), recovery_grace=10)
    h.connect("dev", will=will())
    h2 = h.restart(downtime=5, crashed=False, recovery_grace=10)
    events = h2.core.timeline.events("dev")
    assert [e.kind for e in events] == ["armed", "connection-ended", "restored", "deferred"]
    assert events[1].data["cause"] == "server_shutdown" and "kept for the next start" in events[1].detail
    assert events[2].data["cause"] == "broker_restart"
    h2.advance(10)
    assert h2.core.wills.published_by_cause == {"broker_restart": 1}


def test_every_cause_label_is_described():
    assert {"eof", "reset", "network_error", "keep_alive", "protocol_error", "takeover", "server_shutdown",
            "disconnect_with_will", "disconnect_error", "broker_crash", "broker_restart",
            "internal_error", "not_reading", "administrative"} == set(CAUSES)
    # how a socket ended, told by the exception's type (or errno), never by its text
    assert lost(BrokenPipeError(32, "Broken pipe")).cause is Cause.RESET
    assert lost(OSError(104, "Connection reset by peer")).cause is Cause.RESET
    assert lost(TimeoutError(110, "Connection timed out")).cause is Cause.NETWORK_ERROR
    assert lost(None).cause is Cause.EOF


# ---- deferred -----------------------------------------------------------------------------------


def test_deferred_says_until_when_and_which_bound_MQTT_3_1_3_9():
    h = Harness()
    c = h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100)
    h.advance(3)
    c.drop()
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.rule, e.data["fire_at"], e.data["wait"]) == ("deferred", "MQTT-3.1.3-9", h.now + 10, 10)
    assert e.detail == ("published in 10s unless the client reconnects first; the will delay decides "
                        "(will delay 10s, session expiry 100s)")


def test_deferred_bounded_by_session_expiry_MQTT_3_1_3_9():
    h = Harness()
    c = h.connect("dev", will=will(will_delay_interval=100), session_expiry_interval=7)
    c.drop()
    e = h.core.timeline.events("dev")[-1]
    assert e.data["fire_at"] == h.now + 7 and "in 7s" in e.detail and "the session expiry decides" in e.detail


# ---- cancelled: each cause, counted ---------------------------------------------------------------


def test_cancelled_by_normal_disconnect_MQTT_3_14_4_3():
    h = Harness()
    h.connect("dev", will=will()).disconnect(0)
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.rule, e.data["cause"]) == ("cancelled", "MQTT-3.14.4-3", "disconnect")
    assert h.core.wills.cancelled_by_cause == {"disconnect": 1}


def test_cancelled_by_reconnect_before_the_delay_MQTT_3_1_3_9():
    h = Harness()
    h.connect("dev", will=will(will_delay_interval=10), session_expiry_interval=100).drop()
    h.advance(4)
    h.connect("dev", clean_start=False, will=will(payload=b"new"))
    kinds = h.core.timeline.kinds("dev")
    assert kinds == ["armed", "connection-ended", "deferred", "cancelled", "armed"]
    cancelled = h.core.timeline.events("dev")[3]
    assert cancelled.data["cause"] == "reconnect" and cancelled.rule == "MQTT-3.1.3-9"
    assert h.core.wills.cancelled_by_cause == {"reconnect": 1}


def test_cancelled_by_reconnect_within_the_recovery_grace():
    h = Harness(store=MemoryStorage(), recovery_grace=10)
    h.connect("dev", will=will())
    h2 = h.restart(downtime=1, recovery_grace=10)
    h2.advance(2)
    h2.connect("dev")
    cancelled = [e for e in h2.core.timeline.events("dev") if e.kind == "cancelled"]
    assert [e.data["cause"] for e in cancelled] == ["reconnect_after_restart"]
    assert h2.core.wills.cancelled_by_cause == {"reconnect_after_restart": 1}


# ---- published: to how many --------------------------------------------------------------------------


def test_published_to_nobody_says_so_MQTT_3_1_2_8():
    h = Harness()
    h.subscriber("other/#")
    h.connect("dev", will=will()).drop()
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.data["receivers"], e.data["topic"]) == ("published", 0, "dead/c")
    assert "no subscription matched it: nobody received it" in e.detail
    assert h.core.wills.published_unreceived == 1


def test_published_retained_to_nobody_says_it_is_kept_MQTT_3_1_2_15():
    h = Harness()
    h.connect("dev", will=will(retain=True)).drop()
    e = h.core.timeline.events("dev")[-1]
    assert "nobody received it; kept as the retained message of its topic" in e.detail


def test_published_counts_receivers_MQTT_3_1_2_8():
    h = Harness()
    h.subscriber("dead/#", client_id="w1")
    h.subscriber("dead/c", client_id="w2")
    h.subscriber("$share/g/dead/#", client_id="w3")
    h.connect("dev", will=will()).drop()
    e = h.core.timeline.events("dev")[-1]
    assert e.data["receivers"] == 3 and "to 3 subscriber(s)" in e.detail
    assert e.rule == "MQTT-3.1.2-8"
    assert h.core.wills.published_unreceived == 0


# ---- dropped deliveries of a will ----------------------------------------------------------------------


def _offline_subscriber(h: Harness, qos: int = 1, **kw):
    w = h.connect("w", clean_start=False, session_expiry_interval=1000, **kw)
    w.subscribe("dead/#", qos=qos)
    w.drop()


def test_dropped_by_a_full_queue_after_published():
    h = Harness(max_queued_messages=2)
    _offline_subscriber(h)
    filler = h.connect("filler")
    filler.publish("dead/x", b"1", qos=1)
    filler.publish("dead/x", b"2", qos=1)
    h.connect("dev", will=will()).drop()
    events = h.core.timeline.events("dev")
    assert [e.kind for e in events] == ["armed", "connection-ended", "published", "dropped"]
    assert events[2].data["receivers"] == 1
    assert events[3].data == {"reason": "queue_full", "subscriber": "w"}
    assert "delivery to subscriber 'w' dropped: its queue is full (2 messages" in events[3].detail
    assert h.core.wills.dropped_by_reason == {"queue_full": 1}


def test_dropped_when_expired_before_the_subscriber_came_back_MQTT_3_3_2_5():
    h = Harness()
    _offline_subscriber(h)
    h.connect("dev", will=will(message_expiry_interval=5)).drop()
    h.advance(10)
    back = h.connect("w", clean_start=False)
    assert back.messages() == []
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.rule, e.data["reason"]) == ("dropped", "MQTT-3.3.2-5", "expired")
    assert e.at == h.now  # recorded when it was found expired, not when published


def test_dropped_when_larger_than_the_subscribers_maximum_packet_size_MQTT_3_1_2_24():
    h = Harness()
    h.subscriber("dead/#", maximum_packet_size=64)
    h.connect("dev", will=will(payload=b"x" * 200)).drop()
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.data["reason"], e.rule) == ("dropped", "too_large", "MQTT-3.1.2-24")
    assert "Maximum Packet Size 64" in e.detail


def test_dropped_qos0_to_an_offline_subscriber():
    h = Harness()
    _offline_subscriber(h, qos=0)
    h.connect("dev", will=will(qos=0)).drop()
    e = h.core.timeline.events("dev")[-1]
    assert (e.kind, e.data["reason"]) == ("dropped", "offline_qos0")
    assert h.core.wills.dropped_by_reason == {"offline_qos0": 1}


def test_ordinary_messages_dropped_are_not_will_events():
    h = Harness(max_queued_messages=1)
    _offline_subscriber(h)
    p = h.connect("dev", will=will())
    p.publish("dead/x", b"1", qos=1)
    p.publish("dead/x", b"2", qos=1)
    assert h.core.timeline.kinds("dev") == ["armed"] and h.core.wills.dropped_by_reason == {}


# ---- bounds ----------------------------------------------------------------------------------------------


def test_bounded_per_client_keeping_the_latest():
    h = Harness()
    for _ in range(TIMELINE_PER_CLIENT):
        h.connect("dev", will=will()).disconnect(0)
    events = h.core.timeline.events("dev")
    assert len(events) == TIMELINE_PER_CLIENT and events[-1].kind == "cancelled"
    assert events[0].seq == TIMELINE_PER_CLIENT + 1  # the first 64 of 128 are gone


def test_bounded_in_clients_forgetting_the_least_recent_and_telling_the_sink():
    forgotten = []
    dropped = []

    class Sink:
        def timeline_event(self, client_id, event):
            pass

        def timeline_forgotten(self, client_id):
            forgotten.append(client_id)

        def timeline_dropped(self, client_id, seqs):
            dropped.append((client_id, seqs))
    t = Timeline(max_clients=2, per_client=2, sink=Sink())
    t.record("a", 1.0, "armed", "x")
    t.record("b", 2.0, "armed", "x")
    t.record("b", 2.5, "cancelled", "x")
    t.record("a", 3.0, "published", "x")  # a is now the most recent
    t.record("c", 4.0, "armed", "x")
    assert forgotten == ["b"] and "b" not in t and t.kinds("a") == ["armed", "published"]
    assert dropped == [("b", [2, 3])]  # every event of b: the store deletes them by seq
    t.record("a", 5.0, "no-will", "x")
    assert dropped[-1] == ("a", [1]) and t.kinds("a") == ["published", "no-will"]  # its oldest


def test_compact_events_read_back_as_recorded_one_event_and_many():
    t = Timeline(per_client=3)
    t.record("a", 1.0, "armed", lambda d: f"{d['topic']} {d['_n']} bytes", "MQTT-3.1.2-7", topic="x/y", qos=1, _n=5)
    [e] = t.events("a")
    assert (e.at, e.kind, e.detail, e.rule, e.seq) == (1.0, "armed", "x/y 5 bytes", "MQTT-3.1.2-7", 1)
    assert e.data == {"topic": "x/y", "qos": 1}  # the "_" keys are the detail's, not data
    for i in range(4):
        t.record("a", 2.0 + i, "cancelled", f"c{i}", None, cause="disconnect")
    assert [e.detail for e in t.events("a")] == ["c1", "c2", "c3"] and t.last_kind("a") == "cancelled"
    assert [e.data for e in t.events("a")] == [{"cause": "disconnect"}] * 3
    t.record("b", 9.0, "no-will", "none")
    assert t.events("b")[0].data == {} and t.kinds("b") == ["no-will"] and len(t) == 2


def test_armed_detail_written_from_the_data_is_the_same_in_the_store_MQTT_3_1_2_7():
    store = MemoryStorage()
    h = Harness(store=store)
    h.connect("dev", version=4, will=will(payload=b"12345"))
    [stored] = store.load().timeline["dev"]
    [e] = h.core.timeline.events("dev")
    assert stored.detail == e.detail == "topic 'dead/c' qos 1 retain 0 payload 5 bytes, session expiry 0s"
    assert stored.data == e.data == {"topic": "dead/c", "qos": 1, "retain": False, "delay": 0, "session_expiry": 0}


# ---- kept in the store, with wall-clock times, across restarts ----------------------------------------------


def test_timeline_committed_with_wall_clock_times():
    store = MemoryStorage()
    h = Harness(store=store)
    c = h.connect("dev", will=will(will_delay_interval=30), session_expiry_interval=100)
    h.advance(2)
    c.drop()
    stored = store.load().timeline["dev"]
    assert [e.kind for e in stored] == ["armed", "connection-ended", "deferred"]
    offset = h.clock.wall_offset
    assert stored[0].at_wall == 1000.0 + offset and stored[1].at_wall == 1002.0 + offset
    assert stored[2].data["fire_at"] == 1032.0 + offset  # times in the data are wall-clock too
    assert stored[1].data == {"cause": "eof"}


def test_store_trims_a_clients_timeline_when_the_core_drops_its_oldest_event(tmp_path):
    import sqlite3

    store = SqliteStorage(tmp_path / "data")
    store.load()
    h = Harness(store=store)
    n = TIMELINE_PER_CLIENT // 2 + 3  # two events per connection: the bound is passed by 6
    for _ in range(n):
        h.connect("dev", will=will()).disconnect(0)
    h.connect("quiet", will=will())
    db = sqlite3.connect(store.path)
    rows = dict(db.execute("SELECT client_id, count(*) FROM timeline GROUP BY client_id"))
    first = db.execute("SELECT min(seq) FROM timeline WHERE client_id = 'dev'").fetchone()[0]
    db.close()
    assert rows == {"dev": TIMELINE_PER_CLIENT, "quiet": 1}
    assert first == h.core.timeline.events("dev")[0].seq == 2 * n - TIMELINE_PER_CLIENT + 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_keeps_the_same_events_when_one_step_records_more_than_the_bound(kind, tmp_path):
    # a will dropped for 70 offline QoS 0 subscribers: 72 events of its client in one commit, of
    # which the core keeps the last 64; the store must keep exactly those (by seq)
    store = MemoryStorage() if kind == "memory" else SqliteStorage(tmp_path / "data")
    store.load()
    h = Harness(store=store)
    for i in range(TIMELINE_PER_CLIENT + 6):
        w = h.connect(f"w{i}", clean_start=False, session_expiry_interval=1000)
        w.subscribe("dead/#", qos=0)
        w.drop()
    h.connect("dev", will=will(qos=0)).drop()
    kept = [e.seq for e in h.core.timeline.events("dev")]
    assert len(kept) == TIMELINE_PER_CLIENT and h.core.timeline.kinds("dev")[-1] == "dropped"
    assert [e.seq for e in store.load().timeline["dev"]] == kept


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_history_survives_restarts_with_the_same_wall_times(kind, tmp_path):
    store = MemoryStorage() if kind == "memory" else SqliteStorage(tmp_path / "data")
    if kind == "sqlite":
        store.load()
    h = Harness(store=store)
    c = h.connect("dev", will=will(will_delay_interval=60), session_expiry_interval=600)
    c.drop()
    walls = [e.at + h.clock.wall_offset for e in h.core.timeline.events("dev")]
    fire_wall = h.core.timeline.events("dev")[-1].data["fire_at"] + h.clock.wall_offset
    if kind == "sqlite":
        store.close()
        store = SqliteStorage(tmp_path / "data")
        h.store = store
    h2 = h.restart(downtime=20)
    events = h2.core.timeline.events("dev")
    assert [e.kind for e in events] == ["armed", "connection-ended", "deferred", "restored"]
    assert [e.at + h2.clock.wall_offset for e in events[:3]] == pytest.approx(walls)
    assert events[2].data["fire_at"] + h2.clock.wall_offset == pytest.approx(fire_wall)
    assert events[3].seq > events[2].seq  # numbering goes on after the restart
    h2.advance(40)
    assert h2.core.timeline.kinds("dev")[-1] == "published"
    h3 = h2.restart(downtime=1)
    assert h3.core.timeline.kinds("dev") == ["armed", "connection-ended", "deferred", "restored", "published"]


def test_restored_clients_keep_their_recency_order():
    store = MemoryStorage()
    h = Harness(store=store)
    for client_id in ("a", "b", "c"):
        h.connect(client_id, will=will()).disconnect(0)
    h.connect("a", will=will()).disconnect(0)  # a is now the most recent
    h2 = h.restart(downtime=1)
    h2.core.timeline.max_clients = 3
    h2.connect("d")  # a fourth client: the least recent, b, is forgotten, in memory and in the store
    assert "b" not in h2.core.timeline and "a" in h2.core.timeline
    assert "b" not in store.load().timeline and "d" in store.load().timeline


def test_no_events_recorded_for_the_store_when_not_persisting():
    h = Harness()
    h.connect("dev", will=will()).drop()
    assert h.core.take_batch(0.0) is None and h.core.timeline.kinds("dev")


def test_subscribe_with_no_local_will_drop_not_reported_as_dropped_MQTT_3_8_3_3():
    """No Local skips the will's own session: that is no subscription, not a dropped delivery."""
    h = Harness()
    c = h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=10)
    c.send(Subscribe(7, [Subscription("dead/#", 1, no_local=True)]))
    c.send(Disconnect(0x04))
    h.advance(5)
    e = h.core.timeline.events("dev")[-1]
    assert e.kind == "published" and e.data["receivers"] == 0
