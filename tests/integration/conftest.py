"""Real sockets, real clients: a lastwill broker on 127.0.0.1 port 0, in a thread of this process
(lastwill.testing.BrokerThread, through the fixtures of lastwill's pytest plugin)."""

from __future__ import annotations

import queue
import shutil
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@pytest.fixture
def broker(lastwill_broker):
    """A lastwill broker in a thread: lastwill.testing's fixture (a free port, in memory)."""
    return lastwill_broker


@pytest.fixture
def broker_factory(lastwill_broker_factory):
    """``broker_factory(**settings)``: lastwill.testing's fixture; every broker made is stopped after the test."""
    return lastwill_broker_factory


class Observer:
    """A paho-mqtt client on a background loop that records every message it receives."""

    def __init__(self, port: int, topic: str = "#", qos: int = 1, version: int = 5, client_id: str = "observer",
                 **connect_kw):
        self.messages: queue.Queue = queue.Queue()
        proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kw = {} if version == 5 else {"clean_session": connect_kw.pop("clean_session", True)}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
        self.subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=60, **connect_kw)
        self.client.subscribe(topic, qos)
        self.client.loop_start()
        assert self.subscribed.wait(5), "observer: no SUBACK"

    def get(self, timeout: float = 5.0):
        return self.messages.get(timeout=timeout)

    def expect_none(self, within: float) -> None:
        try:
            m = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {m.topic}: {m.payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def observer_factory():
    made = []

    def make(port, topic="#", **kw):
        o = Observer(port, topic, **kw)
        made.append(o)
        return o
    yield make
    for o in made:
        o.close()


class StepClient:
    """A paho-mqtt client driven step by step (no background thread), so that it can 'crash'."""

    def __init__(self, port: int, client_id: str, version: int = 5, keepalive: int = 60,
                 will: tuple | None = None, will_props: dict | None = None, clean: bool = True,
                 session_expiry: int | None = None):
        proto = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}[version]
        kw = {} if version == 5 else {"clean_session": clean}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
        self.connack = None
        self.client.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc, props))
        if will:
            wp = None
            if will_props:
                wp = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will_props.items():
                    setattr(wp, k, v)
            self.client.will_set(*will, properties=wp)
        connect_kw = {}
        if version == 5:
            connect_kw["clean_start"] = clean
            if session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry
                connect_kw["properties"] = props
        self.client.connect("127.0.0.1", port, keepalive=keepalive, **connect_kw)
        deadline = time.monotonic() + 5
        while self.connack is None and time.monotonic() < deadline:
            self.client.loop(0.05)
        assert self.connack is not None, "no CONNACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        deadline = time.monotonic() + 5
        while not info.is_published() and time.monotonic() < deadline:
            self.client.loop(0.05)
        assert info.is_published()

    def crash(self) -> None:
        """Close the TCP connection with no DISCONNECT, like a process that died."""
        self.client.socket().close()

    def disconnect(self, reasoncode=None) -> None:
        self.client.disconnect(reasoncode=reasoncode)
        for _ in range(5):
            self.client.loop(0.02)


@pytest.fixture
def mosquitto_clients():
    if not (shutil.which("mosquitto_sub") and shutil.which("mosquitto_pub")):
        pytest.fail("mosquitto_sub/mosquitto_pub missing: scripts/test.sh installs mosquitto-clients")
    return True
