"""The cluster as clients see it: real ``lastwill serve --cluster`` processes on one real redis-server,
paho-mqtt clients on different nodes (issue 12)."""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.conftest import Observer, StepClient

from .nodes import wait_until


def observe(cluster, port, topic, qos=2, version=5, client_id="observer"):
    o = Observer(port, topic, qos=qos, version=version, client_id=client_id)
    cluster.made.append(o)
    return o


class Client:
    """A paho-mqtt client on a background loop: CONNACK, messages and DISCONNECT seen."""

    def __init__(self, port: int, client_id: str, version: int = 5, clean: bool = True,
                 session_expiry: int | None = None, will: tuple | None = None, will_delay: int | None = None):
        proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kw = {} if version == 5 else {"clean_session": clean}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
        self.messages: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None
        self.disconnect_reason = None
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_disconnect = self._on_disconnect
        if will:
            wp = None
            if will_delay is not None:
                wp = Properties(PacketTypes.WILLMESSAGE)
                wp.WillDelayInterval = will_delay
            self.client.will_set(*will, properties=wp)
        connect_kw = {}
        if version == 5:
            connect_kw["clean_start"] = clean
            if session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry
                connect_kw["properties"] = props
        self.client.connect("127.0.0.1", port, keepalive=60, **connect_kw)
        self.client.loop_start()
        assert self.connected.wait(30), "no CONNACK"

    def _on_connect(self, c, u, flags, rc, props):
        self.connack = (flags, rc)
        self.connected.set()

    def _on_disconnect(self, c, u, flags, rc, props):
        self.disconnect_reason = rc
        self.disconnected.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(30), "no SUBACK"

    def get(self, timeout: float = 30.0):
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def crash(self) -> None:
        self.client.loop_stop()
        self.client.socket().close()


def drain(q: queue.Queue, within: float) -> list:
    out = []
    deadline = time.monotonic() + within
    while True:
        try:
            out.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return out


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_publish_on_one_node_reaches_subscribers_on_the_others(cluster, qos):
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    observers = [observe(cluster, n.port, "t/#", qos=qos, client_id=f"obs-{n.node_id}") for n in (n2, n3)]
    local = observe(cluster, n1.port, "t/#", qos=qos, client_id="obs-n1")
    pub = StepClient(n1.port, "pub")
    for i in range(5):
        pub.publish("t/x", f"m{i}".encode(), qos)
    for o in (*observers, local):
        got = [o.get(30) for _ in range(5)]
        # in order, from one publisher, at the QoS of the publish [MQTT-4.6.0-5]
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
        assert all(m.qos == qos for m in got)
        o.expect_none(0.5)
    pub.disconnect()


def test_a_retained_message_set_on_one_node_is_sent_to_a_new_subscriber_on_another_MQTT_3_3_1_9(cluster):
    n1, n2 = cluster.start("n1", "n2")
    pub = StepClient(n1.port, "pub")
    info = pub.client.publish("r/a", b"kept", 1, retain=True)
    while not info.is_published():
        pub.client.loop(0.05)
    o = observe(cluster, n2.port, "r/#", qos=1)
    m = o.get(30)
    assert (m.topic, m.payload, m.retain) == ("r/a", b"kept", True)  # RETAIN 1 [MQTT-3.3.1-8]
    pub.disconnect()


def test_a_shared_subscription_gets_each_message_once_in_the_whole_cluster(cluster):
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    members = [observe(cluster, n.port, "$share/g/s/#", qos=1, client_id=f"member-{n.node_id}") for n in (n2, n3)]
    time.sleep(1.0)  # both subscriptions reach every node's table (a beat)
    pub = StepClient(n1.port, "pub")
    for i in range(20):
        pub.publish("s/x", f"{i}".encode(), 1)
    got: list = []
    wait_until(lambda: sum(m.messages.qsize() for m in members) >= 20, 60, "20 deliveries")
    for m in members:
        got += [x.payload for x in drain(m.messages, 0.5)]
    assert sorted(got) == sorted(f"{i}".encode() for i in range(20))  # each once
    assert all(m.messages.qsize() == 0 for m in members)
    pub.disconnect()


def test_a_session_resumes_on_another_node_with_its_queued_messages_MQTT_3_2_2_3(cluster):
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    c = Client(n1.port, "roamer", session_expiry=300)
    c.subscribe("q/#", 1)
    c.close()
    wait_until(lambda: "disconnect client_id=roamer" in n1.log_text(), 30, "the disconnect on n1")
    pub = StepClient(n3.port, "pub")
    for i in range(3):
        pub.publish("q/x", f"queued{i}".encode(), 1)
    pub.disconnect()
    back = Client(n2.port, "roamer", clean=False, session_expiry=300)
    cluster.made.append(back)
    assert back.connack[0].session_present  # [MQTT-3.2.2-3]
    got = [back.get(30).payload for _ in range(3)]
    assert got == [b"queued0", b"queued1", b"queued2"]
    # and its subscription came with it: a new publish on n1 reaches it on n2
    pub = StepClient(n1.port, "pub2")
    pub.publish("q/y", b"live", 1)
    assert back.get(30).payload == b"live"
    pub.disconnect()


def test_a_takeover_across_nodes_closes_the_old_connection_with_0x8E_and_publishes_its_will_MQTT_3_1_4_3(cluster):
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    o = observe(cluster, n3.port, "will/#")
    old = Client(n1.port, "dup", will=("will/dup", b"gone", 1))
    cluster.made.append(old)
    new = Client(n2.port, "dup")
    cluster.made.append(new)
    assert old.disconnected.wait(30)
    assert old.disconnect_reason == 0x8E  # Session taken over [MQTT-3.1.4-3]
    m = o.get(30)
    assert (m.topic, m.payload) == ("will/dup", b"gone")
    o.expect_none(1.0)  # once


def test_a_delayed_will_is_cancelled_by_a_reconnect_on_another_node_MQTT_3_1_3_9(cluster):
    n1, n2 = cluster.start("n1", "n2")
    o = observe(cluster, n2.port, "will/#")
    c = Client(n1.port, "dev", session_expiry=60, will=("will/dev", b"dead", 1), will_delay=3)
    c.crash()
    wait_until(lambda: "disconnect client_id=dev" in n1.log_text(), 30, "the end of the connection on n1")
    back = Client(n2.port, "dev", clean=False, session_expiry=60)
    cluster.made.append(back)
    assert back.connack[0].session_present
    o.expect_none(4.5)  # the will delay passed: nothing was published [MQTT-3.1.3-9]
    assert cluster.audit() == []


@pytest.mark.parametrize("version", [4, 5])
def test_a_will_on_one_node_reaches_a_subscriber_on_another_when_the_connection_drops_MQTT_3_1_2_8(cluster, version):
    n1, n2 = cluster.start("n1", "n2")
    o = observe(cluster, n2.port, "will/#")
    c = Client(n1.port, f"w{version}", version=version, will=("will/w", b"bye", 2))
    c.crash()
    m = o.get(30)
    assert (m.topic, m.payload, m.qos) == ("will/w", b"bye", 2)
    o.expect_none(1.0)
    records = cluster.audit()
    assert [(r["cid"], r["node"], r["status"]) for r in records] == [(f"w{version}", "n1", "FIRED")]


def test_start_up_refuses_an_engine_that_would_lose_wills_naming_the_setting(tmp_path):
    import subprocess
    import sys

    from .redis_proc import REDIS_SERVER, free_port

    port = free_port()
    redis_proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                __import__("socket").create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        done = subprocess.run([sys.executable, "-m", "lastwill", "serve", "--listen", "127.0.0.1:0",
                               "--cluster", f"redis://127.0.0.1:{port}/0"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "'appendonly' is 'no'" in done.stderr and "cluster_unsafe_engine" in done.stderr
    finally:
        redis_proc.kill()
        redis_proc.wait()


def test_message_expiry_no_local_and_subscription_identifiers_across_nodes(cluster):
    """[MQTT-3.3.2-5] an expired message is not delivered; [MQTT-3.3.2-6] the interval is counted down;
    [MQTT-3.8.3-3] No Local; [MQTT-3.3.4-3] the subscription identifier comes with the message."""
    n1, n2 = cluster.start("n1", "n2")
    offline = Client(n2.port, "sleeper", session_expiry=300)
    offline.subscribe("e/#", 1)
    offline.close()
    wait_until(lambda: "disconnect client_id=sleeper" in n2.log_text(), 30, "the disconnect")
    watcher = Client(n2.port, "watcher")
    cluster.made.append(watcher)
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = 7
    done = threading.Event()
    watcher.client.on_subscribe = lambda *a: done.set()
    watcher.client.subscribe("e/#", options=mqtt.SubscribeOptions(qos=1), properties=props)
    assert done.wait(30)
    talker = Client(n1.port, "talker")
    cluster.made.append(talker)
    done.clear()
    talker.client.on_subscribe = lambda *a: done.set()
    talker.client.subscribe("e/#", options=mqtt.SubscribeOptions(qos=1, noLocal=True))
    assert done.wait(30)
    for payload, expiry in ((b"short", 1), (b"long", 60)):
        p = Properties(PacketTypes.PUBLISH)
        p.MessageExpiryInterval = expiry
        talker.client.publish("e/x", payload, 1, properties=p).wait_for_publish(30)
    got = [watcher.get(30) for _ in range(2)]
    assert [m.payload for m in got] == [b"short", b"long"]
    assert got[0].properties.SubscriptionIdentifier == [7]
    assert talker.messages.empty()  # its own messages are not sent back to it (No Local)
    time.sleep(2.5)  # the short one's interval passes while its subscriber is offline
    back = Client(n1.port, "sleeper", clean=False, session_expiry=300)
    cluster.made.append(back)
    m = back.get(30)
    assert m.payload == b"long" and 0 < m.properties.MessageExpiryInterval <= 60
    assert [x.payload for x in drain(back.messages, 1.0)] == []
    assert talker.messages.empty()


def test_a_takeover_on_the_same_node_closes_the_old_connection_with_0x8E_and_publishes_its_will_once(cluster):
    n1, n2 = cluster.start("n1", "n2")
    o = observe(cluster, n2.port, "will/#")
    old = Client(n1.port, "twin", will=("will/twin", b"gone", 1))
    cluster.made.append(old)
    new = Client(n1.port, "twin")
    cluster.made.append(new)
    assert old.disconnected.wait(30)
    assert old.disconnect_reason == 0x8E  # [MQTT-3.1.4-3]
    assert o.get(30).payload == b"gone"
    o.expect_none(1.0)
    assert len(cluster.audit()) == 1
