"""Will rules end to end: paho-mqtt clients (3.1, 3.1.1 and 5.0) against a real lastwill on a real socket.

Each test runs twice: on one broker, and on a cluster of two ``lastwill serve --cluster`` nodes on a real
redis-server, with the will's client on one node and the observer on the other (issue 12)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tests.integration.conftest import StepClient

pytestmark = pytest.mark.integration


@dataclass
class Ports:
    port: int  # where the client with the will (and a test's other clients) connects
    observer_port: int  # where the observer of the will connects


@pytest.fixture(params=["one-node", "two-nodes"])
def broker(request):
    if request.param == "one-node":
        b = request.getfixturevalue("lastwill_broker")
        return Ports(b.port, b.port)
    n1, n2 = request.getfixturevalue("cluster_nodes")
    return Ports(n1.port, n2.port)


@pytest.fixture(scope="module")
def cluster_redis(tmp_path_factory):
    from tests.cluster.redis_proc import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster_nodes(cluster_redis, tmp_path):
    from tests.cluster.nodes import Cluster

    cluster = Cluster(tmp_path, cluster_redis)
    cluster.client.flushall()
    nodes = cluster.start("n1", "n2")
    yield nodes
    cluster.stop()
    assert not cluster.tracebacks(), "\n".join(cluster.tracebacks())


@pytest.mark.parametrize("version", [3, 4, 5])
def test_paho_crash_publishes_will_MQTT_3_1_2_8(broker, observer_factory, version):
    obs = observer_factory(broker.observer_port, "test/lwt", version=5 if version == 5 else 4)
    c = StepClient(broker.port, f"dev-{version}", version=version, will=("test/lwt", b"dead", 1, False))
    c.publish("test/lwt", b"alive")
    c.crash()
    first, second = obs.get(), obs.get()
    assert (first.payload, second.payload) == (b"alive", b"dead")
    assert second.qos == 1 and not second.retain
    obs.expect_none(0.5)  # exactly once


@pytest.mark.parametrize("version", [4, 5])
def test_paho_normal_disconnect_no_will_MQTT_3_14_4_3(broker, observer_factory, version):
    obs = observer_factory(broker.observer_port, "test/lwt", version=version)
    c = StepClient(broker.port, "dev", version=version, will=("test/lwt", b"dead", 1, False))
    c.publish("test/lwt", b"alive")
    c.disconnect()
    assert obs.get().payload == b"alive"
    obs.expect_none(1.0)


def test_paho_keep_alive_expiry_publishes_will_v5_MQTT_3_1_2_22(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "ka/#")
    c = StepClient(broker.port, "sleepy", version=5, keepalive=1, will=("ka/sleepy", b"timeout", 1, False))
    t0 = time.monotonic()
    # the client now goes silent: no loop(), so no PINGREQ
    m = obs.get(timeout=5)
    elapsed = time.monotonic() - t0
    assert m.payload == b"timeout"
    assert 1.3 <= elapsed < 3.0, elapsed  # 1.5 x 1 s after the last packet (no sweep delay)
    del c


def test_paho_will_delay_then_published_v5_MQTT_3_1_3_9(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "wd/#")
    c = StepClient(broker.port, "delayed", version=5, will=("wd/x", b"late", 1, False),
                   will_props={"WillDelayInterval": 1}, session_expiry=10)
    t0 = time.monotonic()
    c.crash()
    obs.expect_none(0.7)
    m = obs.get(timeout=3)
    assert m.payload == b"late" and time.monotonic() - t0 >= 0.95


def test_paho_reconnect_clean_start_0_cancels_delayed_will_v5_MQTT_3_1_3_9(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "wd/#")
    c = StepClient(broker.port, "flaky", version=5, will=("wd/flaky", b"late", 1, False),
                   will_props={"WillDelayInterval": 2}, session_expiry=60)
    c.crash()
    time.sleep(0.3)
    again = StepClient(broker.port, "flaky", version=5, clean=False, session_expiry=60)
    assert again.connack[0].session_present
    obs.expect_none(2.5)


def test_paho_reconnect_clean_start_1_publishes_pending_will_v5_MQTT_3_1_2_4(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "wd/#")
    c = StepClient(broker.port, "fresh", version=5, will=("wd/fresh", b"gone", 1, False),
                   will_props={"WillDelayInterval": 30}, session_expiry=60)
    c.crash()
    time.sleep(0.2)
    StepClient(broker.port, "fresh", version=5, clean=True)
    assert obs.get(timeout=2).payload == b"gone"


def test_paho_disconnect_with_will_message_v5_MQTT_3_14_2_1(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "dw/#")
    c = StepClient(broker.port, "leaver", version=5, will=("dw/leaver", b"bye", 0, False))
    c.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    assert obs.get(timeout=2).payload == b"bye"


def test_paho_retained_will_seen_by_late_subscriber_v311_MQTT_3_1_2_17(broker, observer_factory):
    c = StepClient(broker.port, "ret", version=4, will=("status/ret", b"offline", 1, True))
    c.crash()
    time.sleep(0.3)
    late = observer_factory(broker.observer_port, "status/#", client_id="late")
    m = late.get(timeout=2)
    assert (m.payload, m.retain) == (b"offline", True)


def test_paho_takeover_publishes_will_v311_MQTT_3_1_4_3(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "to/#", version=4)
    StepClient(broker.port, "dup", version=4, will=("to/dup", b"taken", 1, False))
    StepClient(broker.port, "dup", version=4)
    assert obs.get(timeout=2).payload == b"taken"


def test_paho_will_user_properties_in_order_v5_MQTT_3_1_3_10(broker, observer_factory):
    obs = observer_factory(broker.observer_port, "up/#")
    c = StepClient(broker.port, "props", version=5, will=("up/x", b"p", 1, False),
                   will_props={"UserProperty": [("b", "1"), ("a", "2"), ("b", "3")],
                               "ContentType": "text/plain"})
    c.crash()
    m = obs.get(timeout=2)
    assert m.properties.UserProperty == [("b", "1"), ("a", "2"), ("b", "3")]
    assert m.properties.ContentType == "text/plain"


@pytest.mark.parametrize("version", [4, 5])
def test_paho_qos_round_trip(broker, version):
    got = []
    proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rt-sub", protocol=proto)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("rt/#", 2)
    sub.loop_start()
    time.sleep(0.2)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rt-pub", protocol=proto)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    infos = [pub.publish(f"rt/{q}", f"m{q}".encode(), q) for q in (0, 1, 2)]
    for info in infos:
        info.wait_for_publish(5)
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()
    assert sorted(got) == [("rt/0", b"m0", 0), ("rt/1", b"m1", 1), ("rt/2", b"m2", 2)]


def _raw_client_with_will(port: int, client_id: str, topic: str):
    """A raw TCP client that sends an MQTT 3.1.1 CONNECT with a will and waits for its CONNACK."""
    from lastwill.codec.encoder import encode
    from lastwill.codec.packets import Connect, Will
    from tests.rawclient import RawSocket

    c = RawSocket(port)
    c.send(encode(Connect(client_id=client_id, protocol_level=4, keep_alive=60,
                          will=Will(topic, b"gone", 1, False)), 4))
    assert c.read() == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return c.sock


def test_half_close_publishes_will_v311_MQTT_3_1_2_8(broker, observer_factory):
    import socket

    obs = observer_factory(broker.observer_port, "hc/#", version=4)
    sock = _raw_client_with_will(broker.port, "half-closer", "hc/half")
    sock.shutdown(socket.SHUT_WR)  # FIN without DISCONNECT: the MQTT connection is over
    m = obs.get(timeout=3)
    assert (m.topic, m.payload) == ("hc/half", b"gone")
    sock.close()
    obs.expect_none(0.5)


def test_connection_reset_publishes_will_v311_MQTT_3_1_2_8(broker, observer_factory):
    import socket
    import struct

    obs = observer_factory(broker.observer_port, "rst/#", version=4)
    sock = _raw_client_with_will(broker.port, "resetter", "rst/x")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # linger 0: the kernel sends RST
    m = obs.get(timeout=3)
    assert (m.topic, m.payload) == ("rst/x", b"gone")
    obs.expect_none(0.5)
