"""A persistent session's queue longer than what start-up loads (its first 1,000 deliveries; the rest,
its backlog, stays in the store until the queue drains to it: storage/msgload.py, core/backlog.py),
across two kill -9 restarts of a real broker process, with paho-mqtt 5.0: every message arrives, in
order, each first delivery once [MQTT-4.6.0-6]; what was sent and not acknowledged when the broker was
killed comes again with DUP 1 and its packet id [MQTT-4.4.0-1]."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.test_durability import BrokerProcess, brokers, free_port, wait_until  # noqa: F401

pytestmark = pytest.mark.integration

N = 2500
ACKED = 1000  # the first connection acknowledges these
WINDOW = 200  # its Receive Maximum: 200 more are sent and left unacknowledged


class Subscriber:
    def __init__(self, port: int, ack_below: int):
        self.got: list[tuple[int, int, bool]] = []  # (index, packet id, dup)
        self.lock = threading.Lock()
        self.ack_below = ack_below
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="big", protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = WINDOW
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client, userdata, m) -> None:
        index = int(m.payload[:5])
        with self.lock:
            self.got.append((index, m.mid, bool(m.dup)))
        if index < self.ack_below:
            client.ack(m.mid, m.qos)

    def has(self, index: int) -> bool:
        with self.lock:
            return any(i == index for i, _, _ in self.got)

    def count(self) -> int:
        with self.lock:
            return len(self.got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.socket().close() if self.client.socket() else None


def test_a_backlog_survives_kill_9_in_order_and_resent_with_its_packet_ids_MQTT_4_4_0_1(tmp_path, brokers):  # noqa: F811
    port = free_port()
    broker = BrokerProcess(port, tmp_path / "data", tmp_path / "broker.log")
    brokers.append(broker)
    broker.start()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="big", protocol=mqtt.MQTTv5)
    subacks = []
    sub.on_subscribe = lambda client, userdata, mid, codes, props: subacks.append(mid)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    sub.connect("127.0.0.1", port, clean_start=True, properties=props)
    sub.loop_start()
    assert wait_until(sub.is_connected, 30)
    sub.subscribe("bk/#", qos=1)
    assert wait_until(lambda: subacks, 30)
    sub.disconnect()
    sub.loop_stop()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bk-pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish("bk/t", f"{i:05d}".encode() + b"x" * 100, qos=1) for i in range(N)]
    assert wait_until(lambda: all(i.is_published() for i in infos), 120)  # durable: acknowledged
    pub.disconnect()
    pub.loop_stop()

    broker.kill9()
    broker.start()  # the first 1,000 loaded, 1,500 left in the store
    first = Subscriber(port, ACKED)
    assert wait_until(lambda: first.count() >= ACKED + WINDOW, 120), first.count()
    broker.kill9()  # (acknowledgements not yet committed: those come again too, allowed at QoS 1)
    first.close()
    assert [i for i, _, _ in first.got] == list(range(ACKED + WINDOW))  # in order, each once

    broker.start()
    second = Subscriber(port, N)
    unacked = {i: pid for i, pid, _ in first.got if i >= ACKED}
    assert wait_until(lambda: second.has(N - 1), 120), second.count()
    broker.terminate()
    second.close()
    resent = [(i, pid) for i, pid, dup in second.got if dup]
    fresh = [i for i, _, dup in second.got if not dup]
    # [MQTT-4.4.0-1] what was unacknowledged comes again, DUP 1, with its packet id
    assert {i: pid for i, pid in resent if i in unacked} == unacked
    assert all(i < ACKED + WINDOW for i, _ in resent)
    # then the rest of the queue, from where the first connection stopped, in order, each once
    assert fresh == list(range(ACKED + WINDOW, N))
    assert [i for i, _, _ in second.got] == sorted(i for i, _, _ in second.got)  # [MQTT-4.6.0-6]

