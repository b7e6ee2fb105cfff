"""A QoS 2 delivery in flight when its node dies (kill -9) is not delivered twice when the session
resumes on another node: the new node sends it again with the same packet id and DUP 1, or its PUBREL
when the PUBREC had been received [MQTT-4.4.0-1] [MQTT-4.3.3-6], so the client's QoS 2 receiver state
deduplicates it [MQTT-4.3.3-10]. Real redis-server, real nodes, raw MQTT 5 clients (which packet id and
DUP flag come, and when, is what is checked)."""

from __future__ import annotations

import time

from lastwill.codec.packets import Pubcomp, Pubrec, Pubrel
from tests.rawclient import RawClient

from .nodes import wait_until


def resume(port: int, client_id: str) -> RawClient:
    """Connect again with Clean Start 0 until a node holds the session (the dead node's lease ends)."""
    deadline = time.monotonic() + 60
    while True:
        c = RawClient(port, timeout=30)
        ack = c.connect(client_id, 5, clean_start=False, session_expiry_interval=300)
        if ack.reason_code == 0:
            assert ack.session_present
            return c
        c.close()
        assert time.monotonic() < deadline, "no node took the session back"
        time.sleep(0.2)


def publish_qos2(port: int, payloads: list[bytes]) -> None:
    pub = RawClient(port, timeout=30)
    assert pub.connect("pub", 5).reason_code == 0
    for payload in payloads:
        pid = pub.publish("q2/x", payload, 2)
        pub.expect("Pubrec", 30)
        pub.send(Pubrel(pid))
        pub.expect("Pubcomp", 30)
    pub.close()


def test_a_qos_2_publish_in_flight_when_its_node_dies_comes_again_with_its_packet_id_and_dup_MQTT_4_4_0_1(cluster):
    n1, n2 = cluster.start("n1", "n2")
    sub = RawClient(n2.port, timeout=30)
    assert sub.connect("keeper", 5, clean_start=True, session_expiry_interval=300).reason_code == 0
    assert sub.subscribe("q2/#", 2) == [2]
    publish_qos2(n1.port, [b"first", b"second"])
    got = sub.read_until(2, 30)  # both PUBLISHes; the first answered with PUBREC, the second not at all
    first, second = got
    assert (first.payload, second.payload) == (b"first", b"second")
    sub.send(Pubrec(first.packet_id))
    rel = sub.expect("Pubrel", 30)
    assert rel.packet_id == first.packet_id  # (no PUBCOMP: the first is in PUBREL state, the second unanswered)
    marks = {f"{first.packet_id} pubcomp".encode(), f"{second.packet_id} pubrec".encode()}
    wait_until(lambda: set(cluster.client.hvals("lw:qst:keeper")) == marks, 30, "both marks in the engine")
    n2.kill9()
    sub.close()
    back = resume(n1.port, "keeper")
    packets = back.read_until(2, 30)
    by_kind = {type(p).__name__: p for p in packets}
    assert set(by_kind) == {"Pubrel", "Publish"}, packets
    assert by_kind["Pubrel"].packet_id == first.packet_id  # the PUBREL again, not the PUBLISH [MQTT-4.3.3-6]
    again = by_kind["Publish"]
    assert (again.payload, again.packet_id, again.dup) == (b"second", second.packet_id, True)
    back.send(Pubcomp(first.packet_id))
    back.send(Pubrec(again.packet_id))
    assert back.expect("Pubrel", 30).packet_id == again.packet_id
    back.send(Pubcomp(again.packet_id))
    wait_until(lambda: cluster.client.xlen("lw:q:keeper") == 0, 30, "both entries acknowledged")
    assert cluster.client.exists("lw:qst:keeper") == 0
    back.close()



def test_a_paho_subscriber_resumed_on_another_node_gets_each_qos_2_message_once_MQTT_4_3_3_10(cluster):
    """paho (MQTT 5, Clean Start 0 on its return) hands a QoS 2 message to the application at the PUBREL;
    with manual acknowledgements it sends no PUBCOMP until told, so the node that dies (kill -9) has three
    messages in PUBREL state. The node that resumes the session sends their PUBRELs again, not new
    PUBLISHes (which paho would hand over a second time, as new messages under new packet ids)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    n1, n2 = cluster.start("n1", "n2")
    received: list[tuple[bytes, int]] = []
    acking = threading.Event()

    def on_message(client, userdata, m) -> None:
        received.append((m.payload, m.mid))
        if acking.is_set():
            client.ack(m.mid, m.qos)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pahokeeper", protocol=mqtt.MQTTv5, manual_ack=True)
    c.on_message = on_message
    log: list[str] = []
    c.on_log = lambda client, userdata, level, text: log.append(text)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    c.connect("127.0.0.1", n2.port, keepalive=60, clean_start=True, properties=props)
    c.loop_start()
    try:
        wait_until(c.is_connected, 30, "paho connected to n2")
        c.subscribe("q2/#", 2)
        wait_until(lambda: cluster.client.hexists("lw:subs:pahokeeper", "q2/#"), 30, "the subscription")
        publish_qos2(n1.port, [b"m0", b"m1", b"m2"])
        wait_until(lambda: len(received) == 3, 30, "three messages at the application")
        wait_until(lambda: sorted(v.split()[1] for v in cluster.client.hvals("lw:qst:pahokeeper")) ==
                   [b"pubcomp"] * 3, 30, "three deliveries in PUBREL state in the engine")
        n2.kill9()
        wait_until(lambda: not c.is_connected(), 30, "paho sees n2 gone")
        c.loop_stop()
        log.clear()
        c.connect("127.0.0.1", n1.port, keepalive=60, clean_start=False, properties=props)
        c.loop_start()
        wait_until(c.is_connected, 30, "paho back on n1")
        mids = [mid for _, mid in received]
        wait_until(lambda: all(f"Received PUBREL (Mid: {mid})" in log for mid in mids), 30, "the PUBRELs from n1")
        acking.set()
        for mid in mids:  # (the PUBCOMPs withheld so far)
            c.ack(mid, 2)
        wait_until(lambda: cluster.client.xlen("lw:q:pahokeeper") == 0, 30, "every delivery acknowledged")
        time.sleep(0.5)  # (a second copy would have come with the resumed session's first fetch)
        assert sorted(p for p, _ in received) == [b"m0", b"m1", b"m2"]
    finally:
        c.disconnect()
        c.loop_stop()
