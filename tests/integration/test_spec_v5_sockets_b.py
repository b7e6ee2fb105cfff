"""MQTT 5.0 section 4.2 on a real socket: the broker speaks MQTT over TCP, an ordered, lossless
stream of bytes, whatever the segmentation; and a complete MQTT 5 session with paho-mqtt.
"""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    Subscription,
)
from tests.rawclient import RawClient

pytestmark = pytest.mark.integration


def _session_bytes(n: int) -> bytes:
    """CONNECT, SUBSCRIBE, then n PUBLISH (QoS 0, 1, 2 in turn) to the subscribed topic, PINGREQ."""
    parts = [
        encode(Connect(client_id="stream", protocol_level=5, keep_alive=30), 5),
        encode(Subscribe(1, [Subscription("s/#", 2)]), 5),
    ]
    for i in range(n):
        qos = i % 3
        parts.append(encode(Publish(f"s/{i}", b"payload-%d-" % i + bytes(range(256)) * (i % 4), qos, False, False,
                                    100 + i if qos else None), 5))
    parts.append(encode(Pingreq(), 5))
    return b"".join(parts)


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_v5_stream_split_at_any_byte_processed_in_order_MQTT_4_2_1_MQTT_4_2_0_1(broker, piece):
    n = 24
    c = RawClient(broker.port, level=5, nodelay=True)
    try:
        c.send_in_pieces(_session_bytes(n), piece)
        # CONNACK, SUBACK, per PUBLISH: its echo (+ PUBACK / PUBREC), and PINGRESP
        qos1 = sum(1 for i in range(n) if i % 3 == 1)
        qos2 = sum(1 for i in range(n) if i % 3 == 2)
        got = c.read_until(2 + n + qos1 + qos2 + 1)
        assert isinstance(got[0], Connack) and got[0].reason_code == 0
        assert isinstance(got[1], Suback) and got[1].reason_codes == [2]
        assert isinstance(got[-1], Pingresp)
        echoes = [p for p in got if isinstance(p, Publish)]
        for qos in (0, 1, 2):  # nothing lost, nothing reordered, nothing altered
            assert [(p.topic, p.payload) for p in echoes if p.qos == qos] == [
                (f"s/{i}", b"payload-%d-" % i + bytes(range(256)) * (i % 4)) for i in range(n) if i % 3 == qos]
        assert [a.packet_id for a in got if isinstance(a, Puback)] == [100 + i for i in range(n) if i % 3 == 1]
        assert [a.packet_id for a in got if isinstance(a, Pubrec)] == [100 + i for i in range(n) if i % 3 == 2]
    finally:
        c.close()


def test_v5_packets_split_across_slow_segments_MQTT_4_2_1_MQTT_4_2_0_1(broker):
    """A packet arriving in pieces, with pauses between them, is read as one packet."""
    c = RawClient(broker.port, level=5, nodelay=True)
    try:
        c.send_in_pieces(encode(Connect(client_id="slow", protocol_level=5, keep_alive=30), 5), 3, pause=0.02)
        assert isinstance(c.read_until(1)[0], Connack)
        pub = encode(Publish("slow/t", b"x" * 300, 1, False, False, 9), 5)
        c.send_in_pieces(pub, 50, pause=0.02)
        c.read_until(2)
        assert isinstance(c.received[1], Puback) and c.received[1].packet_id == 9
        c.sock.sendall(encode(Disconnect(0), 5))
        c.sock.settimeout(5)
        assert c.sock.recv(10) == b""  # the broker closed its end after DISCONNECT
    finally:
        c.close()


def test_v5_complete_paho_session_qos_0_1_2_MQTT_4_2_1_MQTT_4_2_0_1(broker):
    """connect, subscribe, publish at QoS 0, 1 and 2, receive each once in order, disconnect."""
    received: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="v5-sub", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: received.put(m)
    sub.on_subscribe = lambda *a: subscribed.set()
    connected = threading.Event()
    sub.on_connect = lambda c, u, flags, rc, props: connected.set()
    sub.connect("127.0.0.1", broker.port, keepalive=30, clean_start=True)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="v5-pub", protocol=mqtt.MQTTv5)
    try:
        assert connected.wait(5)
        sub.subscribe("full/#", qos=2)
        assert subscribed.wait(5)
        pub.connect("127.0.0.1", broker.port, keepalive=30)
        pub.loop_start()
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("k", "v")
        infos = [pub.publish(f"full/{q}", f"q{q}".encode(), qos=q, properties=props) for q in (0, 1, 2)]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published()
        msgs = [received.get(timeout=5) for _ in range(3)]
        assert [(m.topic, m.payload, m.qos) for m in msgs] == [
            ("full/0", b"q0", 0), ("full/1", b"q1", 1), ("full/2", b"q2", 2)]
        assert all(("k", "v") in m.properties.UserProperty for m in msgs)
        with pytest.raises(queue.Empty):
            received.get(timeout=0.5)  # each exactly once
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
    # both sessions ended cleanly (Session Expiry Interval 0): nothing left on the broker
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and broker.call(lambda: len(broker.broker.core.sessions)):
        time.sleep(0.05)
    assert broker.call(lambda: len(broker.broker.core.sessions)) == 0
