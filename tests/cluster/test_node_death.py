"""No will lost when a node dies, none published twice (issue 13): real ``lastwill serve --cluster``
processes on one real redis-server; a node killed with kill -9, paused with SIGSTOP beyond its lease,
the engine killed and restarted from its AOF. Every will carries a unique token; the observers are QoS
2 subscribers on another node; the engine's audit records are checked against what they received."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.request

import pytest
from redis.asyncio import Redis

from lastwill.cluster.engine import RedisEngine
from lastwill.codec.packets import Will
from tests.integration.conftest import Observer
from tests.rawclient import RawClient

from .helpers import check_invariants
from .nodes import BlackholeProxy, Cluster, wait_until


def observe(cluster, port, topic="will/#", client_id="observer"):
    o = Observer(port, topic, qos=2, version=5, client_id=client_id)
    cluster.made.append(o)
    return o


def tokens(observer: Observer, expected: int, timeout: float = 90.0) -> collections.Counter:
    got: collections.Counter = collections.Counter()
    deadline = time.monotonic() + timeout
    while sum(got.values()) < expected and time.monotonic() < deadline:
        try:
            m = observer.get(max(0.05, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - queue.Empty
            break
        got[m.payload.decode()] += 1
    return got


def invariants(cluster: Cluster) -> None:
    async def run():
        engine = RedisEngine(Redis(host="127.0.0.1", port=cluster.redis_server.port))
        try:
            await check_invariants(engine)
        finally:
            await engine.client.aclose()
    asyncio.run(run())


def will_client(port: int, i: int, *, level: int, delay: int = 0, expiry: int = 0, qos: int = 1,
                retain: bool = False) -> RawClient:
    c = RawClient(port, timeout=30)
    props = {"will_delay_interval": delay} if level == 5 and delay else {}
    connack = c.connect(f"dev{i}", level, will=Will(f"will/dev{i}", f"tok{i}".encode(), qos, retain, props),
                        **({"session_expiry_interval": expiry} if level == 5 and expiry else {}))
    assert connack.reason_code == 0
    return c


def lease_end_ms(cluster: Cluster, epoch: int) -> int:
    return int(cluster.client.hget(f"lw:node:{epoch}", "lease_end"))


def epoch_of(cluster: Cluster, node_id: str) -> int:
    return int(cluster.client.hget("lw:nodeid", node_id))


def test_a_killed_node_s_wills_are_published_once_each_by_the_survivors_MQTT_3_1_2_8(cluster):
    """kill -9 of a node holding clients with wills (MQTT 3.1.1 and 5, QoS 0/1/2, retain, Will Delay
    0-3 s, Session Expiry 0-60 s), recovery grace 0: every will reaches the observer on another node
    exactly once, due at the lease end + min(Will Delay, Session Expiry) [MQTT-3.1.3-9]."""
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    o2 = observe(cluster, n2.port, client_id="obs2")
    o3 = observe(cluster, n3.port, client_id="obs3")
    count = 1000
    clients = []
    wait: dict[str, int] = {}
    for i in range(count):
        level = 5 if i % 2 else 4
        delay = (i // 2) % 4 if level == 5 else 0
        expiry = (0, 2, 60)[i % 3] if level == 5 else 0
        clients.append(will_client(n1.port, i, level=level, delay=delay, expiry=expiry, qos=i % 3, retain=i % 7 == 0))
        wait[f"dev{i}"] = min(delay, expiry) * 1000
    epoch = epoch_of(cluster, "n1")
    n1.kill9()
    for o in (o2, o3):
        got = tokens(o, count)
        assert set(got) == {f"tok{i}" for i in range(count)}, f"missing: {count - len(got)}"
        assert max(got.values()) == 1  # exactly once
        o.expect_none(1.0)
    end = lease_end_ms(cluster, epoch)
    records = cluster.audit()
    assert collections.Counter(r["cid"] for r in records) == collections.Counter(f"dev{i}" for i in range(count))
    for r in records:
        assert r["status"] == "FIRED" and r["dead_node"] == "n1" and int(r["dead_epoch"]) == epoch
        assert r["node"] in ("n2", "n3")
        assert int(r["due"]) == end + wait[r["cid"]]  # lease end + min(Will Delay, Session Expiry)
        assert int(r["at"]) >= int(r["due"])  # never before it was due
    invariants(cluster)
    for c in clients:
        c.close()


def test_clients_back_on_another_node_within_their_will_delay_cancel_it_after_a_node_death_MQTT_3_1_3_9(cluster):
    """Of 20 clients of a killed node (Will Delay 4 s, Session Expiry 60 s), 10 come back on another node
    within their delay: no will, Session Present 1; 5 come back after it: their will once, then their
    session (Clean Start 0: Session Present 1) or a new one (Clean Start 1); 5 never come back."""
    n1, n2 = cluster.start("n1", "n2")
    o = observe(cluster, n2.port)
    clients = [will_client(n1.port, i, level=5, delay=4, expiry=60) for i in range(20)]
    n1.kill9()
    back = []
    for i in range(0, 20, 2):  # half of them come back, on n2, before their will is due
        c = RawClient(n2.port, timeout=30)
        connack = c.connect(f"dev{i}", 5, clean_start=False, session_expiry_interval=60)
        assert connack.reason_code == 0 and connack.session_present  # [MQTT-3.2.2-3]
        back.append(c)
    got = tokens(o, 10)
    assert got == collections.Counter(f"tok{i}" for i in range(1, 20, 2))  # the others', once each
    for i in range(1, 10, 2):  # after their will: the session is still there (expiry 60 s) or not asked for
        c = RawClient(n2.port, timeout=30)
        connack = c.connect(f"dev{i}", 5, clean_start=i % 4 == 1, session_expiry_interval=60)
        assert connack.reason_code == 0 and connack.session_present == (i % 4 != 1)
        back.append(c)
    o.expect_none(1.5)
    assert sorted(r["cid"] for r in cluster.audit()) == sorted(f"dev{i}" for i in range(1, 20, 2))
    invariants(cluster)
    for c in clients + back:
        c.close()


def test_a_paused_node_fences_itself_publishes_nothing_and_its_wills_are_published_once(cluster):
    """SIGSTOP beyond the lease: the survivors publish the wills; after SIGCONT the paused node sends
    no PUBLISH, closes its clients' connections, and registers again under a new epoch."""
    n1, n2 = cluster.start("n1", "n2", admin=True)
    o = observe(cluster, n2.port)
    watcher = RawClient(n1.port, timeout=30)  # a subscriber on the paused node: it must get no stale will
    watcher.connect("watcher", 5)
    assert watcher.subscribe("will/#", 1) == [1]
    clients = [will_client(n1.port, i, level=5 if i % 2 else 4, qos=1) for i in range(6)]
    epoch = epoch_of(cluster, "n1")
    n1.pause()
    try:
        got = tokens(o, 6)
    finally:
        n1.resume()
    assert got == collections.Counter(f"tok{i}" for i in range(6))
    for c in [*clients, watcher]:
        closed, data = c.closed_within(30)
        assert closed
        assert not any(type(p).__name__ == "Publish" for p in c.decoder.feed(data))  # nothing stale
    n1.wait_for_log("fenced itself")
    n1.wait_for_log("registered as epoch", count=2)
    assert epoch_of(cluster, "n1") > epoch
    o.expect_none(1.0)
    records = cluster.audit()
    assert sorted(r["cid"] for r in records) == sorted(f"dev{i}" for i in range(6))
    assert {r["node"] for r in records} == {"n2"}
    invariants(cluster)
    m1, m2 = n1.metrics(), n2.metrics()
    assert m1["lastwill_cluster_fencing_events_total"] == 1  # a stale refusal of the old epoch fences nothing
    assert n1.log_text().count("fenced itself") == 1
    assert m2["lastwill_cluster_epochs_reaped_total"] == 1
    assert m2["lastwill_cluster_wills_fired_for_dead_node_total"] == 6
    assert m1["lastwill_cluster_epoch"] > epoch
    # the admin API of any node shows the whole cluster: n1's old epoch taken over, who published what
    with urllib.request.urlopen(f"http://127.0.0.1:{n2.admin_port}/api/cluster", timeout=10) as r:
        view = json.loads(r.read())
    states = {(n["node_id"], n["epoch"]): n["state"] for n in view["nodes"]}
    assert states[("n1", epoch)] in ("fenced", "reaped") and states[("n1", epoch_of(cluster, "n1"))] == "live"
    assert sorted(f["client_id"] for f in view["fired"]) == sorted(f"dev{i}" for i in range(6))
    assert {(f["fired_by"], f["dead_node"]) for f in view["fired"]} == {("n2", "n1")}
    assert view["pending_wills"] == 0 and view["this_node"]["node_id"] == "n2"
    held = {n["node_id"]: n["clients"] for n in view["nodes"] if n["state"] == "live"}
    assert held["n2"] == ["observer"] and held["n1"] == []  # which node each client is on


def test_a_connect_is_refused_with_server_unavailable_while_redis_is_down_and_the_node_recovers(cluster):
    (n1,) = cluster.start("n1")
    cluster.redis_server.kill9()
    try:
        c5 = RawClient(n1.port, timeout=30)
        connack = c5.connect("w5", 5, will=Will("will/w5", b"x", 1))
        assert connack.reason_code == 0x88  # Server unavailable: the will could not be stored
        c4 = RawClient(n1.port, timeout=30)
        connack = c4.connect("w4", 4, will=Will("will/w4", b"x", 1))
        # 3.1.1: return code 3 Server unavailable (the client-side codec reads it back as 0x88)
        assert connack.reason_code == 0x88
    finally:
        cluster.redis_server.start()
    deadline = time.monotonic() + 60
    while True:
        c = RawClient(n1.port, timeout=30)
        connack = c.connect("w5", 5, will=Will("will/w5", b"x", 1))
        c.close()
        if connack.reason_code == 0:
            break
        assert time.monotonic() < deadline, "the node did not recover"
        time.sleep(0.2)
    text = n1.log_text()
    assert text.count("cannot be reached:") == 1  # logged once per outage, not per packet


def test_a_redis_restart_from_its_aof_loses_no_acknowledged_message(cluster):
    n1, n2 = cluster.start("n1", "n2")
    sub = RawClient(n2.port, timeout=30)
    sub.connect("keeper", 5, clean_start=True, session_expiry_interval=300)
    assert sub.subscribe("q/#", 1) == [1]
    sub.disconnect()
    wait_until(lambda: "disconnect client_id=keeper" in n2.log_text(), 30, "the disconnect")
    pub = RawClient(n1.port, timeout=30)
    pub.connect("pub", 5)
    for i in range(50):
        pub.publish("q/x", f"m{i}".encode(), 1)
        assert pub.expect("Puback", 30)  # acknowledged: in the engine's AOF
    pub.close()
    cluster.redis_server.restart_from_aof()
    deadline = time.monotonic() + 60
    while True:
        back = RawClient(n1.port, timeout=30)
        connack = back.connect("keeper", 5, clean_start=False, session_expiry_interval=300)
        if connack.reason_code == 0:
            break
        back.close()
        assert time.monotonic() < deadline, "no node took the session back"
        time.sleep(0.2)
    assert connack.session_present
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < 50 and time.monotonic() < deadline:
        packets = back.read(30)
        back.ack(packets)
        got |= {p.payload.decode() for p in packets if type(p).__name__ == "Publish"}
    assert got == {f"m{i}" for i in range(50)}
    back.close()


def test_messages_a_killed_node_had_not_delivered_reach_the_client_on_another_node(cluster):
    """QoS 1 messages queued to a session stay in the engine until its client acknowledges them: the
    subscriber's node dies with them unacknowledged, the client resumes on another node and gets them."""
    n1, n2 = cluster.start("n1", "n2")
    sub = RawClient(n2.port, timeout=30)
    sub.connect("holder", 5, clean_start=True, session_expiry_interval=300)
    assert sub.subscribe("q/#", 1) == [1]
    pub = RawClient(n1.port, timeout=30)
    pub.connect("pub", 5)
    for i in range(5):
        pub.publish("q/x", f"m{i}".encode(), 1)
        assert pub.expect("Puback", 30)
    received = sub.read_until(5, 30)  # read, never acknowledged
    assert [p.payload for p in received] == [f"m{i}".encode() for i in range(5)]
    n2.kill9()
    deadline = time.monotonic() + 60
    while True:  # the engine gives the session over once n2's lease has ended (or at once: takeover)
        back = RawClient(n1.port, timeout=30)
        connack = back.connect("holder", 5, clean_start=False, session_expiry_interval=300)
        if connack.reason_code == 0:
            break
        back.close()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert connack.session_present
    again = back.read_until(5, 30)
    assert [p.payload for p in again] == [f"m{i}".encode() for i in range(5)]
    back.ack(again)
    back.close()
    pub.close()


def test_a_node_cut_off_from_redis_fences_itself_while_its_clients_are_connected(cluster):
    """A partition between a node and Redis (a proxy the test cuts), its clients still connected to it:
    the survivor publishes their wills once; the cut-off node closes their connections without sending
    anything stale, and joins again under a new epoch when the partition heals."""
    proxy = BlackholeProxy(cluster.redis_server.port)
    try:
        (n1,) = cluster.start("n1", url=proxy.url)
        (n2,) = cluster.start("n2")
        o = observe(cluster, n2.port)
        watcher = RawClient(n1.port, timeout=30)
        watcher.connect("watcher", 5)
        assert watcher.subscribe("will/#", 1) == [1]
        clients = [will_client(n1.port, i, level=5 if i % 2 else 4, qos=1) for i in range(6)]
        epoch = epoch_of(cluster, "n1")
        proxy.cut = True
        got = tokens(o, 6)
        assert got == collections.Counter(f"tok{i}" for i in range(6))
        for c in [*clients, watcher]:  # closed by n1 itself (its lease ran out on its own clock)
            closed, data = c.closed_within(30)
            assert closed
            assert not any(type(p).__name__ == "Publish" for p in c.decoder.feed(data))
        n1.wait_for_log("fenced itself")
        proxy.cut = False
        n1.wait_for_log("registered as epoch", count=2, timeout=60)
        assert epoch_of(cluster, "n1") > epoch
        o.expect_none(1.0)
        assert sorted(r["cid"] for r in cluster.audit()) == sorted(f"dev{i}" for i in range(6))
        invariants(cluster)
    finally:
        proxy.close()


def test_two_nodes_of_three_killed_at_once_their_wills_are_published_once_by_the_third(cluster):
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    o = observe(cluster, n3.port)
    clients = [will_client((n1, n2)[i % 2].port, i, level=5 if i % 3 else 4, delay=i % 3, expiry=60, qos=i % 3)
               for i in range(60)]
    n1.kill9()
    n2.kill9()
    got = tokens(o, 60)
    assert got == collections.Counter(f"tok{i}" for i in range(60))
    o.expect_none(1.0)
    records = cluster.audit()
    assert sorted(r["cid"] for r in records) == sorted(f"dev{i}" for i in range(60))
    assert {r["node"] for r in records} == {"n3"} and {r["dead_node"] for r in records} == {"n1", "n2"}
    invariants(cluster)
    for c in clients:
        c.close()


@pytest.mark.parametrize("shutdown_wills", ["keep", "publish"])
def test_a_node_stopped_cleanly_leaves_its_clients_wills_to_the_cluster_once(cluster, shutdown_wills):
    """SIGTERM: with shutdown_wills = keep the node ends its lease at once and the survivors publish its
    clients' wills as for a dead node (recovery grace 0 here); with publish they go out at the shutdown.
    Either way each once."""
    (n1,) = cluster.start("n1", args=("--shutdown-wills", shutdown_wills))
    (n2,) = cluster.start("n2")
    o = observe(cluster, n2.port)
    clients = [will_client(n1.port, i, level=5 if i % 2 else 4, qos=1) for i in range(4)]
    assert n1.stop() == 0
    assert tokens(o, 4) == collections.Counter(f"tok{i}" for i in range(4))
    o.expect_none(1.0)
    records = cluster.audit()
    assert sorted(r["cid"] for r in records) == sorted(f"dev{i}" for i in range(4))
    assert {r["node"] for r in records} == ({"n2"} if shutdown_wills == "keep" else {"n1"})
    invariants(cluster)
    for c in clients:
        c.close()


@pytest.mark.parametrize("outage", [0.0, 2.5])
def test_a_redis_restart_under_qos_1_load_loses_no_acknowledged_message(cluster, outage):
    """kill -9 of Redis and a restart from its AOF (at once, or after longer than the lease: then every
    node fences itself and closes its clients) while a publisher on n1 sends QoS 1 messages to a
    persistent subscriber on n2: the PUBACKs wait, or the connection closes and the publisher connects
    again and sends again; every message that was acknowledged reaches the subscriber."""
    import threading

    n1, n2 = cluster.start("n1", "n2")
    received: set[str] = set()
    stop = threading.Event()

    def subscriber() -> None:
        first = True
        while not stop.is_set():
            try:
                sub = RawClient(n2.port, timeout=30)
                ack = sub.connect("sink", 5, clean_start=first, session_expiry_interval=300)
                if ack.reason_code:
                    sub.close()
                    time.sleep(0.1)
                    continue
                if first:
                    assert sub.subscribe("load/#", 1) == [1]
                    first = False
                    ready.set()
                while not stop.is_set():
                    try:
                        packets = sub.read(0.5)
                    except TimeoutError:
                        continue
                    sub.ack(packets)
                    received.update(p.payload.decode() for p in packets if type(p).__name__ == "Publish")
            except (ConnectionError, OSError):
                time.sleep(0.1)

    ready = threading.Event()
    t = threading.Thread(target=subscriber, daemon=True)
    t.start()
    assert ready.wait(30)
    acked: list[str] = []
    pub = None
    restarted = False
    i = 0
    deadline = time.monotonic() + 120
    while i < 400:
        assert time.monotonic() < deadline, f"stuck at message {i}"
        if i == 150 and not restarted:
            cluster.redis_server.kill9()
            time.sleep(outage)
            cluster.redis_server.start()
            restarted = True
        try:
            if pub is None:
                pub = RawClient(n1.port, timeout=30)
                if pub.connect("loader", 5).reason_code:
                    pub.close()
                    pub = None
                    time.sleep(0.1)
                    continue
            pub.publish("load/x", f"m{i}".encode(), 1)
            pub.expect("Puback", 30)
            acked.append(f"m{i}")
            i += 1
        except (ConnectionError, OSError, TimeoutError):
            pub = None  # closed (the node fenced itself): connect again and send it again
            time.sleep(0.1)
    wait_until(lambda: set(acked) <= received, 60, "every acknowledged message at the subscriber")
    stop.set()
    t.join(10)
    assert len(acked) == 400
