"""An operator's actions through real HTTP requests to the admin API (and the `lastwill` commands),
observed with real MQTT clients (paho-mqtt): disconnect with and without the will (MQTT 5 clients
get DISCONNECT 0x98), delete a session, publish or cancel a pending will, list/read/delete retained
messages; the token; what a browser on another site may not do."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from lastwill.cli import main
from tests.integration.conftest import StepClient

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"


def http(broker, method: str, path: str, token: str | None = None, headers: dict | None = None):
    """(status, JSON body) of one request to the broker's admin API."""
    request = urllib.request.Request(f"http://127.0.0.1:{broker.broker.admin_port}{path}", method=method,
                                     headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def kinds(broker, client_id: str, token: str | None = None) -> list[str]:
    return [e["kind"] for e in http(broker, "GET", f"/api/clients/{client_id}/timeline", token)[1]["events"]]


class Watched:
    """A paho MQTT 5 client on its own loop thread that records its DISCONNECT from the server."""

    def __init__(self, port: int, client_id: str, will_topic: str, will_delay: int = 0, expiry: int = 0):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.disconnected = threading.Event()
        self.reason = None
        self.connected = threading.Event()
        wp = None
        if will_delay:
            wp = Properties(PacketTypes.WILLMESSAGE)
            wp.WillDelayInterval = will_delay
        self.client.will_set(will_topic, b"gone", 1, False, properties=wp)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", port, keepalive=60, clean_start=True, properties=props)
        self.client.loop_start()
        assert self.connected.wait(5)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.reason = reason_code
        self.disconnected.set()
        client.loop_stop()  # no reconnect

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def admin(broker_factory):
    return broker_factory(admin_listen="127.0.0.1:0")


@pytest.fixture
def locked(broker_factory):
    return broker_factory(admin_listen="127.0.0.1:0", admin_token=TOKEN)


def test_disconnect_publishes_the_will_and_sends_0x98_MQTT_3_1_2_8_v5(admin, observer_factory):
    obs = observer_factory(admin.port, "dead/#")
    dev = Watched(admin.port, "dev-1", "dead/dev-1")
    status, body = http(admin, "POST", "/api/clients/dev-1/disconnect")
    assert status == 200 and body["will"] == "published" and body["outcome"] == "done"
    assert dev.disconnected.wait(5) and dev.reason.value == 0x98  # Administrative action
    m = obs.get()
    assert (m.topic, m.payload) == ("dead/dev-1", b"gone")
    assert kinds(admin, "dev-1") == ["armed", "operator", "connection-ended", "published"]
    record = admin.wait_for_log("client_id=dev-1 disconnected by an operator (admin API from 127.0.0.1:")
    assert record.name == "lastwill.admin"
    events = http(admin, "GET", "/api/clients/dev-1/timeline")[1]["events"]
    assert "admin API from 127.0.0.1:" in events[1]["detail"]
    assert events[2]["data"]["cause"] == "administrative"


def test_disconnect_without_the_will_publishes_nothing(admin, observer_factory):
    obs = observer_factory(admin.port, "dead/#")
    dev = Watched(admin.port, "dev-2", "dead/dev-2")
    status, body = http(admin, "POST", "/api/clients/dev-2/disconnect?discard_will=true")
    assert status == 200 and body["will"] == "cancelled"
    assert dev.disconnected.wait(5) and dev.reason.value == 0x98
    assert kinds(admin, "dev-2") == ["armed", "operator", "cancelled"]
    obs.expect_none(1.0)
    assert http(admin, "GET", "/api/clients")[1]["count"] == 1  # the observer only


def test_disconnect_of_an_mqtt311_client_closes_it_and_publishes_its_will_v311(admin, observer_factory):
    obs = observer_factory(admin.port, "dead/#")
    dev = StepClient(admin.port, "old-1", version=4, will=("dead/old-1", b"gone", 1, False))
    assert http(admin, "POST", "/api/clients/old-1/disconnect")[0] == 200
    assert obs.get().topic == "dead/old-1"
    dev.client.loop(0.2)
    assert not dev.client.is_connected()


def test_delete_session_publishes_its_pending_will_first(admin, observer_factory):
    obs = observer_factory(admin.port, "dead/#")
    dev = StepClient(admin.port, "dev-3", version=5, session_expiry=600, will=("dead/dev-3", b"gone", 1, False),
                     will_props={"WillDelayInterval": 300})
    dev.crash()
    deadline = time.monotonic() + 5
    while http(admin, "GET", "/api/wills")[1]["count"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    status, body = http(admin, "DELETE", "/api/sessions/dev-3")
    assert status == 200 and body["will"] == "published"
    assert obs.get().topic == "dead/dev-3"  # now, not in 300 s
    sessions = http(admin, "GET", "/api/sessions")[1]["sessions"]
    assert "dev-3" not in {s["client_id"] for s in sessions}
    again = StepClient(admin.port, "dev-3", version=5, clean=False, session_expiry=600)
    assert again.connack[0].session_present is False
    again.disconnect()


def test_publish_and_cancel_a_pending_will(admin, observer_factory):
    obs = observer_factory(admin.port, "dead/#")
    for cid in ("p-1", "p-2"):
        StepClient(admin.port, cid, version=5, session_expiry=600, will=(f"dead/{cid}", b"gone", 1, False),
                   will_props={"WillDelayInterval": 300}).crash()
    deadline = time.monotonic() + 5
    while http(admin, "GET", "/api/wills")[1]["count"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert http(admin, "POST", "/api/clients/p-1/will/publish")[0] == 200
    assert obs.get().topic == "dead/p-1"
    status, body = http(admin, "POST", "/api/clients/p-2/will/cancel")
    assert status == 200 and body["will"] == "cancelled"
    assert http(admin, "GET", "/api/wills")[1]["count"] == 0
    status, body = http(admin, "POST", "/api/clients/p-2/will/publish")
    assert status == 409 and "no pending will" in body["error"]
    assert http(admin, "POST", "/api/clients/nobody/will/publish")[0] == 404
    obs.expect_none(0.5)
    timeline = http(admin, "GET", "/api/clients/p-2/timeline")[1]
    assert timeline["events"][-1]["kind"] == "cancelled" and "admin API from" in timeline["events"][-1]["detail"]


def test_retained_list_read_delete_by_filter(admin):
    pub = StepClient(admin.port, "pub", version=5)
    for topic, payload in (("cfg/a", b"alpha"), ("cfg/b", b"\xff\x00"), ("other/c", b"x" * 100)):
        pub.client.publish(topic, payload, qos=1, retain=True)
    pub.publish("cfg/sync", b"s")  # waits for its PUBACK, so that the three before are in
    status, body = http(admin, "GET", "/api/retained?filter=cfg/%2B")
    assert status == 200 and [r["topic"] for r in body["retained"]] == ["cfg/a", "cfg/b"]
    a, b = body["retained"]
    assert (a["payload"], a["bytes"], a["publisher"]) == ("alpha", 5, "pub")
    assert b["payload"] is None and b["payload_base64"] == "/wA="
    other = http(admin, "GET", "/api/retained?filter=other/c")[1]["retained"][0]
    assert other["truncated"] and len(other["payload"]) == 64
    assert http(admin, "GET", "/api/retained?filter=other/c&payload=true")[1]["retained"][0]["payload"] == "x" * 100
    status, body = http(admin, "DELETE", "/api/retained?filter=cfg/%23")
    assert status == 200 and body["deleted"] == 2
    late = StepClient(admin.port, "late", version=5)
    got = []
    late.client.on_message = lambda c, u, m: got.append(m.topic)
    late.client.subscribe("#", 1)
    for _ in range(20):
        late.client.loop(0.05)
    assert got == ["other/c"]
    assert http(admin, "DELETE", "/api/retained?filter=a/%23/b")[0] == 400
    assert http(admin, "DELETE", "/api/retained")[0] == 400


def test_actions_need_the_token(locked, observer_factory):
    obs = observer_factory(locked.port, "dead/#")
    dev = Watched(locked.port, "dev-4", "dead/dev-4")
    status, body = http(locked, "POST", "/api/clients/dev-4/disconnect")
    assert status == 401 and "Bearer" in body["error"]
    status, _ = http(locked, "POST", "/api/clients/dev-4/disconnect", token="wrong")
    assert status == 401
    assert not dev.disconnected.wait(0.3)
    assert http(locked, "POST", "/api/clients/dev-4/disconnect", token=TOKEN)[0] == 200
    assert dev.disconnected.wait(5)
    assert obs.get().topic == "dead/dev-4"


def test_another_site_cannot_act_through_the_browser(admin):
    dev = Watched(admin.port, "dev-5", "dead/dev-5")
    status, body = http(admin, "POST", "/api/clients/dev-5/disconnect", headers={"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body["error"]
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own name as Host
    status, body = http(admin, "GET", "/api/clients", headers={"Host": "evil.example:8080"})
    assert status == 403 and "loopback" in body["error"]
    assert not dev.disconnected.wait(0.3)
    own = f"http://127.0.0.1:{admin.broker.admin_port}"
    assert http(admin, "POST", "/api/clients/dev-5/disconnect", headers={"Origin": own})[0] == 200


def test_cli_commands(admin, capsys, observer_factory):
    url = f"http://127.0.0.1:{admin.broker.admin_port}"
    obs = observer_factory(admin.port, "dead/#")
    Watched(admin.port, "cli-1", "dead/cli-1")
    assert main(["disconnect", "cli-1", "--admin", url]) == 0
    assert capsys.readouterr().out == ("client 'cli-1' disconnected (DISCONNECT 0x98 Administrative action); "
                                       "its will was published\n")
    assert obs.get().topic == "dead/cli-1"
    assert main(["disconnect", "cli-1", "--admin", url]) == 1
    assert "no session for client 'cli-1' (HTTP 404" in capsys.readouterr().err  # session expiry 0: gone
    StepClient(admin.port, "cli-2", version=5, session_expiry=600, will=("dead/cli-2", b"gone", 1, False),
               will_props={"WillDelayInterval": 300}).crash()
    admin.wait_for_log("will client_id=cli-2 deferred")
    assert main(["cancel-will", "cli-2", "--admin", url]) == 0
    assert "was cancelled" in capsys.readouterr().out
    assert main(["delete-session", "cli-2", "--discard-will", "--admin", url]) == 0
    assert capsys.readouterr().out == "session of client 'cli-2' deleted; it had no will\n"
    pub = StepClient(admin.port, "pub", version=5)
    pub.client.publish("status/x", b"on", qos=1, retain=True)
    pub.client.publish("status/y", b"off\nline", qos=1, retain=True)
    pub.publish("sync", b"s")  # its PUBACK: the two before are in
    assert main(["retained", "status/#", "--admin", url]) == 0
    assert capsys.readouterr().out == (
        "2 retained message(s) matching 'status/#'\n\n"
        "TOPIC     QOS  BYTES  EXPIRES IN  PAYLOAD\n"
        "status/x    1      2       never  on\n"
        "status/y    1      8       never  off\\nline\n")
    assert main(["retained", "status/y", "--payload", "--admin", url]) == 0
    assert capsys.readouterr().out == "status/y (qos 1, 8 bytes): off\nline\n"
    assert main(["retained", "status/#", "--delete", "--admin", url]) == 0
    assert capsys.readouterr().out == "2 retained message(s) matching 'status/#' deleted\n"
    assert main(["retained", "status/#", "--admin", url]) == 0
    assert capsys.readouterr().out == "no retained message matches 'status/#'\n"
