"""The global bounds on real sockets (docs/security.md "Global bounds"): each reached with real
clients, the reason code on the wire, the counter in /metrics' source, and what was accepted before
(sessions, queued messages, wills) intact."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from lastwill.codec.packets import Publish, Will
from tests.integration.test_admin import metric, metrics
from tests.rawbytes import connect_packet
from tests.rawclient import RawClient, RawSocket

pytestmark = pytest.mark.integration


def limit_hits(broker, name: str) -> int:
    return broker.call(lambda: broker.broker.server.core.limit_hits.get(name, 0))


def test_max_sessions_connack_0x97_v5_and_return_code_3_v311_and_the_earlier_will_intact(broker_factory,
                                                                                        observer_factory):
    b = broker_factory(max_sessions=3)
    obs = observer_factory(b.port, "dead/#")  # session 1
    held = RawClient(b.port)
    assert held.connect("held", 5, will=Will("dead/held", b"held died", 1, False)).reason_code == 0  # session 2
    c = RawClient(b.port)
    assert c.connect("persistent", 5, clean_start=False, session_expiry_interval=600).reason_code == 0  # 3
    c.disconnect()
    refused = RawClient(b.port)
    assert refused.connect("one-more", 5).reason_code == 0x97  # Quota exceeded
    assert refused.closed_within(5)[0]
    raw = RawSocket(b.port)
    raw.send(connect_packet("one-more-311", 4))
    assert raw.read() == bytes((0x20, 2, 0, 3))  # 3.1.1: return code 3, Server unavailable
    # paho with MQTT 5 sees the reason code too
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-extra", protocol=mqtt.MQTTv5)
    codes = []
    paho.on_connect = lambda cl, u, f, rc, p=None: codes.append(rc.value)
    paho.connect("127.0.0.1", b.port)
    paho.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not codes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        paho.loop_stop()
    assert codes == [0x97]
    assert limit_hits(b, "max_sessions") == 3
    # what was accepted is intact: the persistent session resumes, the armed will goes out
    again = RawClient(b.port)
    assert again.connect("persistent", 5, clean_start=False, session_expiry_interval=600).session_present
    held.close()
    assert obs.get(10).payload == b"held died"


def test_max_total_queued_bytes_puback_0x97_and_every_accepted_message_delivered(broker_factory):
    b = broker_factory(max_total_queued_bytes=20_000, memory=True)
    sub = RawClient(b.port)
    sub.connect("slow", 5, clean_start=False, session_expiry_interval=600)
    assert sub.subscribe("q/#", 1) == [1]
    sub.disconnect()
    pub = RawClient(b.port)
    pub.connect("pub", 5)
    codes = []
    for i in range(60):
        pub.publish("q/x", i.to_bytes(2, "big") * 500, qos=1)
        codes.append(pub.expect("Puback", 10).reason_code)
    accepted = codes.count(0)
    assert 0 < accepted < 60 and set(codes[accepted:]) == {0x97}, codes  # refused from the bound on
    assert limit_hits(b, "max_total_queued_bytes") == 60 - accepted
    sub = RawClient(b.port)
    assert sub.connect("slow", 5, clean_start=False, session_expiry_interval=600).session_present
    got = []
    while len(got) < accepted:
        for p in sub.read(10):
            if isinstance(p, Publish):
                got.append(int.from_bytes(p.payload[:2], "big"))
                sub.ack([p])
    assert got == list(range(accepted))  # nothing accepted was dropped


def test_max_retained_messages_puback_0x97_with_paho(broker_factory):
    b = broker_factory(max_retained_messages=2, sys_interval=0)  # (the $SYS/broker topics are retained too)
    acks = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retainer", protocol=mqtt.MQTTv5)
    c.on_publish = lambda cl, u, mid, rc, props: acks.__setitem__(mid, rc.value)
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    try:
        infos = [c.publish(f"r/{i}", b"v", qos=1, retain=True) for i in range(3)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
    assert [acks[i.mid] for i in infos] == [0, 0, 0x97]
    assert limit_hits(b, "max_retained_messages") == 1
    assert b.call(lambda: sorted(t for t, _ in b.broker.server.core.retained.items())) == ["r/0", "r/1"]


def test_max_total_subscriptions_suback_0x97_and_0x80(broker_factory):
    b = broker_factory(max_total_subscriptions=1)
    a = RawClient(b.port)
    a.connect("a", 5)
    assert a.subscribe("t/1", 1) == [1]
    assert a.subscribe("t/2", 1) == [0x97]
    c = RawClient(b.port)
    c.connect("c", 4)
    assert c.subscribe("t/3", 1) == [0x80]
    assert limit_hits(b, "max_total_subscriptions") == 2


def test_the_bounds_are_in_metrics(broker_factory):
    b = broker_factory(max_wills=1, admin_listen="127.0.0.1:0")
    c = RawClient(b.port)
    c.connect("w", 5, will=Will("dead/w", b"x", 0, False))
    d = RawClient(b.port)
    assert d.connect("w2", 5, will=Will("dead/w2", b"x", 0, False)).reason_code == 0x97
    values = metrics(b)
    assert metric(values, "lastwill_bound_used", limit="max_wills") == 1
    assert metric(values, "lastwill_bound", limit="max_wills") == 1
    assert metric(values, "lastwill_limit_hits_total", limit="max_wills") == 1
    assert metric(values, "lastwill_bound_used", limit="max_sessions") == 1


def test_max_offline_sessions_refuse_then_expire_oldest_with_its_will(broker_factory, observer_factory):
    b = broker_factory(max_offline_sessions=2)
    for name in ("p1", "p2"):
        c = RawClient(b.port)
        assert c.connect(name, 5, clean_start=False, session_expiry_interval=600).reason_code == 0
        c.disconnect()
    c = RawClient(b.port)
    assert c.connect("p3", 5, clean_start=False, session_expiry_interval=600).reason_code == 0x97
    raw = RawSocket(b.port)
    raw.send(connect_packet("p3-311", 4, flags=0x00))  # Clean Session 0
    assert raw.read() == bytes((0x20, 2, 0, 3))
    assert limit_hits(b, "max_offline_sessions") == 2

    b = broker_factory(max_offline_sessions=2, offline_session_overflow="expire_oldest")
    obs = observer_factory(b.port, "dead/#")
    oldest = RawClient(b.port)
    assert oldest.connect("oldest", 5, clean_start=False, session_expiry_interval=600,
                          will=Will("dead/oldest", b"oldest gone", 1, False, {"will_delay_interval": 300})
                          ).reason_code == 0
    oldest.close()  # without DISCONNECT: its will waits 300 s
    time.sleep(0.05)
    for name in ("newer", "newest"):
        c = RawClient(b.port)
        assert c.connect(name, 5, clean_start=False, session_expiry_interval=600).reason_code == 0
        c.disconnect()
    # the third offline session made room: the oldest ended, its pending will published, not dropped
    assert obs.get(10).payload == b"oldest gone"
    assert sorted(b.call(lambda: list(b.broker.server.core.sessions))) == ["newer", "newest", "observer"]
    assert limit_hits(b, "max_offline_sessions") == 1


def test_max_inflight_bytes_holds_deliveries_back_until_acknowledged(broker_factory):
    b = broker_factory(max_inflight_bytes=3000)
    sub = RawClient(b.port)
    sub.connect("sub", 5)
    assert sub.subscribe("i/#", 1) == [1]
    pub = RawClient(b.port)
    pub.connect("pub", 5)
    for i in range(10):
        pub.publish("i/x", bytes([i]) * 1000, qos=1)
        assert pub.expect("Puback").reason_code == 0
    got = sub.read_until(3, 10)
    assert len(got) == 3  # 1003, 2006, 3009 bytes in flight: then it waits
    assert len(sub.read_until(4, 1.0)) == 3  # nothing more until an acknowledgement
    acked = 0
    while len(sub.received) < 10:
        assert len(sub.received) - acked <= 3  # never more than 3000 bytes unacknowledged (one may cross)
        sub.ack(sub.received[acked:])
        acked = len(sub.received)
        sub.read_until(acked + 1, 10)
    assert [p.payload[:1] for p in sub.received] == [bytes([i]) for i in range(10)]


def test_max_retained_bytes_puback_0x97_v5_and_close_v311(broker_factory):
    b = broker_factory(max_retained_bytes=1000, sys_interval=0)
    c = RawClient(b.port)
    c.connect("r5", 5)
    c.send(Publish("r/a", b"x" * 900, 1, True, False, 1))
    assert c.expect("Puback").reason_code == 0
    c.send(Publish("r/b", b"x" * 200, 1, True, False, 2))
    assert c.expect("Puback").reason_code == 0x97  # 903 + 203 bytes > 1000
    c.send(Publish("r/a", b"y" * 990, 1, True, False, 3))  # replacing: 993 bytes in all, fits
    assert c.expect("Puback").reason_code == 0
    old = RawClient(b.port)
    old.connect("r4", 4)
    old.send(Publish("r/c", b"x" * 100, 1, True, False, 1))
    assert old.closed_within(10) == (True, b"")  # 3.1.1 cannot refuse a PUBLISH: closed, no PUBACK
    assert limit_hits(b, "max_retained_bytes") == 2
    assert b.call(lambda: b.broker.server.core.retained.nbytes) == 993
