"""The limits on real sockets (docs/security.md "Limits"): slowloris connections, packets too large in
both directions, max_connections, max_publish_rate with paho-mqtt."""

from __future__ import annotations

import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Disconnect, Publish, Will
from tests.rawclient import RawClient

pytestmark = pytest.mark.integration


def limit_hits(broker, name: str) -> int:
    return broker.call(lambda: broker.broker.server.core.limit_hits.get(name, 0))


# ---- connect_timeout against slowloris -------------------------------------------------------------


def test_slowloris_silent_and_trickling_connections_closed_at_connect_timeout(broker_factory, observer_factory):
    b = broker_factory(connect_timeout=1.0)
    silent = socket.create_connection(("127.0.0.1", b.port))
    trickle = socket.create_connection(("127.0.0.1", b.port))
    connect = encode(Connect(client_id="slow", protocol_level=4, will=Will("dead/slow", b"x", 1, False)), 4)
    opened = time.monotonic()
    closed_at: dict[str, float] = {}

    def watch(name: str, sock: socket.socket) -> None:
        sock.settimeout(5)
        try:
            while sock.recv(100):
                pass
        except OSError:
            pass
        closed_at[name] = time.monotonic() - opened

    threads = [threading.Thread(target=watch, args=(n, s)) for n, s in (("silent", silent), ("trickle", trickle))]
    for t in threads:
        t.start()
    # a well-behaved client meanwhile is not held up
    obs = observer_factory(b.port, "dead/#")
    sent = 0
    for byte in connect[:-1]:  # all but the last byte, one every 0.1 s: never a whole CONNECT
        if "trickle" in closed_at:
            break
        try:
            trickle.send(bytes((byte,)))
        except OSError:
            break
        sent += 1
        time.sleep(0.1)
    for t in threads:
        t.join(6)
    assert 0.9 <= closed_at["silent"] < 2.5, closed_at
    assert 0.9 <= closed_at["trickle"] < 2.5 and sent < len(connect) - 1, (closed_at, sent)
    assert limit_hits(b, "connect_timeout") == 2
    obs.expect_none(0.3)  # no will: no CONNECT was ever accepted
    silent.close()
    trickle.close()


# ---- max_packet_size, both ways ---------------------------------------------------------------------


def test_packet_above_max_packet_size_gets_disconnect_0x95_v5_MQTT_3_2_2_15(broker_factory):
    b = broker_factory(max_packet_size=1024)
    c = RawClient(b.port)
    ack = c.connect("big5", 5)
    assert ack.properties["maximum_packet_size"] == 1024
    c.send(Publish("t", b"x" * 2000, 0))
    d = c.expect("Disconnect")
    assert d.reason_code == 0x95  # Packet too large
    assert c.closed_within(2)[0]
    assert limit_hits(b, "max_packet_size") == 1


def test_packet_above_max_packet_size_closes_v311_MQTT_4_8_0_1(broker_factory):
    b = broker_factory(max_packet_size=1024)
    c = RawClient(b.port)
    c.connect("big4", 4)
    # only the fixed header of a 100 kB PUBLISH: refused as soon as its Remaining Length is read
    c.send_raw(b"\x30\xa0\x8d\x06")
    closed, got = c.closed_within(3)
    assert closed and got == b""  # 3.1.1: closed without a word
    assert limit_hits(b, "max_packet_size") == 1


def test_message_above_the_clients_maximum_packet_size_not_sent_v5_MQTT_3_1_2_24(broker_factory):
    b = broker_factory()
    small = RawClient(b.port)
    small.connect("small", 5, maximum_packet_size=200)
    assert small.subscribe("t/#", 1) == [1]
    pub = RawClient(b.port)
    pub.connect("pub", 5)
    pub.publish("t/big", b"x" * 300, 1)
    pub.publish("t/ok", b"y" * 50, 1)
    assert [a.reason_code for a in (pub.expect("Puback"), pub.expect("Puback"))] == [0, 0]
    p = small.expect("Publish")
    assert (p.topic, p.payload) == ("t/ok", b"y" * 50)  # the big one was dropped for this client only
    closed, got = small.closed_within(0.3)
    assert not closed and got == b""
    assert b.call(lambda: b.broker.server.core.stats["dropped_too_large"]) == 1


# ---- max_connections ----------------------------------------------------------------------------


def test_max_connections_refuses_at_accept_and_frees_the_slot(broker_factory):
    b = broker_factory(max_connections=3)
    clients = [RawClient(b.port) for _ in range(3)]
    for i, c in enumerate(clients):
        assert c.connect(f"c{i}", 5).reason_code == 0
    extra = RawClient(b.port)
    closed, got = extra.closed_within(2)
    assert closed and got == b""  # closed before anything was read
    late = RawClient(b.port)  # even one that sends its CONNECT at once
    with pytest.raises((ConnectionError, OSError)):
        late.connect("late", 5)
    assert limit_hits(b, "max_connections") == 2
    # the clients inside are served as before
    assert clients[0].subscribe("x", 1) == [1]
    clients[1].publish("x", b"hello", 1)
    assert clients[0].expect("Publish").payload == b"hello"
    clients[2].disconnect()
    time.sleep(0.3)
    again = RawClient(b.port)
    assert again.connect("again", 5).reason_code == 0


# ---- max_publish_rate with paho-mqtt ---------------------------------------------------------------


def test_publish_rate_refused_with_puback_0x97_paho_v5_MQTT_3_4_2_1(broker_factory, observer_factory):
    b = broker_factory(max_publish_rate=20)
    obs = observer_factory(b.port, "rate/#")
    codes: list[int] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fast", protocol=mqtt.MQTTv5)

    def on_publish(client, userdata, mid, reason_code, properties):
        codes.append(reason_code.value)
        if len(codes) == 60:
            done.set()
    c.on_publish = on_publish
    c.connect("127.0.0.1", b.port)
    c.loop_start()
    try:
        started = time.monotonic()
        for i in range(60):  # at once: 20 fit in the bucket, which refills at 20 per second
            c.publish("rate/t", str(i).encode(), 1)
        assert done.wait(10)
        elapsed = time.monotonic() - started
        accepted = codes.count(0)
        assert 20 <= accepted <= 20 + 20 * elapsed + 1, (codes, elapsed)
        assert codes.count(0x97) == 60 - accepted > 0, codes  # Quota exceeded
        got = []
        while True:
            try:
                got.append(obs.get(0.5).payload)
            except Exception:
                break
        assert len(got) == accepted  # refused messages were not routed
        time.sleep(1.0)  # the bucket refills: 20 per second
        info = c.publish("rate/t", b"later", 1)
        info.wait_for_publish(5)
        assert codes[-1] == 0 and c.is_connected()
    finally:
        c.disconnect()
        c.loop_stop()


def test_subscriptions_per_client_suback_0x97_on_a_socket_v5_MQTT_3_9_3_1(broker_factory):
    b = broker_factory(max_subscriptions_per_client=2)
    c = RawClient(b.port)
    c.connect("subs", 5)
    assert c.subscribe("a", 1) == [1]
    assert c.subscribe("b", 1) == [1]
    assert c.subscribe("c", 1) == [0x97]
    c.send(Disconnect())
