"""Subscriptions (table, change log, version, replica), messages between nodes (stored once, per-session
streams, acknowledged), retained messages, the start-up checks, script loading and batching."""

from __future__ import annotations

import pytest

from lastwill.cluster.engine import RedisEngine
from lastwill.cluster.model import (
    Ack,
    EngineConfigError,
    FetchRequest,
    OutMessage,
    ResyncNeeded,
    RouteOp,
    StaleRoutes,
    Target,
)
from lastwill.cluster.replica import RouteReplica
from lastwill.core.topics import SubOptions

from .helpers import advance, check_invariants

pytestmark = pytest.mark.timeout(60)


async def _session(engine: RedisEngine, epoch: int, node: str, cid: str, *subs: tuple[str, SubOptions]) -> int:
    r = await engine.connect(epoch, node, cid, False, 600, None)
    if subs:
        await engine.subscribe(epoch, cid, r.gen, list(subs))
    return r.gen


async def test_every_subscription_change_is_logged_under_the_next_version(engine: RedisEngine):
    a = await engine.register("n1")
    g = await _session(engine, a.epoch, "n1", "c")
    r1 = await engine.subscribe(a.epoch, "c", g, [("a/+", SubOptions(1)), ("$share/grp/b/#", SubOptions(2))])
    r2 = await engine.subscribe(a.epoch, "c", g, [], ["a/+", "never"])
    assert (r1.version, r2.version, r2.existed) == (2, 3, (True, False))
    log = await engine.changes(0)
    assert [(c.version, c.op, c.topic_filter) for c in log] == \
        [(1, RouteOp.SUBSCRIBE, "a/+"), (2, RouteOp.SUBSCRIBE, "$share/grp/b/#"), (3, RouteOp.UNSUBSCRIBE, "a/+")]
    assert await engine.changes(3) == ()
    snap = await engine.snapshot()
    assert snap.version == 3 and snap.entries == (("c", "$share/grp/b/#", SubOptions(2)),)


async def test_a_replica_follows_the_log_and_matches_like_the_engine_table(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    replica = RouteReplica()
    assert await replica.sync(engine) == 0
    g1 = await _session(engine, a.epoch, "n1", "s1", ("t/#", SubOptions(2, subscription_id=3)),
                        ("t/x", SubOptions(1, subscription_id=5)))
    await _session(engine, b.epoch, "n2", "s2", ("t/x", SubOptions(0, no_local=True)),
                   ("t/+", SubOptions(1, retain_as_published=True)))
    await _session(engine, b.epoch, "n2", "m1", ("$share/g/t/x", SubOptions(1)))
    await _session(engine, a.epoch, "n1", "m2", ("$share/g/t/x", SubOptions(1)))
    assert await replica.sync(engine) == 6
    targets = replica.targets("t/x", qos=2, retain=True, origin="s2")
    normal = {t for t in targets if t.client_id in ("s1", "s2")}
    # overlapping subscriptions merged: highest QoS, every subscription id; No Local; Retain As Published
    assert normal == {Target("s1", 2, False, (3, 5)), Target("s2", 1, True, ())}
    shared = [t for t in targets if t.client_id in ("m1", "m2")]
    assert len(shared) == 1  # one member of the group
    other = [t for t in replica.targets("t/x", 1) if t.client_id in ("m1", "m2")]
    assert other[0].client_id != shared[0].client_id  # the next message, the next member
    await engine.subscribe(a.epoch, "s1", g1, [], ["t/#"])
    await replica.sync(engine)
    fresh = RouteReplica()
    await fresh.sync(engine)
    assert fresh.version == replica.version
    assert {t.client_id for t in fresh.targets("t/y", 1)} == {t.client_id for t in replica.targets("t/y", 1)} == {"s2"}


async def test_a_replica_behind_a_trimmed_log_takes_a_snapshot(engine: RedisEngine):
    a = await engine.register("n1")
    replica = RouteReplica()
    await replica.sync(engine)
    g = await _session(engine, a.epoch, "n1", "c", ("x", SubOptions()))
    for i in range(5):
        await engine.subscribe(a.epoch, "c", g, [(f"y/{i}", SubOptions())])
    await engine.client.xtrim(engine.key("routelog"), maxlen=2, approximate=False)
    with pytest.raises(ResyncNeeded):
        await engine.changes(replica.version)
    assert await replica.sync(engine) == 6 and replica.snapshots == 2
    assert {t.client_id for t in replica.targets("y/0", 0)} == {"c"}


async def test_messages_are_stored_once_queued_per_session_and_acknowledged(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    g1 = await _session(engine, b.epoch, "n2", "s1", ("t", SubOptions(1)))
    g2 = await _session(engine, b.epoch, "n2", "s2", ("t", SubOptions(2)))
    replica = RouteReplica()
    await replica.sync(engine)
    msgs = [OutMessage("t", f"m{i}".encode(), 1, False, replica.targets("t", 1), origin="pub") for i in range(3)]
    async with engine.listen(b.epoch) as bell:
        ids = await engine.publish(a.epoch, replica.version, msgs)  # one call for the batch
        rang = await bell.get(5)
    assert len(set(ids)) == 3 and set(rang.client_ids) == {"s1", "s2"}  # one doorbell per node and batch
    q1, q2 = await engine.fetch(b.epoch, [FetchRequest("s1", g1), FetchRequest("s2", g2, count=2)])
    assert [d.payload for d in q1.deliveries] == [b"m0", b"m1", b"m2"] and len(q2.deliveries) == 2
    assert [d.msg_id for d in q1.deliveries][:2] == [d.msg_id for d in q2.deliveries]  # the same stored messages
    assert all(d.origin == "pub" and not d.is_will for d in q1.deliveries)
    # the node resumes after the last entry it holds
    (rest,) = await engine.fetch(b.epoch, [FetchRequest("s2", g2, after=q2.deliveries[-1].entry_id)])
    assert [d.payload for d in rest.deliveries] == [b"m2"]
    res = await engine.ack(b.epoch, [Ack("s1", g1, d.entry_id) for d in q1.deliveries])
    assert (res.acknowledged, res.refused) == (3, 0)
    assert len([k async for k in engine.client.scan_iter(match=engine.key("msg:*"))]) == 3  # s2 still refers
    await engine.ack(b.epoch, [Ack("s2", g2, d.entry_id) for d in (*q2.deliveries, *rest.deliveries)])
    assert [k async for k in engine.client.scan_iter(match=engine.key("msg:*"))] == []
    assert await engine.client.xlen(engine.key("q:s1")) == 0


async def test_a_persistent_session_keeps_its_queue_across_nodes(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    g = await _session(engine, a.epoch, "n1", "s", ("t", SubOptions(1)))
    await engine.disconnect(a.epoch, "s", g, normal=True)
    await engine.publish(a.epoch, 1, [OutMessage("t", b"while away", 1, False, (Target("s", 1),))])
    back = await engine.connect(b.epoch, "n2", "s", False, 600, None)
    assert back.session_present and back.queued == 1
    (q,) = await engine.fetch(b.epoch, [FetchRequest("s", back.gen)])
    assert [d.payload for d in q.deliveries] == [b"while away"]
    # the old owner may neither read nor acknowledge it any more
    (old,) = await engine.fetch(a.epoch, [FetchRequest("s", g)])
    assert not old.owned and old.deliveries == ()
    assert (await engine.ack(a.epoch, [Ack("s", g, q.deliveries[0].entry_id)])).refused == 1


async def test_publish_on_a_stale_table_is_refused(engine: RedisEngine):
    a = await engine.register("n1")
    await _session(engine, a.epoch, "n1", "s", ("t", SubOptions(1)))
    with pytest.raises(StaleRoutes) as e:
        await engine.publish(a.epoch, 0, [OutMessage("t", b"x", 1, False, ())])
    assert (e.value.sent, e.value.version) == (0, 1)


async def test_retained_messages_with_message_expiry_MQTT_3_3_2_5_v5(engine: RedisEngine):
    a = await engine.register("n1")
    await engine.publish(a.epoch, 0, [OutMessage("r/1", b"one", 1, True, (), message_expiry=2),
                                      OutMessage("r/2", b"two", 0, True, ())])
    assert {r.topic: r.payload for r in await engine.retained()} == {"r/1": b"one", "r/2": b"two"}
    await advance(engine, 2000, a.epoch)
    assert [r.topic for r in await engine.retained()] == ["r/2"]  # expired: not served
    assert (await engine.expire(a.epoch)).retained_expired == ("r/1",)
    await engine.publish(a.epoch, 0, [OutMessage("r/2", b"", 0, True, ())])  # an empty payload clears it
    assert await engine.retained() == ()
    assert [k async for k in engine.client.scan_iter(match=engine.key("msg:*"))] == []


async def test_check_engine_refuses_what_would_lose_wills(engine: RedisEngine):
    info = await engine.check_engine()
    assert info.appendonly and info.maxmemory_policy == "noeviction" and info.version.startswith("7")
    c = engine.client
    try:
        await c.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(EngineConfigError) as e:
            await engine.check_engine()
        assert e.value.setting == "maxmemory-policy" and "noeviction" in str(e.value)
        await engine.check_engine(allow_unsafe=True)
    finally:
        await c.config_set("maxmemory-policy", "noeviction")
    try:
        await c.config_set("appendonly", "no")
        with pytest.raises(EngineConfigError) as e:
            await engine.check_engine()
        assert e.value.setting == "appendonly"
    finally:
        await c.config_set("appendonly", "yes")
    await engine.advance_clock(1)
    with pytest.raises(EngineConfigError) as e:
        await engine.check_engine()
    assert e.value.setting == engine.key("clock:offset")


async def test_scripts_are_loaded_again_after_noscript(engine: RedisEngine):
    a = await engine.register("n1")
    await engine.client.script_flush()
    await engine.heartbeat(a.epoch)
    await engine.client.script_flush()
    calls = [engine.call_heartbeat(a.epoch), engine.call_due(a.epoch)]
    until, batch = await engine.run(*calls)
    assert until > 0 and batch.wills == ()
    assert engine.script_loads == 2


async def test_a_batch_of_calls_is_one_round_trip(engine: RedisEngine):
    a = await engine.register("n1")
    await engine.load_scripts()
    before = engine.round_trips
    results = await engine.run(*[engine.call_connect(a.epoch, "n1", f"c{i}", True, 0, None) for i in range(100)])
    assert engine.round_trips == before + 1
    assert len({r.gen for r in results}) == 100
    await check_invariants(engine)
