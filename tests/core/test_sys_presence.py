"""What the broker publishes about its clients, on the core with a fake clock: the $SYS
connected/disconnected events (EMQX's topics and fields, plus the will decision), the retained
presence topic (also across crashes), and the will cause User Property."""

from __future__ import annotations

import json
import logging

import pytest

from lastwill.cli import build_parser, config_from_args
from lastwill.codec.packets import Connect, Pubrel
from lastwill.config import Config, load_config
from lastwill.core.causes import PEER_CLOSED
from lastwill.core.timers import TimerKind
from lastwill.errors import ConfigError
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will

NODE = "n1"
T0 = 1_700_001_000_000  # the harness's wall clock at its start, in ms (FakeClock 1000 + 1.7e9 s)


def sys_node(**config) -> Harness:
    return Harness(node_name=NODE, **config)


def events(sub) -> list[tuple[str, dict]]:
    """The $SYS events a subscriber received, as (topic, payload); checks QoS 0, not retained."""
    out = []
    for m in sub.messages():
        assert m.topic.startswith("$SYS/"), m.topic
        assert m.qos == 0 and not m.retain
        out.append((m.topic, json.loads(m.payload)))
    return out


def sys_watcher(h: Harness, what: str = "+", client_id: str = "syswatch", version: int = 5):
    return h.subscriber(f"$SYS/brokers/{NODE}/clients/+/{what}", client_id=client_id, qos=0, version=version)


def only(evs: list[tuple[str, dict]], client_id: str, event: str) -> dict:
    mine = [p for t, p in evs if t == f"$SYS/brokers/{NODE}/clients/{client_id}/{event}"]
    assert len(mine) == 1, evs
    return mine[0]


# ---- $SYS connected / disconnected --------------------------------------------------------------------


def test_sys_connected_event_has_emqx_fields():
    h = sys_node()
    w = sys_watcher(h)
    h.advance(2.5)
    c = h.open()
    c.client_id = "dev"
    c.send(Connect(client_id="dev", clean_start=True, keep_alive=30, protocol_level=5, username="alice",
                   properties={"session_expiry_interval": 60}))
    assert c.take("Connack")[0].reason_code == 0
    p = only(events(w), "dev", "connected")
    assert p == {"clientid": "dev", "username": "alice", "ipaddress": "test", "sockport": None,
                 "protocol": "mqtt", "proto_name": "MQTT", "proto_ver": 5, "connected_at": T0 + 2500,
                 "ts": T0 + 2500, "keepalive": 30, "clean_start": True, "expiry_interval": 60}


def test_sys_connected_event_v31_names_the_protocol():
    h = sys_node()
    w = sys_watcher(h, "connected")
    h.connect("old", version=3)
    p = only(events(w), "old", "connected")
    assert (p["proto_name"], p["proto_ver"], p["clean_start"]) == ("MQIsdp", 3, True)


def test_sys_event_sockport_from_the_edge():
    h = sys_node()
    w = sys_watcher(h, "connected")
    conn_id = h.core.new_conn_id()
    h.core.open(conn_id, h.now, "10.1.2.3:5555", 1884)
    h.dispatch([a for a in h.core.handle(conn_id, Connect(client_id="x", protocol_level=4), h.now)
                if a.conn_id != conn_id])  # the CONNACK goes to a connection the harness does not know
    p = only(events(w), "x", "connected")
    assert (p["ipaddress"], p["sockport"]) == ("10.1.2.3", 1884)


def test_sys_disconnected_will_published_at_once_MQTT_3_1_2_8():
    h = sys_node()
    w = sys_watcher(h, "disconnected")
    c = h.connect("dev", version=4, will=will())
    h.advance(4)
    c.drop(PEER_CLOSED)
    p = only(events(w), "dev", "disconnected")
    assert p["reason"] == "tcp_closed"
    assert (p["connected_at"], p["disconnected_at"], p["ts"]) == (T0, T0 + 4000, T0 + 4000)
    assert p["will"] == {"decision": "published", "fire_at": None, "rule": "MQTT-3.1.2-8"}
    assert (p["clientid"], p["proto_ver"], p["ipaddress"]) == ("dev", 4, "test")


@pytest.mark.parametrize(("delay", "expiry", "wait"), [(30, 100, 30), (60, 10, 10)])
def test_sys_disconnected_will_deferred_with_fire_at_v5_MQTT_3_1_3_9(delay, expiry, wait):
    h = sys_node()
    w = sys_watcher(h, "disconnected")
    dead = h.subscriber("dead/#", client_id="dead")
    c = h.connect("dev", will=will(will_delay_interval=delay), session_expiry_interval=expiry)
    h.advance(1)
    c.drop(ConnectionResetError(104, "Connection reset by peer"))
    p = only(events(w), "dev", "disconnected")
    assert p["reason"] == "sock_error"
    assert p["will"] == {"decision": "deferred", "fire_at": T0 + 1000 + wait * 1000, "rule": "MQTT-3.1.3-9"}
    h.advance(wait - 0.01)
    assert dead.messages() == []
    h.advance(0.01)
    assert dead.payloads() == [b"gone"]


def test_sys_disconnected_will_cancelled_by_disconnect_0x00_MQTT_3_14_4_3():
    h = sys_node()
    w = sys_watcher(h, "disconnected")
    h.connect("dev", will=will()).disconnect(0)
    p = only(events(w), "dev", "disconnected")
    assert p["reason"] == "normal"
    assert p["will"] == {"decision": "cancelled", "fire_at": None, "rule": "MQTT-3.14.4-3"}


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_sys_disconnected_without_will_says_none(how):
    h = sys_node()
    w = sys_watcher(h, "disconnected")
    c = h.connect("dev")
    c.disconnect(0) if how == "disconnect" else c.drop()
    p = only(events(w), "dev", "disconnected")
    assert p["reason"] == ("normal" if how == "disconnect" else "tcp_closed")
    assert p["will"] == {"decision": "none", "fire_at": None, "rule": None}


def test_sys_disconnected_reasons_emqx_names():
    h = sys_node()
    w = sys_watcher(h, "disconnected")
    h.connect("ka", keep_alive=2)
    h.advance(3.1)  # 1.5 x keep alive
    h.connect("dw", will=will()).disconnect(0x04)
    h.connect("de").disconnect(0x80)
    h.connect("tk")
    h.connect("tk")  # takes the first connection over
    h.connect("pe").send_bytes(b"\xf0\x00")  # AUTH without enhanced authentication: protocol error 0x82
    h.connect("mp").send_bytes(b"\x30\x03\x00\x01a")  # PUBLISH whose topic is cut short
    evs = events(w)
    reasons = {p["clientid"]: p["reason"] for _, p in evs}
    assert reasons["ka"] == "keepalive_timeout"
    assert reasons["dw"] == "disconnect_with_will_message"
    assert reasons["de"] == "unspecified_error"
    assert reasons["tk"] == "takenover"
    assert reasons["pe"] == "protocol_error"
    assert reasons["mp"] == "malformed_packet"
    assert only(evs, "dw", "disconnected")["will"]["decision"] == "published"


def test_hash_and_plus_subscribers_never_get_sys_events_MQTT_4_7_2_1():
    h = sys_node()
    hash_ = h.subscriber("#", client_id="hash")
    plus = h.subscriber("+/brokers/#", client_id="plus")
    w = h.subscriber("$SYS/#", client_id="sys")
    c = h.connect("dev", will=will(topic="t/dev"))
    c.drop()
    assert [m.topic for m in hash_.messages()] == ["t/dev"]  # the will only
    assert plus.messages() == []
    assert [t for t, _ in events(w)] == [f"$SYS/brokers/{NODE}/clients/dev/connected",
                                         f"$SYS/brokers/{NODE}/clients/dev/disconnected"]


def test_sys_events_off_publishes_nothing():
    h = sys_node(sys_events=False)
    w = h.subscriber("$SYS/#", client_id="sys")
    h.connect("dev", will=will()).drop()
    assert w.messages() == []


def test_sys_event_late_subscriber_gets_nothing_not_retained():
    h = sys_node()
    h.connect("dev").drop()
    late = h.subscriber("$SYS/#", client_id="late")
    assert late.messages() == []


def test_no_sys_payload_built_without_a_sys_subscriber(monkeypatch):
    h = sys_node()
    built = []
    monkeypatch.setattr(h.core.announce, "_sys", lambda *a: built.append(a))
    h.connect("dev").drop()
    assert built == []
    h.subscriber("$share/g/$SYS/#", client_id="shared")
    h.connect("dev2").drop()
    assert [a[:2] for a in built] == [("dev2", "connected"), ("dev2", "disconnected")]


def test_sys_event_reaches_a_shared_subscription():
    h = sys_node()
    s = h.subscriber("$share/g/$SYS/brokers/+/clients/+/connected", client_id="member")
    h.connect("dev")
    assert [p["clientid"] for _, p in events(s)] == ["dev"]


@pytest.mark.parametrize("client_id", ["a+b", "a#"])
def test_client_id_with_wildcard_gets_no_event_and_no_presence(client_id):
    h = sys_node(presence_topic="presence/{client_id}")
    w = h.subscriber("$SYS/#", client_id="sys")
    p = h.subscriber("presence/#", client_id="pres")
    p.messages()
    w.messages()
    h.connect(client_id).drop()
    assert w.messages() == [] and p.messages() == []


# ---- clients may not publish to $SYS ----------------------------------------------------------------------


def test_client_publish_to_sys_dropped_and_refused_v5():
    h = sys_node()
    w = h.subscriber("$SYS/#", client_id="sys")
    c = h.connect("bad")
    events(w)
    c.publish(f"$SYS/brokers/{NODE}/clients/x/disconnected", b"{}", qos=1, retain=True)
    c.publish("$SYS", b"x", qos=2)
    c.publish("$SYS/x", b"x", qos=0)
    assert [(type(a).__name__, a.reason_code) for a in c.take()] == [("Puback", 0x87), ("Pubrec", 0x87)]
    assert w.messages() == []
    assert h.subscriber("$SYS/#", client_id="late").messages() == []  # nothing retained
    assert c.closed is None


def test_client_publish_to_sys_dropped_with_positive_ack_v311_MQTT_3_3_5_2():
    h = sys_node()
    w = h.subscriber("$SYS/#", client_id="sys", version=4)
    c = h.connect("bad", version=4)
    events(w)
    c.publish("$SYS/x", b"x", qos=1)
    c.publish("$SYS/y", b"y", qos=2)
    acks = c.take()
    assert [(type(a).__name__, a.reason_code) for a in acks] == [("Puback", 0), ("Pubrec", 0)]
    c.send(Pubrel(acks[1].packet_id))  # the QoS 2 flow completes as usual
    assert [type(a).__name__ for a in c.take()] == ["Pubcomp"]
    assert w.messages() == [] and c.closed is None


def test_client_publish_to_other_dollar_topic_still_routed():
    h = sys_node()
    w = h.subscriber("$SYSTEM/#", client_id="w")
    h.connect("p").publish("$SYSTEM/x", b"x")
    assert w.payloads() == [b"x"]


@pytest.mark.parametrize(("version", "code"), [(5, 0x87), (4, 0x87)])
def test_will_on_sys_topic_refused_and_nothing_stored(version, code):
    h = sys_node()
    w = h.subscriber("$SYS/#", client_id="sys")
    events(w)
    c = h.connect("dev", version=version, will=will(topic=f"$SYS/brokers/{NODE}/clients/x/disconnected"),
                  expect=code)
    assert c.closed and "dev" not in h.core.sessions
    assert w.messages() == []


# ---- presence ---------------------------------------------------------------------------------------------


def presence_node(**config) -> Harness:
    return Harness(node_name=NODE, presence_topic="presence/{client_id}", **config)


def states(sub) -> list[tuple[str, bytes, bool]]:
    return [(m.topic, m.payload, m.retain) for m in sub.messages()]


def test_presence_online_then_offline_at_connection_end_not_at_will_delay():
    h = presence_node()
    p = h.subscriber("presence/#", client_id="pres")
    assert states(p) == [("presence/pres", b"online", True)]  # retained: sent on subscribe
    c = h.connect("dev", will=will(will_delay_interval=30), session_expiry_interval=100)
    assert states(p) == [("presence/dev", b"online", False)]
    c.drop()
    assert states(p) == [("presence/dev", b"offline", False)]  # at once, whatever the will delay
    m = h.core.retained.get("presence/dev")
    assert m.payload == b"offline" and m.qos == 1 and m.origin is None


def test_presence_retained_for_late_subscribers():
    h = presence_node()
    h.connect("a")
    h.connect("b").drop()
    late = h.subscriber("presence/+", client_id="late")
    assert sorted(states(late)) == [("presence/a", b"online", True), ("presence/b", b"offline", True),
                                    ("presence/late", b"online", True)]


def test_presence_goes_before_the_will_and_the_sys_event():
    h = presence_node()
    all_ = h.subscriber("#", client_id="all")
    w = h.subscriber("$SYS/#", client_id="sys")
    all_.messages()
    w.messages()
    h.connect("dev", will=will(topic="dead/dev")).drop()
    assert [(m.topic, m.payload) for m in all_.messages()] == [
        ("presence/dev", b"online"), ("presence/dev", b"offline"), ("dead/dev", b"gone")]
    assert [t.rsplit("/", 1)[1] for t, _ in events(w)] == ["connected", "disconnected"]


def test_presence_takeover_ends_online():
    h = presence_node()
    p = h.subscriber("presence/dev", client_id="pres")
    h.connect("dev")
    h.connect("dev")
    assert [m.payload for m in p.messages()] == [b"online", b"offline", b"online"]
    assert h.core.retained.get("presence/dev").payload == b"online"


def test_presence_off_by_default():
    h = Harness()
    p = h.subscriber("#", client_id="all")
    h.connect("dev").drop()
    assert p.messages() == [] and len(h.core.retained) == 0


def test_presence_topic_pattern_with_suffix():
    h = Harness(presence_topic="devices/{client_id}/state")
    h.connect("dev").drop()
    assert h.core.retained.get("devices/dev/state").payload == b"offline"


def test_presence_qos1_queued_for_offline_persistent_subscriber():
    h = presence_node()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("presence/dev", qos=1)
    s.drop()
    h.connect("dev").drop()
    back = h.connect("s", clean_start=False)
    assert [(m.payload, m.qos) for m in back.messages()] == [(b"online", 1), (b"offline", 1)]


# ---- presence and $SYS across crashes ----------------------------------------------------------------------


def crash_node(**config) -> Harness:
    return Harness(store=MemoryStorage(), node_name=NODE, presence_topic="presence/{client_id}",
                   recovery_grace=15, **config)


RESTART = {"node_name": NODE, "presence_topic": "presence/{client_id}", "recovery_grace": 15}


def test_presence_offline_once_recovered_will_fires_after_crash_MQTT_3_1_2_8():
    h = crash_node()
    h.connect("dev", will=will(topic="dead/dev"))
    h2 = h.restart(downtime=3, **RESTART)
    late = h2.subscriber("presence/dev", client_id="late")
    dead = h2.subscriber("dead/#", client_id="dead")
    sysw = sys_watcher(h2, "disconnected")
    assert states(late) == [("presence/dev", b"online", True)]  # the store says online: the grace runs
    h2.advance(14.9)
    assert late.messages() == [] and dead.messages() == [] and sysw.messages() == []
    h2.advance(0.1)
    assert states(late) == [("presence/dev", b"offline", False)]
    assert dead.payloads() == [b"gone"]
    p = only(events(sysw), "dev", "disconnected")
    assert p["reason"] == "broker_crash"
    assert p["will"] == {"decision": "published", "fire_at": None, "rule": "MQTT-3.1.2-8"}
    assert p["disconnected_at"] == round((500 + h2.clock.wall_offset) * 1000)  # when the broker found it gone
    assert p["ts"] == p["disconnected_at"] + 15000
    assert h2.core.retained.get("presence/dev").payload == b"offline"
    h3 = h2.restart(downtime=1, **RESTART)  # and it stays offline: nothing recovers any more
    assert states(h3.subscriber("presence/dev", client_id="late3")) == [("presence/dev", b"offline", True)]
    h3.advance(100)
    assert h3.core.retained.get("presence/dev").payload == b"offline"


def test_presence_offline_goes_before_the_recovered_will_MQTT_3_1_2_8():
    h = crash_node()
    h.connect("dev", will=will(topic="dead/dev"))
    h2 = h.restart(downtime=3, **RESTART)
    all_ = h2.subscriber("#", client_id="all")
    all_.messages()
    h2.advance(15)
    assert [(m.topic, m.payload) for m in all_.messages()] == [("presence/dev", b"offline"), ("dead/dev", b"gone")]


def test_sys_disconnected_after_crash_without_presence():
    h = Harness(store=MemoryStorage(), node_name=NODE, recovery_grace=15)
    h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=100)
    h2 = h.restart(downtime=3, node_name=NODE, recovery_grace=15)
    sysw = sys_watcher(h2, "disconnected")
    h2.advance(14.9)
    assert sysw.messages() == []
    h2.advance(0.1)
    p = only(events(sysw), "dev", "disconnected")
    assert (p["reason"], p["will"]["decision"], p["connected_at"]) == ("broker_crash", "published", None)
    assert len(h2.core.retained) == 0


def test_presence_offline_at_grace_end_without_will_after_crash():
    h = crash_node()
    h.connect("dev", version=4)
    h2 = h.restart(downtime=3, **RESTART)
    sysw = sys_watcher(h2, "disconnected")
    h2.advance(14.9)
    assert h2.core.retained.get("presence/dev").payload == b"online"
    h2.advance(0.1)
    assert h2.core.retained.get("presence/dev").payload == b"offline"
    assert only(events(sysw), "dev", "disconnected")["will"] == {"decision": "none", "fire_at": None,
                                                                  "rule": None}


@pytest.mark.parametrize("clean_start", [False, True])
def test_presence_online_again_on_reconnect_within_grace(clean_start):
    h = crash_node()
    h.connect("dev", will=will(), clean_start=False, session_expiry_interval=100)
    h2 = h.restart(downtime=3, **RESTART)
    p = h2.subscriber("presence/dev", client_id="pres")
    dead = h2.subscriber("dead/#", client_id="dead")
    sysw = sys_watcher(h2)
    assert [m.payload for m in p.messages()] == [b"online"]
    h2.advance(5)
    h2.connect("dev", clean_start=clean_start, session_expiry_interval=100)
    assert (TimerKind.RECOVERED, "dev") not in h2.core.timers
    # the connection the crash ended is announced, with its will cancelled by the reconnect
    # [MQTT-3.1.3-9], just before the new connection
    evs = events(sysw)
    assert [t.rsplit("/", 1)[1] for t, _ in evs] == ["disconnected", "connected"]
    gone = only(evs, "dev", "disconnected")
    assert (gone["reason"], gone["will"]["decision"], gone["will"]["rule"]) == \
        ("broker_crash", "cancelled", "MQTT-3.1.3-9")
    assert gone["disconnected_at"] <= only(evs, "dev", "connected")["connected_at"]
    h2.advance(100)
    assert states(p) == [("presence/dev", b"online", False)]  # never offline
    assert dead.messages() == [] and sysw.messages() == []  # nothing more at the grace period's end
    assert h2.core.retained.get("presence/dev").payload == b"online"
    assert not h2.core.announce.recovering


def test_presence_recovers_across_a_second_crash_during_grace():
    h = crash_node()
    h.connect("dev", will=will())
    h2 = h.restart(downtime=1, **RESTART)
    h2.advance(10)  # the store now says: not connected, will pending; presence still online
    h3 = h2.restart(downtime=1, **RESTART)
    dead = h3.subscriber("dead/#", client_id="dead")
    h3.advance(14.9)
    assert h3.core.retained.get("presence/dev").payload == b"online"
    assert dead.payloads() == [b"gone"]  # the will kept its first deadline
    sysw = sys_watcher(h3, "disconnected")
    h3.advance(0.1)
    assert h3.core.retained.get("presence/dev").payload == b"offline"
    assert only(events(sysw), "dev", "disconnected")["will"]["decision"] == "published"
    h3.advance(100)
    assert dead.messages() == []  # once


def test_presence_after_clean_shutdown_keeping_wills():
    h = crash_node()
    h.connect("dev", will=will())
    h2 = h.restart(downtime=2, crashed=False, **RESTART)
    sysw = sys_watcher(h2, "disconnected")
    assert h2.core.retained.get("presence/dev").payload == b"online"
    h2.advance(15)
    assert h2.core.retained.get("presence/dev").payload == b"offline"
    assert only(events(sysw), "dev", "disconnected")["reason"] == "broker_restart"


def test_presence_offline_at_grace_end_before_a_longer_will_delay_MQTT_3_1_3_9():
    h = crash_node()
    h.connect("dev", will=will(will_delay_interval=40), session_expiry_interval=100)
    h2 = h.restart(downtime=1, **RESTART)
    dead = h2.subscriber("dead/#", client_id="dead")
    sysw = sys_watcher(h2, "disconnected")
    h2.advance(15)
    assert h2.core.retained.get("presence/dev").payload == b"offline"
    wall0 = round((500 + h2.clock.wall_offset) * 1000)
    assert only(events(sysw), "dev", "disconnected")["will"] == {
        "decision": "deferred", "fire_at": wall0 + 40_000, "rule": "MQTT-3.1.3-9"}
    assert dead.messages() == []
    h2.advance(25)
    assert dead.payloads() == [b"gone"]


def test_broker_published_online_only_is_recovered_not_a_clients():
    h = crash_node()
    h.connect("mimic").publish("presence/ghost", b"online", qos=1, retain=True)
    h2 = h.restart(downtime=1, **RESTART)
    h2.advance(100)
    assert h2.core.retained.get("presence/ghost").payload == b"online"  # the client's own message
    assert h2.core.retained.get("presence/mimic").payload == b"offline"


def test_crash_recovery_without_presence_or_sys_events_schedules_nothing():
    h = Harness(store=MemoryStorage(), sys_events=False)
    h.connect("dev")
    h2 = h.restart(downtime=1, sys_events=False)
    assert not h2.core.announce.recovering
    assert (TimerKind.RECOVERED, "dev") not in h2.core.timers


# ---- the will cause User Property ----------------------------------------------------------------------


def cause_node(**config) -> Harness:
    return Harness(will_cause_property=True, **config)


OWN = [("a", "1"), ("z", "2"), ("a", "3")]


@pytest.mark.parametrize(("how", "cause"), [("eof", "eof"), ("reset", "reset"), ("keep_alive", "keep_alive"),
                                            ("takeover", "takeover"), ("0x04", "disconnect_with_will"),
                                            ("malformed", "protocol_error")])
def test_will_cause_user_property_after_own_properties_v5_MQTT_3_1_3_10(how, cause):
    h = cause_node()
    v5 = h.subscriber("dead/#", client_id="v5")
    v4 = h.subscriber("dead/#", client_id="v4", version=4)
    c = h.connect("dev", keep_alive=2, will=will(user_property=list(OWN), content_type="text/plain"))
    if how == "eof":
        c.drop(PEER_CLOSED)
    elif how == "reset":
        c.drop(ConnectionResetError(104, "Connection reset by peer"))
    elif how == "keep_alive":
        h.advance(3)
    elif how == "takeover":
        h.connect("dev")
    elif how == "0x04":
        c.disconnect(0x04)
    else:
        c.send_bytes(b"\xf0\x00")  # AUTH without enhanced authentication: protocol error
    [m] = v5.messages()
    assert m.properties["user_property"] == [*OWN, ("lastwill-cause", cause)]
    assert m.properties["content_type"] == "text/plain"
    [m4] = v4.messages()
    assert m4.payload == b"gone" and m4.properties == {}


def test_will_cause_property_off_by_default_v5_MQTT_3_1_3_10():
    h = Harness()
    v5 = h.subscriber("dead/#", client_id="v5")
    h.connect("dev", will=will(user_property=list(OWN))).drop()
    assert v5.messages()[0].properties["user_property"] == OWN
    h.connect("dev2", will=will()).drop()
    assert "user_property" not in v5.messages()[0].properties


def test_will_cause_property_alone_and_on_deferred_will():
    h = cause_node()
    v5 = h.subscriber("dead/#", client_id="v5")
    h.connect("dev", will=will(will_delay_interval=5), session_expiry_interval=60).drop()
    h.advance(5)
    assert v5.messages()[0].properties["user_property"] == [("lastwill-cause", "eof")]


def test_will_cause_property_broker_crash_MQTT_3_1_3_10():
    h = Harness(store=MemoryStorage(), will_cause_property=True, recovery_grace=5)
    h.connect("dev", will=will(user_property=[("k", "v")]))
    h2 = h.restart(downtime=1, will_cause_property=True, recovery_grace=5)
    v5 = h2.subscriber("dead/#", client_id="v5")
    h2.advance(5)
    assert v5.messages()[0].properties["user_property"] == [("k", "v"), ("lastwill-cause", "broker_crash")]


def test_will_cause_property_kept_for_queued_delivery():
    h = Harness(store=MemoryStorage(), will_cause_property=True)
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("dead/#", qos=1)
    s.drop()
    h.connect("dev", will=will()).drop()
    h2 = h.restart(downtime=1, will_cause_property=True)
    back = h2.connect("s", clean_start=False)
    assert [tuple(p) for p in back.messages()[0].properties["user_property"]] == [("lastwill-cause", "eof")]


# ---- the log wording when the session expiry decides ------------------------------------------------------


@pytest.mark.parametrize(("delay", "expiry", "why"), [(60, 10, "session expiry elapsed"), (10, 60, "will delay elapsed"),
                                                      (10, 10, "will delay elapsed")])
def test_deferred_will_names_what_decided_v5_MQTT_3_1_3_9(caplog, delay, expiry, why):
    h = Harness()
    dead = h.subscriber("dead/#")
    h.connect("dev", will=will(will_delay_interval=delay), session_expiry_interval=expiry).drop()
    with caplog.at_level(logging.INFO, logger="lastwill.will"):
        h.advance(min(delay, expiry))
    assert dead.payloads() == [b"gone"]
    published = h.core.timeline.events("dev")[-1]
    assert published.kind == "published" and published.detail.startswith(why), published.detail
    line = [r.getMessage() for r in caplog.records if "published" in r.getMessage()]
    assert len(line) == 1 and why in line[0], line
    if why == "session expiry elapsed":
        assert "will delay elapsed" not in line[0] and "will delay elapsed" not in published.detail
        assert f"session expiry {expiry}s" in published.detail


# ---- configuration ----------------------------------------------------------------------------------------


def test_config_defaults():
    c = Config()
    assert c.sys_events is True and c.presence_topic == "" and c.will_cause_property is False
    assert c.node_name.startswith("lastwill@") and "/" not in c.node_name


@pytest.mark.parametrize(("key", "value"), [
    ("sys_events", "yes"), ("will_cause_property", 1), ("node_name", ""), ("node_name", "a/b"),
    ("node_name", "a+"), ("node_name", 7), ("presence_topic", "presence"), ("presence_topic", "p/+/{client_id}"),
    ("presence_topic", "p/{client_id}/{client_id}"), ("presence_topic", "p/#/{client_id}"), ("presence_topic", None),
])
def test_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        Config(**{key: value}).validate()


def test_config_from_toml_and_flags(tmp_path):
    f = tmp_path / "lw.toml"
    f.write_text('sys_events = false\nnode_name = "edge-1"\npresence_topic = "p/{client_id}"\n'
                 'will_cause_property = true\n')
    c = load_config(f)
    assert (c.sys_events, c.node_name, c.presence_topic, c.will_cause_property) == \
        (False, "edge-1", "p/{client_id}", True)
    args = build_parser().parse_args(["serve", "--config", str(f), "--sys-events", "--node-name", "edge-2",
                                      "--presence-topic", "", "--no-will-cause-property"])
    c = config_from_args(args)
    assert (c.sys_events, c.node_name, c.presence_topic, c.will_cause_property) == (True, "edge-2", "", False)
    bad = build_parser().parse_args(["serve", "--presence-topic", "nope"])
    with pytest.raises(ConfigError, match="'presence_topic'"):
        config_from_args(bad)
