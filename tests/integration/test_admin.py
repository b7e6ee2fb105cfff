"""The admin HTTP API on a real broker: real MQTT clients (paho) make the traffic, real HTTP requests
(urllib) read it back: JSON views, the will timeline, bearer tokens, 404s, and /metrics parsed with
prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lastwill.cli import main
from lastwill.config import Config
from lastwill.errors import ConfigError
from tests.integration.conftest import StepClient

pytestmark = pytest.mark.integration


def get(broker, path: str, token: str | None = None):
    """(status, parsed JSON or text, headers) of GET path on the broker's admin API."""
    request = urllib.request.Request(f"http://127.0.0.1:{broker.broker.admin_port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            status, body, headers = r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        status, body, headers = e.code, e.read().decode(), e.headers
    if headers.get("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return status, body, headers


def until(fn, timeout: float = 5.0):
    """Poll ``fn`` until it returns something truthy (the broker acts on its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def metrics(broker, token: str | None = None) -> dict:
    """{(name, frozenset(labels)): value} from /metrics, parsed by prometheus_client."""
    status, text, headers = get(broker, "/metrics", token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(values: dict, name: str, **labels) -> float:
    return values[(name, frozenset(labels.items()))]


def subscribe(c: StepClient, topic: str, qos: int = 1) -> None:
    done = []
    c.client.on_subscribe = lambda *a: done.append(1)
    c.client.subscribe(topic, qos)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        c.client.loop(0.02)
    assert done, "no SUBACK"


@pytest.fixture
def admin(broker_factory):
    return broker_factory(admin_listen="127.0.0.1:0")


# ---- the JSON views ---------------------------------------------------------------------------------


def test_clients_lists_connected_clients(admin):
    before = time.time()
    c = StepClient(admin.port, "dev-1", version=5, keepalive=45, will=("dead/dev-1", b"gone", 1, False))
    plain_client = StepClient(admin.port, "plain", version=4, keepalive=20)
    status, body, _ = get(admin, "/api/clients")
    assert status == 200 and body["count"] == 2
    dev = next(x for x in body["clients"] if x["client_id"] == "dev-1")
    local_port = c.client.socket().getsockname()[1]
    assert dev["peer"] == f"127.0.0.1:{local_port}"
    assert (dev["protocol"], dev["protocol_level"], dev["keep_alive"], dev["will"]) == ("5.0", 5, 45, True)
    since = datetime.fromisoformat(dev["connected_since"].replace("Z", "+00:00")).timestamp()
    assert before - 0.01 <= since <= time.time() and abs(since - dev["connected_since_epoch"]) < 0.002
    plain = next(x for x in body["clients"] if x["client_id"] == "plain")
    assert (plain["protocol"], plain["keep_alive"], plain["will"]) == ("3.1.1", 20, False)
    c.crash()
    assert until(lambda: get(admin, "/api/clients")[1]["count"] == 1)
    plain_client.disconnect()


def test_sessions_lists_every_session_with_its_queue(admin):
    offline = StepClient(admin.port, "offline", version=5, clean=False, session_expiry=300)
    subscribe(offline, "data/#")
    offline.crash()
    forever = StepClient(admin.port, "forever", version=4, clean=False)  # 3.1.1 Clean Session 0: never expires
    pub = StepClient(admin.port, "pub", version=5)
    until(lambda: not next(s for s in get(admin, "/api/sessions")[1]["sessions"]
                           if s["client_id"] == "offline")["connected"])
    pub.publish("data/1", b"a", qos=1)
    pub.publish("data/2", b"b", qos=1)
    status, body, _ = get(admin, "/api/sessions")
    assert status == 200
    sessions = {s["client_id"]: s for s in body["sessions"]}
    assert set(sessions) == {"offline", "forever", "pub"}
    s = sessions["offline"]
    assert (s["connected"], s["expiry_interval"], s["subscriptions"], s["queued"], s["inflight"]) == \
        (False, 300, 1, 2, 0)
    assert 290 < s["expires_in"] <= 300
    assert sessions["forever"]["expiry_interval"] is None and sessions["forever"]["expires_in"] is None
    assert sessions["forever"]["connected"] is True
    forever.disconnect()


def test_wills_lists_pending_wills_with_their_countdown(admin):
    pending = StepClient(admin.port, "pending", version=5, session_expiry=600,
                         will=("dead/pending", b"gone", 1, True), will_props={"WillDelayInterval": 100})
    armed = StepClient(admin.port, "armed", version=5, will=("dead/armed", b"gone", 0, False))
    pending.crash()
    status, body = None, None

    def ready():
        nonlocal status, body
        status, body, _ = get(admin, "/api/wills")
        return body["count"] == 1
    assert until(ready)
    assert status == 200 and body["armed"] == 1
    [w] = body["wills"]
    assert (w["client_id"], w["topic"], w["qos"], w["retain"]) == ("pending", "dead/pending", 1, True)
    assert 95 < w["seconds_left"] <= 100
    assert w["cause"] == "connection lost: EOF (peer closed its side)" and w["cause_kind"] == "eof"
    fire_at = datetime.fromisoformat(w["fire_at"].replace("Z", "+00:00")).timestamp()
    assert abs(fire_at - (body["now"] + w["seconds_left"])) < 0.01
    armed.disconnect()


@pytest.mark.parametrize("client_id", ["dev/1", "with space", "häuser-ü", "a%2Fb", "a+b#?"])
def test_timeline_of_a_client_id_percent_decoded(admin, client_id):
    c = StepClient(admin.port, client_id, version=5, will=("dead/x", b"gone", 1, False))
    c.crash()
    path = f"/api/clients/{urllib.parse.quote(client_id, safe='')}/timeline"
    assert until(lambda: [e["kind"] for e in get(admin, path)[1]["events"]] ==
                 ["armed", "connection-ended", "published"])
    status, body, _ = get(admin, path)
    assert status == 200 and body["client_id"] == client_id
    armed, ended, published = body["events"]
    assert (armed["rule"], armed["data"]["topic"]) == ("MQTT-3.1.2-7", "dead/x")
    assert ended["detail"] == "connection lost: EOF (peer closed its side)" and ended["data"]["cause"] == "eof"
    assert published["data"]["receivers"] == 0 and "nobody received it" in body["summary"]
    assert armed["at"] <= ended["at"] <= published["at"] <= body["now"]
    assert datetime.fromisoformat(armed["time"].replace("Z", "+00:00")).timestamp() == \
        pytest.approx(armed["at"], abs=0.001)


def test_timeline_of_a_connected_client_and_a_pending_will(admin):
    live = StepClient(admin.port, "live", version=5, will=("dead/live", b"gone", 1, False))
    status, body, _ = get(admin, "/api/clients/live/timeline")
    assert status == 200 and body["connected"] is True and body["protocol"] == "5.0"
    assert body["will"] == "armed" and body["pending"] is None and "connected with a will" in body["summary"]
    c = StepClient(admin.port, "later", version=5, session_expiry=60, will=("dead/later", b"gone", 1, False),
                   will_props={"WillDelayInterval": 30})
    c.crash()
    assert until(lambda: get(admin, "/api/clients/later/timeline")[1]["will"] == "pending")
    body = get(admin, "/api/clients/later/timeline")[1]
    deferred = body["events"][-1]
    assert deferred["kind"] == "deferred" and deferred["data"]["fire_at"] == pytest.approx(
        body["pending"]["fire_at_epoch"], abs=0.001)  # a wall-clock time, like the pending will's
    live.disconnect()


def test_unknown_client_is_a_json_404(admin):
    status, body, _ = get(admin, "/api/clients/nobody%2Fhere/timeline")
    assert status == 404 and body == {"error": "unknown client 'nobody/here': no session and no will timeline"}


def test_unknown_path_and_method_are_json_errors(admin):
    status, body, _ = get(admin, "/api/nothing")
    assert status == 404 and "error" in body
    request = urllib.request.Request(f"http://127.0.0.1:{admin.broker.admin_port}/api/wills", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 405 and "error" in json.loads(info.value.read())


# ---- the bearer token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/clients", "/api/sessions", "/api/wills", "/api/clients/x/timeline",
                                  "/metrics"])
def test_token_required_on_every_endpoint_when_set(broker_factory, path):
    b = broker_factory(admin_listen="127.0.0.1:0", admin_token="s3cret-token")
    x = StepClient(b.port, "x", version=5, will=("dead/x", b"gone", 1, False))
    status, body, headers = get(b, path)
    assert status == 401 and "Authorization: Bearer" in body["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = get(b, path, token="wrong")
    assert status == 401 and "wrong bearer token" in body["error"]
    status, _, _ = get(b, path, token="s3cret-token")
    assert status == 200
    x.disconnect()


def test_no_token_needed_on_loopback_without_one(admin):
    assert get(admin, "/api/wills")[0] == 200


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080", "admin.example:8080"])
def test_non_loopback_admin_listen_refused_without_token(listen):
    with pytest.raises(ConfigError, match="config key 'admin_token': required when admin_listen"):
        Config(admin_listen=listen).validate()
    Config(admin_listen=listen, admin_token="t").validate()  # with a token it is accepted


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "localhost:8080"])
def test_loopback_admin_listen_needs_no_token(listen):
    Config(admin_listen=listen).validate()


def test_serve_refuses_non_loopback_admin_without_token_naming_the_key(capsys):
    assert main(["serve", "--memory", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err
    assert "config key 'admin_token': required when admin_listen ('0.0.0.0:0') is not a loopback" in err


def test_bad_admin_listen_named():
    with pytest.raises(ConfigError, match="config key 'admin_listen': expected HOST:PORT"):
        Config(admin_listen="127.0.0.1").validate()


def test_admin_port_in_use_stops_start_up_naming_it(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--memory", "--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{port}"]) == 1
    assert f"cannot listen on admin_listen 127.0.0.1:{port}" in capsys.readouterr().err


def test_admin_off_by_default(broker):
    assert broker.broker.admin_port is None and broker.broker.server.admin is None


# ---- /metrics after real traffic -------------------------------------------------------------------------------


def test_metrics_count_wills_by_cause_after_real_traffic(broker_factory, observer_factory, tmp_path):
    # (sys_interval 0: no $SYS/broker/... retained messages in lastwill_retained_messages)
    b = broker_factory(admin_listen="127.0.0.1:0", data_dir=str(tmp_path / "data"), sys_interval=0)
    obs = observer_factory(b.port, "dead/#")
    before = metrics(b)
    assert metric(before, "lastwill_wills_published_total", cause="eof") == 0
    assert metric(before, "lastwill_connections") == 1  # the observer

    crash = StepClient(b.port, "crash", version=5, will=("dead/crash", b"gone", 1, False))
    crash.publish("data/x", b"1", qos=1)
    crash.publish("data/x", b"2", qos=1)
    crash.crash()
    assert obs.get().payload == b"gone"
    clean = StepClient(b.port, "clean", version=4, will=("dead/clean", b"gone", 1, False))
    clean.disconnect()
    sleepy = StepClient(b.port, "sleepy", version=4, keepalive=1, will=("dead/sleepy", b"zzz", 1, False))
    assert obs.get(timeout=5).payload == b"zzz"  # nothing from it for 1.5 s: keep-alive expiry
    del sleepy
    held = StepClient(b.port, "held", version=5, will=("dead/held", b"x", 1, False))
    pending = StepClient(b.port, "pending", version=5, session_expiry=600, will=("dead/pending", b"x", 1, False),
                         will_props={"WillDelayInterval": 300})
    pending.crash()
    StepClient(b.port, "nobody", version=5, will=("nowhere/x", b"x", 0, True)).crash()

    def settled():
        m = metrics(b)
        return m if metric(m, "lastwill_wills_pending") == 1 and \
            metric(m, "lastwill_wills_published_unreceived_total") == 1 else None
    m = until(settled)
    assert m, "the broker did not get there"
    assert metric(m, "lastwill_wills_published_total", cause="eof") == 2  # crash, nobody
    assert metric(m, "lastwill_wills_published_total", cause="keep_alive") == 1
    assert metric(m, "lastwill_wills_published_total", cause="reset") == 0
    assert metric(m, "lastwill_wills_cancelled_total", cause="disconnect") == 1
    assert metric(m, "lastwill_wills_armed_total") == 6
    assert metric(m, "lastwill_wills_held") == 1 and metric(m, "lastwill_wills_pending") == 1
    assert metric(m, "lastwill_wills_dropped_total", reason="queue_full") == 0
    assert metric(m, "lastwill_connects_total") == 7
    assert metric(m, "lastwill_connections") == 2  # the observer and "held"
    assert metric(m, "lastwill_sessions") == 3  # the observer, "held", "pending" (expiry 600)
    assert metric(m, "lastwill_messages_received_total") == 2  # wills are not received PUBLISHes
    assert metric(m, "lastwill_messages_sent_total") == 2  # the wills of "crash" and "sleepy", to the observer
    assert metric(m, "lastwill_retained_messages") == 1  # the retained will on nowhere/x
    assert metric(m, "lastwill_messages_queued") == 0
    commits = metric(m, "lastwill_store_commit_seconds_count")
    assert commits > 0 and metric(m, "lastwill_store_commit_seconds_bucket", le="+Inf") == commits
    assert metric(m, "lastwill_store_commit_seconds_sum") > 0
    held.disconnect()


def test_metrics_count_a_will_dropped_by_a_full_queue(broker_factory):
    b = broker_factory(admin_listen="127.0.0.1:0", max_queued_messages=1)
    w = StepClient(b.port, "w", version=5, clean=False, session_expiry=300)
    subscribe(w, "dead/#")
    w.crash()
    until(lambda: get(b, "/api/clients")[1]["count"] == 0)
    filler = StepClient(b.port, "filler", version=5)
    filler.publish("dead/filler", b"1", qos=1)
    StepClient(b.port, "dev", version=5, will=("dead/dev", b"gone", 1, False)).crash()
    m = until(lambda: (lambda m: m if metric(m, "lastwill_wills_dropped_total", reason="queue_full") else None)(
        metrics(b)))
    assert m and metric(m, "lastwill_wills_dropped_total", reason="queue_full") == 1
    assert metric(m, "lastwill_messages_dropped_total", reason="queue_full") == 1
    assert metric(m, "lastwill_messages_queued") == 1
    events = get(b, "/api/clients/dev/timeline")[1]["events"]
    assert [e["kind"] for e in events] == ["armed", "connection-ended", "published", "dropped"]
    assert events[-1]["data"] == {"reason": "queue_full", "subscriber": "w"}
