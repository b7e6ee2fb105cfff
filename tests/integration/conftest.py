"""Real sockets, real clients: a lastwill broker on 127.0.0.1 port 0, in a thread of this process."""

from __future__ import annotations

import asyncio
import queue
import shutil
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lastwill import Broker


class BrokerThread:
    """Runs ``Broker`` on its own event loop (uvloop when available) in a background thread."""

    def __init__(self, **settings):
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.broker: Broker | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            import uvloop
            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            settings = dict(self.settings)
            if "data_dir" not in settings:
                settings.setdefault("memory", True)
            self.broker = Broker(listen=["127.0.0.1:0"], **settings)
            self.loop.run_until_complete(self.broker.start())
        except BaseException as e:  # pragma: no cover - surfaced by start()
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.broker.stop())
        self.loop.close()

    def start(self) -> BrokerThread:
        self._thread.start()
        self._ready.wait(10)
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the broker's loop and return its result (for inspecting state)."""
        done = threading.Event()
        box: list = []

        def run():
            box.append(fn(*args))
            done.set()
        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return box[0]

    @property
    def port(self) -> int:
        return self.broker.port


@pytest.fixture
def broker():
    b = BrokerThread().start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory():
    started = []

    def make(**settings):
        b = BrokerThread(**settings).start()
        started.append(b)
        return b
    yield make
    for b in started:
        b.stop()


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
