"""Issue 12, "Redis down": the node keeps serving the clients it can serve. Real redis-server (killed
with kill -9, restarted from its AOF), real `lastwill serve --cluster` nodes, paho and raw clients.

While the engine cannot be reached, a CONNECT with nothing to keep (Clean Start 1 / clean session 1,
no will, Session Expiry 0) is accepted and served by its node alone (QoS 0 to the node's own
subscribers); one with a will or a lasting session is refused with 0x88 (3.1.1: return code 3). When
the engine is back, the node claims those clients there: they are in the cluster's client list, their
subscriptions in its table, and messages from other nodes reach them."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from lastwill.codec.packets import Will
from tests.integration.conftest import Observer
from tests.rawclient import RawClient

from .nodes import wait_until
from .test_admin_cluster import get


def connect_when_ready(port: int, client_id: str, timeout: float = 60.0) -> RawClient:
    """A clean MQTT 5 client, retried while the node is fencing itself (it may be served alone at first)."""
    deadline = time.monotonic() + timeout
    while True:
        c = RawClient(port, timeout=30)
        try:
            if c.connect(client_id, 5).reason_code == 0:
                return c
        except (OSError, AssertionError):
            pass
        c.close()
        assert time.monotonic() < deadline, f"{client_id}: no CONNACK 0"
        time.sleep(0.2)


def test_clients_with_nothing_to_keep_are_served_while_redis_is_down_and_claimed_when_it_is_back(cluster):
    n1, n2 = cluster.start("n1", "n2", admin=True)
    cluster.redis_server.kill9()
    try:
        # Clean Start 1, no will, Session Expiry 0: accepted (paho asserts its SUBACK)
        sub = Observer(n1.port, "local/#", qos=1, version=5, client_id="plain")
        cluster.made.append(sub)
        c4 = RawClient(n1.port, timeout=30)
        assert c4.connect("plain4", 4).reason_code == 0  # 3.1.1 clean session 1, no will
        pub = RawClient(n1.port, timeout=30)
        assert pub.connect("pub", 5).reason_code == 0
        pub.publish("local/a", b"during", 0)
        assert sub.get(30).payload == b"during"  # QoS 0 from this node's own clients, served here
        # a will or a lasting session: refused, nothing accepted without its will being safe
        w5 = RawClient(n1.port, timeout=30)
        assert w5.connect("w5", 5, will=Will("will/w5", b"x", 1)).reason_code == 0x88  # Server unavailable
        w4 = RawClient(n1.port, timeout=30)
        assert w4.connect("w4", 4, will=Will("will/w4", b"x", 1)).reason_code == 0x88  # 3.1.1 rc 3
        p5 = RawClient(n1.port, timeout=30)
        assert p5.connect("p5", 5, session_expiry_interval=60).reason_code == 0x88
        p4 = RawClient(n1.port, timeout=30)
        assert p4.connect("p4", 4, clean_start=False).reason_code == 0x88
        # longer than the lease: the node fences itself, and keeps the clients the engine never had
        n1.wait_for_log("fenced itself")
        pub.publish("local/b", b"fenced", 0)
        assert sub.get(30).payload == b"fenced"
    finally:
        cluster.redis_server.start()
    wait_until(lambda: {"plain", "plain4", "pub"} <= {c["client_id"] for c in get(n2, "/api/clients")["clients"]
                                                      if c["node"] == "n1"}, 60, "n1's clients in the engine")
    wait_until(lambda: cluster.client.hexists("lw:subs:plain", "local/#"), 30, "the subscription in the engine")
    other = connect_when_ready(n2.port, "remote")
    wait_until(lambda: cluster.client.hget("lw:sess:remote", "node") == b"n2", 60, "n2 holding its client")
    other.publish("local/c", b"from-n2", 1)
    assert other.expect("Puback", 30)
    assert sub.get(30).payload == b"from-n2"
    text = n1.log_text()
    assert text.count("cannot be reached:") == 1  # logged once for the outage, not per packet
    assert "w5" not in {c["client_id"] for c in get(n1, "/api/clients")["clients"]}


def test_a_client_id_taken_on_another_node_during_the_outage_closes_the_local_connection_MQTT_3_1_4_3(cluster):
    n1, n2 = cluster.start("n1", "n2")
    cluster.redis_server.kill9()
    try:
        ended = []
        old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="twin", protocol=mqtt.MQTTv5)
        old.on_disconnect = lambda c, u, flags, rc, props: ended.append(rc)
        old.connect("127.0.0.1", n1.port, keepalive=60)
        old.loop_start()
        wait_until(old.is_connected, 30, "the CONNACK of the client served alone")
        n1.wait_for_log("fenced itself")
        n1.pause()  # (so that n2's CONNECT comes before n1 can claim its connection)
    finally:
        cluster.redis_server.start()
    try:  # the same client id connects on n2: the newer connection, in the engine before n1 claims its own
        newer = connect_when_ready(n2.port, "twin")
        wait_until(lambda: cluster.client.hget("lw:sess:twin", "node") == b"n2", 60, "n2 holding twin")
    finally:
        n1.resume()
    wait_until(lambda: ended, 60, "the takeover of the older connection")
    old.loop_stop()
    assert ended[0].value == 0x8E  # DISCONNECT Session taken over [MQTT-3.1.4-3]
    n1.wait_for_log("connected again elsewhere after this node accepted it")
    assert cluster.client.hget("lw:sess:twin", "node") == b"n2"
    newer.close()
