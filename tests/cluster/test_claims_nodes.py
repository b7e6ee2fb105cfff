"""Issue 13 with real nodes: many wills due at the same moment claimed by three nodes at once (each
published exactly once, every claimant gets a share), and Redis killed -9 and restarted from its AOF in
the middle of a reap (no will lost, none published twice).

The CI size is 2,000 clients (a loaded 2-core machine runs four node processes, redis-server and the
test); the same scenario runs with 10,000 by hand: LASTWILL_CLAIM_CLIENTS=10000 (docs/cluster.md)."""

from __future__ import annotations

import collections
import os
import socket
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connack, Connect, Will
from tests.integration.conftest import Observer

from .nodes import wait_until
from .test_node_death import epoch_of, invariants, observe, tokens

CLIENTS = int(os.environ.get("LASTWILL_CLAIM_CLIENTS", "2000"))


def hold(port: int, n: int, delays: tuple[int, ...], batch: int = 200) -> list[socket.socket]:
    """n MQTT 5 clients dev0..dev<n-1> with a QoS 1 will (token tok<i>), Will Delay delays[i % len(delays)]
    and a session that outlives it; CONNECTs sent a batch at a time, then their CONNACKs read."""
    socks = []
    for start in range(0, n, batch):
        chunk = []
        for i in range(start, min(n, start + batch)):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            delay = delays[i % len(delays)]
            props = {"will_delay_interval": delay} if delay else {}
            s.sendall(encode(Connect(client_id=f"dev{i}", protocol_level=5, keep_alive=600,
                                     properties={"session_expiry_interval": 300},
                                     will=Will(f"will/dev{i}", f"tok{i}".encode(), 1, False, props)), 5))
            chunk.append(s)
        for s in chunk:
            dec = Decoder(server_side=False, protocol_level=5)
            packets = []
            while not packets:
                data = s.recv(4096)
                assert data, "closed before its CONNACK"
                packets = dec.feed(data)
            assert isinstance(packets[0], Connack) and packets[0].reason_code == 0, packets[0]
        socks.extend(chunk)
    return socks


def close_all(socks) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def test_wills_due_at_once_are_claimed_by_three_nodes_each_published_once_by_concurrent_claimants(cluster):
    """n1 holds the clients and is killed: their wills are all due at lease end + 2 s (Will Delay 2), and
    n2, n3 and n4 claim them concurrently. The QoS 2 observer gets each token once, the audit has one
    record per client, and more than one claimant published some of them."""
    n1, n2, n3, n4 = cluster.start("n1", "n2", "n3", "n4")
    o = observe(cluster, n2.port)
    socks = hold(n1.port, CLIENTS, (2,))
    try:
        n1.kill9()
        got = tokens(o, CLIENTS, timeout=240)
    finally:
        close_all(socks)
    assert got == collections.Counter(f"tok{i}" for i in range(CLIENTS))
    o.expect_none(1.0)
    records = cluster.audit()
    assert sorted(r["cid"] for r in records) == sorted(f"dev{i}" for i in range(CLIENTS))
    by = collections.Counter(r["node"] for r in records)
    print(f"fired by: {dict(by)}")
    # the claimants shared the reap (seen: 250/750/1,000 and 500/750/750 of 2,000; 2,000/3,750/4,250 of
    # 10,000). Not a share bound, and not all three: the wills are claimed 250 per round trip (8 claims for
    # 2,000), and on a loaded machine n2, which also delivers the 2,000 QoS 2 wills to the observer, was
    # seen to lose all 8 races (CI run of 2026-12-08). Concurrent claimants are what this checks
    assert len(by) >= 2 and set(by) <= {"n2", "n3", "n4"}, by
    invariants(cluster)


def test_redis_killed_and_restarted_from_its_aof_in_the_middle_of_a_reap_loses_no_will_and_fires_none_twice(cluster):
    """n1 holds the clients (Will Delay 0 to 3 s) and is killed; once the survivors reaping its epoch have
    published the first of its wills, and the rest are still due, redis-server is killed -9 and restarted
    from its AOF. Every will is published once: one audit record per client, every token at the observer.
    (A kill between the reap's batches that make the sessions offline is tested at engine level:
    test_engine_reap.py; with real nodes those 1,000 sessions are reaped in a few ms.)"""
    n = CLIENTS // 2
    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    # a persistent QoS 2 observer: if Redis is away longer than the lease its node fences itself and
    # closes it; paho reconnects (Clean Start 0) and gets what was queued for it meanwhile
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    o = Observer(n2.port, "will/#", qos=2, version=5, client_id="observer", clean_start=False, properties=props)
    cluster.made.append(o)
    socks = hold(n1.port, n, (0, 1, 2, 3))
    epoch = epoch_of(cluster, "n1")
    r = cluster.client
    try:
        n1.kill9()
        deadline = time.monotonic() + 60
        while r.xlen("lw:fired") == 0:  # n1's epoch fenced, its sessions offline, the first wills published
            assert time.monotonic() < deadline, "no survivor published n1's wills"
            time.sleep(0.002)
        fired_before = r.xlen("lw:fired")
        cluster.redis_server.restart_from_aof()  # kill -9, then the AOF has every acknowledged write
        print(f"redis killed after {fired_before} of {n} wills were published (state of n1's epoch: "
              f"{r.hget(f'lw:node:{epoch}', 'state')})")
        assert fired_before < n  # (those due 3 s after the lease end are still due)
        wait_until(lambda: cluster.client.xlen("lw:fired") >= n, 240, "every will published")
    finally:
        close_all(socks)
    records = cluster.audit()
    per_client = collections.Counter(rec["cid"] for rec in records)
    assert per_client == collections.Counter(f"dev{i}" for i in range(n))  # each exactly once
    assert cluster.client.zcard("lw:due") == 0
    got = tokens(o, n, timeout=120)
    assert set(got) == {f"tok{i}" for i in range(n)}  # none lost
    assert all(v == 1 for v in got.values()), [k for k, v in got.items() if v > 1][:10]  # none twice
    invariants(cluster)
