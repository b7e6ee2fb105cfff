"""Issue 12: the admin API, `lastwill wills`, `lastwill explain` and the $SYS client events of any node
show the whole cluster (which node each client is on; for a will, which node published it). Real
redis-server, real `lastwill serve --cluster` nodes, raw and paho clients."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from lastwill.cli import main
from lastwill.codec.packets import Will
from tests.integration.conftest import Observer
from tests.rawclient import RawClient

from .nodes import wait_until
from .test_node_death import epoch_of, observe, tokens


def get(node, path: str) -> dict:
    node.wait_for_log("admin API on")  # (it starts after the MQTT listener the start-up waits for)
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}{path}", timeout=15) as r:
        return json.loads(r.read())


def timeline(node, client_id: str) -> dict:
    return get(node, f"/api/clients/{urllib.parse.quote(client_id, safe='')}/timeline")


def cli(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_any_node_lists_every_client_of_the_cluster_with_its_node_and_every_pending_will(cluster, capsys):
    n1, n2, n3 = cluster.start("n1", "n2", "n3", admin=True)
    a = RawClient(n1.port, timeout=30)
    assert a.connect("alpha", 4, will=Will("will/alpha", b"a", 1)).reason_code == 0
    b = RawClient(n2.port, timeout=30)
    assert b.connect("beta", 5, will=Will("will/beta", b"b", 1, False, {"will_delay_interval": 300}),
                     session_expiry_interval=600).reason_code == 0
    for node in (n1, n2, n3):
        clients = {c["client_id"]: c for c in get(node, "/api/clients")["clients"]}
        assert {cid: c["node"] for cid, c in clients.items()} == {"alpha": "n1", "beta": "n2"}
        assert clients["alpha"]["will"] and clients["beta"]["will"]
    # explain of a client on another node: from the engine, naming the node that holds it
    body = timeline(n3, "alpha")
    assert body["connected"] and body["node"] == "n1" and body["will"] == "armed" and body["answered_by"] == "n3"
    assert "connected to node n1" in cli(capsys, "explain", "alpha", "--admin", f"http://127.0.0.1:{n3.admin_port}")
    # beta's connection ends without DISCONNECT: its will waits 300 s, in the engine, seen from every node
    b.close()
    wait_until(lambda: any(w["client_id"] == "beta" for w in get(n3, "/api/wills")["wills"]), 30, "beta's will")
    for node in (n1, n2, n3):
        wills = {w["client_id"]: w for w in get(node, "/api/wills")["wills"]}
        assert list(wills) == ["beta"]
        assert wills["beta"]["node"] == "n2" and wills["beta"]["topic"] == "will/beta"
        assert 200 < wills["beta"]["seconds_left"] <= 300
    out = cli(capsys, "wills", "--admin", f"http://127.0.0.1:{n1.admin_port}")
    assert "beta" in out and "n2" in out and "will/beta" in out
    body = timeline(n1, "beta")
    assert body["will"] == "pending" and not body["connected"] and body["pending"]["topic"] == "will/beta"
    assert {c["client_id"] for c in get(n1, "/api/clients")["clients"]} == {"alpha"}
    a.close()


def test_explain_on_any_node_says_which_node_published_a_dead_node_s_will_MQTT_3_1_2_8(cluster, capsys):
    n1, n2, n3 = cluster.start("n1", "n2", "n3", admin=True)
    o = observe(cluster, n2.port)
    c = RawClient(n1.port, timeout=30)
    assert c.connect("dev0", 5, will=Will("will/dev0", b"tok0", 1)).reason_code == 0
    epoch = epoch_of(cluster, "n1")
    assert timeline(n2, "dev0")["node"] == "n1"
    n1.kill9()
    assert tokens(o, 1) == {"tok0": 1}
    record = cluster.audit()
    assert len(record) == 1
    fired_by = record[0]["node"]
    assert fired_by in ("n2", "n3")
    for node in (n2, n3):
        body = timeline(node, "dev0")
        assert not body["connected"]
        assert [(f["fired_by"], f["dead_node"], f["dead_epoch"]) for f in body["fired"]] == [(fired_by, "n1", epoch)]
        text = cli(capsys, "explain", "dev0", "--admin", f"http://127.0.0.1:{node.admin_port}")
        assert f"node n1 (epoch {epoch}) stopped renewing its lease" in text or \
            (f"node {fired_by}" in text and "n1" in text), text
        assert f"node {fired_by} (epoch" in text
    # the node that published it says so from its own timeline too, with the cluster's audit
    body = timeline(cluster[fired_by], "dev0")
    assert any(e["kind"] == "published" for e in body["events"])
    assert body["fired"][0]["fired_by"] == fired_by
    c.close()


def test_sys_client_events_of_one_node_reach_a_subscriber_on_another(cluster):
    """$SYS/brokers/<node id>/clients/<client id>/connected|disconnected are published cluster-wide (QoS 0,
    like any QoS 0 message between nodes): a subscriber on n2 sees n1's clients come and go."""
    n1, n2 = cluster.start("n1", "n2")
    o = Observer(n2.port, "$SYS/brokers/+/clients/#", qos=0, version=5, client_id="sysobs")
    cluster.made.append(o)
    probe = 0

    def seen_one() -> bool:  # the subscription reaches n1's replica of the table in its own time
        nonlocal probe
        probe += 1
        p = RawClient(n1.port, timeout=30)
        p.connect(f"probe{probe}", 5)
        p.disconnect()
        try:
            m = o.get(0.5)
        except Exception:  # noqa: BLE001 - queue.Empty
            return False
        return m.topic.startswith("$SYS/brokers/n1/clients/probe")

    wait_until(seen_one, 60, "a $SYS event of n1 on n2")
    while True:  # the rest of the probes' events
        try:
            o.get(1.0)
        except Exception:  # noqa: BLE001
            break
    c = RawClient(n1.port, timeout=30)
    assert c.connect("sensor", 5, will=Will("will/sensor", b"x", 0)).reason_code == 0
    c.close()  # without DISCONNECT: the will is published
    events = {}
    while len(events) < 2:
        m = o.get(30)
        if "/clients/sensor/" in m.topic:
            events[m.topic.rsplit("/", 1)[1]] = (m.topic, json.loads(m.payload))
    assert events["connected"][0] == "$SYS/brokers/n1/clients/sensor/connected"
    assert events["connected"][1]["clientid"] == "sensor"
    topic, body = events["disconnected"]
    assert topic == "$SYS/brokers/n1/clients/sensor/disconnected"
    assert body["clientid"] == "sensor" and body["will"]  # what the will rule decided, from n1


def test_with_redis_down_the_admin_api_answers_for_the_node_s_own_clients_and_says_it_is_partial(cluster):
    (n1,) = cluster.start("n1", admin=True)
    c = RawClient(n1.port, timeout=30)
    assert c.connect("local", 5).reason_code == 0
    assert [x["client_id"] for x in get(n1, "/api/clients")["clients"]] == ["local"]
    assert "partial" not in get(n1, "/api/clients")
    cluster.redis_server.kill9()
    try:
        body = get(n1, "/api/clients")  # 200, not an error: the node's own clients (none once it fenced itself)
        assert body["partial"] is True and {x["node"] for x in body["clients"]} <= {"n1"}
        assert get(n1, "/api/wills")["partial"] is True
    finally:
        cluster.redis_server.start()
    c.close()


def test_a_survivor_publishing_a_dead_node_s_will_publishes_its_sys_disconnected_event_MQTT_3_1_2_8(cluster):
    """No node saw the connection end: the node that publishes the will sends the $SYS disconnected event
    (its own node id in the topic, the dead node in the payload), as for a will published on one node."""
    n1, n2 = cluster.start("n1", "n2")
    o = Observer(n2.port, "$SYS/brokers/+/clients/+/disconnected", qos=0, version=5, client_id="sysobs")
    cluster.made.append(o)
    wills = observe(cluster, n2.port)
    c = RawClient(n1.port, timeout=30)
    assert c.connect("dev7", 4, will=Will("will/dev7", b"tok7", 1)).reason_code == 0
    n1.kill9()
    assert tokens(wills, 1) == {"tok7": 1}
    m = o.get(30)
    assert m.topic == "$SYS/brokers/n2/clients/dev7/disconnected"  # from the node that published the will
    body = json.loads(m.payload)
    assert (body["clientid"], body["reason"], body["node"]) == ("dev7", "node_died", "n1")
    assert body["will"]["decision"] == "published" and body["will"]["rule"] == "MQTT-3.1.2-8"
    assert body["disconnected_at"] <= body["will"]["fire_at"] <= body["ts"]
    o.expect_none(1.0)  # once
    c.close()
