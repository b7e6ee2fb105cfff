"""The will rules as the engine keeps them: arm, defer, cancel by reconnect, Clean Start 1, takeover,
generations, the claim (fire) and its audit record."""

from __future__ import annotations

import pytest

from lastwill.cluster.engine import RedisEngine
from lastwill.cluster.model import (
    NEVER,
    CancelCause,
    ClaimTaken,
    ConnectResult,
    FireOutcome,
    FireRequest,
    Kicked,
    StaleRoutes,
    Target,
    WillOutcome,
)
from lastwill.cluster.replica import RouteReplica
from lastwill.core.topics import SubOptions

from .helpers import advance, check_invariants, dump, will

pytestmark = pytest.mark.timeout(60)


async def _due_gens(engine: RedisEngine) -> dict[int, int]:
    return {int(g): int(t) for g, t in await engine.client.zrange(engine.key("due"), 0, -1, withscores=True)}


async def test_connect_arms_the_will_with_the_session_MQTT_3_1_2_7_v5(engine: RedisEngine):
    n = await engine.register("n1")
    r = await engine.connect(n.epoch, "n1", "c", False, 60, will(delay=5))
    assert not r.session_present and r.kick is None and not r.fire_now and not r.cancelled
    w = await engine.client.hgetall(engine.key(f"will:{r.gen}"))
    assert w[b"cid"] == b"c" and w[b"topic"] == b"dead/x" and w[b"delay"] == b"5"
    assert await engine.client.sismember(engine.key(f"owned:{n.epoch}"), "c")
    assert await _due_gens(engine) == {}
    await check_invariants(engine)


async def test_normal_disconnect_deletes_the_will_MQTT_3_14_4_3(engine: RedisEngine):
    n = await engine.register("n1")
    r = await engine.connect(n.epoch, "n1", "c", False, 60, will())
    d = await engine.disconnect(n.epoch, "c", r.gen, normal=True)
    assert d.owner and d.outcome is WillOutcome.CANCELLED and d.will_gen == r.gen
    assert not await engine.client.exists(engine.key(f"will:{r.gen}"))
    assert await _due_gens(engine) == {}
    await check_invariants(engine)


@pytest.mark.parametrize(("delay", "expiry", "wait_s"), [(5, 3, 3), (2, 10, 2), (7, NEVER, 7), (0, 60, 0), (5, 0, 0)])
async def test_abnormal_end_defers_min_of_delay_and_expiry_MQTT_3_1_3_9(engine: RedisEngine, delay, expiry, wait_s):
    n = await engine.register("n1")
    r = await engine.connect(n.epoch, "n1", "c", False, expiry, will(delay=delay))
    before = await engine.now_ms()
    d = await engine.disconnect(n.epoch, "c", r.gen, normal=False, cause="eof")
    after = await engine.now_ms()
    assert d.outcome is (WillOutcome.DUE if wait_s == 0 else WillOutcome.DEFERRED)
    assert before + wait_s * 1000 <= d.due_ms <= after + wait_s * 1000
    assert await _due_gens(engine) == {r.gen: d.due_ms}
    assert d.session_ended == (expiry == 0)
    await check_invariants(engine)


async def test_a_disconnect_may_change_the_session_expiry_MQTT_3_1_3_9(engine: RedisEngine):
    n = await engine.register("n1")
    r = await engine.connect(n.epoch, "n1", "c", False, 60, will(delay=30))
    d = await engine.disconnect(n.epoch, "c", r.gen, normal=False, session_expiry=4)
    now = await engine.now_ms()
    assert now + 3000 < d.due_ms <= now + 4000
    assert int(await engine.client.zscore(engine.key("sessdue"), "c")) == d.due_ms


async def test_reconnect_before_the_deadline_cancels_the_will_MQTT_3_1_3_9(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=5))
    d = await engine.disconnect(a.epoch, "c", r.gen, normal=False, cause="keep_alive")
    await advance(engine, 4000, b.epoch)
    back = await engine.connect(b.epoch, "n2", "c", False, 60, None)  # on another node
    assert back.session_present and back.gen > r.gen and not back.fire_now
    (c,) = back.cancelled
    assert (c.gen, c.due_ms, c.cause, c.ended_cause, c.dead_node) == \
        (r.gen, d.due_ms, CancelCause.RECONNECT, "keep_alive", None)
    assert await _due_gens(engine) == {}
    assert not await engine.client.exists(engine.key(f"will:{r.gen}"))
    await advance(engine, 2000, b.epoch)
    assert (await engine.due(b.epoch)).wills == ()  # nothing ever fires
    await check_invariants(engine)


async def test_reconnect_after_the_deadline_does_not_cancel_MQTT_3_1_3_9(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=2))
    d = await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    await advance(engine, 2500, a.epoch)
    back = await engine.connect(a.epoch, "n1", "c", False, 60, None)
    assert back.session_present and not back.cancelled
    assert [(f.gen, f.due_ms) for f in back.fire_now] == [(r.gen, d.due_ms)]
    (res,) = await engine.fire(a.epoch, "n1", 0, [FireRequest(r.gen, "c")])
    assert res.outcome is FireOutcome.FIRED
    await check_invariants(engine)


async def test_clean_start_1_publishes_the_pending_will_at_once_MQTT_3_1_2_4(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 600, will(delay=300))
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    back = await engine.connect(a.epoch, "n1", "c", True, 600, will(topic="second"))
    assert not back.session_present and not back.cancelled
    (f,) = back.fire_now
    assert f.gen == r.gen and f.due_ms <= await engine.now_ms()
    (res,) = await engine.fire(a.epoch, "n1", 0, [FireRequest(r.gen, "c")])  # no clock moved: due now
    assert res.outcome is FireOutcome.FIRED
    assert (await engine.client.hget(engine.key(f"will:{back.gen}"), "topic")) == b"second"
    await check_invariants(engine)


async def test_clean_start_1_ends_the_session_MQTT_3_1_2_4(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 600, None)
    await engine.subscribe(a.epoch, "c", r.gen, [("t/#", SubOptions(1))])
    await engine.disconnect(a.epoch, "c", r.gen, normal=True)
    back = await engine.connect(a.epoch, "n1", "c", True, 600, None)
    assert not back.session_present and back.subscriptions == ()
    assert (await engine.snapshot()).entries == ()


async def test_resumed_session_brings_its_subscriptions_MQTT_3_1_2_4(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "c", False, 600, None)
    await engine.subscribe(a.epoch, "c", r.gen, [("t/#", SubOptions(1, subscription_id=7)), ("u", SubOptions(2))])
    await engine.disconnect(a.epoch, "c", r.gen, normal=True)
    back = await engine.connect(b.epoch, "n2", "c", False, 600, None)
    assert back.session_present
    assert dict(back.subscriptions) == {"t/#": SubOptions(1, subscription_id=7), "u": SubOptions(2)}


async def test_session_expiry_0_ends_the_session_with_its_connection_MQTT_3_1_2_23(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 0, will(delay=10))
    await engine.subscribe(a.epoch, "c", r.gen, [("t", SubOptions())])
    d = await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    assert d.session_ended and d.outcome is WillOutcome.DUE  # min(10, 0) = 0
    assert not await engine.client.exists(engine.key("sess:c"))
    assert (await engine.snapshot()).entries == ()
    assert list(await _due_gens(engine)) == [r.gen]  # the will outlives the session, and goes out
    await check_invariants(engine)


async def test_expired_session_ends_MQTT_3_1_2_23(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 2, will(delay=10))
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    await advance(engine, 1000, a.epoch)
    assert (await engine.expire(a.epoch)).sessions_ended == ()
    await advance(engine, 1000, a.epoch)
    assert (await engine.expire(a.epoch)).sessions_ended == ("c",)
    due = await engine.due(a.epoch)
    assert [w.gen for w in due.wills] == [r.gen]  # the will was due with the session's end
    back = await engine.connect(a.epoch, "n1", "c", False, 2, None)
    assert not back.session_present


async def test_takeover_on_another_node_kicks_the_old_connection_MQTT_3_1_4_3(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=10))
    async with engine.listen(a.epoch) as channel:
        t = await engine.connect(b.epoch, "n2", "c", False, 60, None)
        event = await channel.get(timeout=5)
    assert event == Kicked("c", r.gen)
    assert t.kick is not None and (t.kick.epoch, t.kick.gen) == (a.epoch, r.gen)
    assert t.session_present
    # the old connection ended now; its will's delay had not elapsed: the resumed session cancels it
    (c,) = t.cancelled
    assert c.gen == r.gen and c.cause is CancelCause.TAKEOVER
    # the old node's disconnect of the taken-over connection changes nothing
    before = await dump(engine)
    late = await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    assert not late.owner
    assert await dump(engine) == before
    await check_invariants(engine)


async def test_takeover_publishes_a_will_without_delay_MQTT_3_1_4_3(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=0, v5=False))
    t = await engine.connect(b.epoch, "n2", "c", False, 60, None)
    assert [f.gen for f in t.fire_now] == [r.gen] and not t.cancelled


async def test_takeover_of_a_session_expiry_0_session_ends_it_MQTT_3_1_4_3(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    await engine.connect(a.epoch, "n1", "c", False, 0, will(delay=10))
    t = await engine.connect(b.epoch, "n2", "c", False, 0, None)
    assert not t.session_present and len(t.fire_now) == 1


async def test_another_users_session_is_not_resumed(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=30), user="alice")
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    back = await engine.connect(a.epoch, "n1", "c", False, 60, None, user="mallory", user_check=True)
    assert back.user_changed and not back.session_present
    assert [f.gen for f in back.fire_now] == [r.gen]  # the ended session's will goes out now
    due = await engine.due(a.epoch)
    assert due.wills[0].user == "alice"  # checked against the ACL as its own user


async def test_generations_guard_every_session_write(engine: RedisEngine):
    a = await engine.register("n1")
    r1 = await engine.connect(a.epoch, "n1", "c", False, 60, will())
    r2 = await engine.connect(a.epoch, "n1", "c", False, 60, will())  # same node takes over
    assert r2.kick is not None and r2.kick.epoch == a.epoch and r2.gen > r1.gen
    before = await dump(engine)
    assert not (await engine.disconnect(a.epoch, "c", r1.gen, normal=True)).owner
    assert not (await engine.subscribe(a.epoch, "c", r1.gen, [("x", SubOptions())])).owner
    assert await dump(engine) == before
    # a claim names the will's generation and client: any mismatch is GONE
    d = await engine.disconnect(a.epoch, "c", r2.gen, normal=False)
    assert d.outcome is WillOutcome.DUE
    before = await dump(engine)
    res = await engine.fire(a.epoch, "n1", 0, [FireRequest(r2.gen, "other"), FireRequest(r2.gen + 100, "c")])
    assert [x.outcome for x in res] == [FireOutcome.GONE, FireOutcome.GONE]
    assert await dump(engine) == before


async def test_fire_queues_the_will_once_to_every_target_and_records_it_MQTT_3_1_2_8(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    c = await engine.register("n3")
    s1 = await engine.connect(b.epoch, "n2", "s1", False, 60, None)
    s2 = await engine.connect(c.epoch, "n3", "s2", False, 60, None)
    await engine.subscribe(b.epoch, "s1", s1.gen, [("dead/#", SubOptions(qos=2, subscription_id=4))])
    await engine.subscribe(c.epoch, "s2", s2.gen, [("dead/x", SubOptions(qos=0))])
    replica = RouteReplica()
    await replica.sync(engine)
    r = await engine.connect(a.epoch, "n1", "dev", False, 60, will(topic="dead/x", qos=1, payload=b"bye"))
    d = await engine.disconnect(a.epoch, "dev", r.gen, normal=False, cause="reset")
    batch = await engine.due(b.epoch)
    (w,) = batch.wills
    assert (w.gen, w.client_id, w.topic, w.qos, w.cause) == (r.gen, "dev", "dead/x", 1, "reset")
    targets = replica.targets(w.topic, w.qos, w.retain, origin=w.client_id)
    assert set(targets) == {Target("s1", 1, False, (4,)), Target("s2", 0)}
    async with engine.listen(b.epoch) as bell_b, engine.listen(c.epoch) as bell_c:
        (res,) = await engine.fire(b.epoch, "n2", replica.version, [FireRequest(w.gen, w.client_id, targets)])
        assert res.outcome is FireOutcome.FIRED and res.receivers == 2
        assert (await bell_b.get(5)).client_ids == ("s1",)
        assert (await bell_c.get(5)).client_ids == ("s2",)
    # stored once, referred to by both queue entries
    keys = [k async for k in engine.client.scan_iter(match=engine.key("msg:*"))]
    assert len(keys) == 1 and int(await engine.client.hget(keys[0], "refs")) == 2
    q1 = (await engine.fetch(b.epoch, [_fetch("s1", s1.gen)]))[0].deliveries
    q2 = (await engine.fetch(c.epoch, [_fetch("s2", s2.gen)]))[0].deliveries
    assert q1[0].msg_id == q2[0].msg_id and q1[0].payload == b"bye" and q1[0].is_will
    assert (q1[0].qos, q1[0].subscription_ids, q2[0].qos) == (1, (4,), 0)
    # the audit record
    (rec,) = await engine.audit()
    assert (rec.client_id, rec.gen, rec.by_epoch, rec.node_id, rec.due_ms, rec.outcome, rec.cause, rec.receivers) == \
        ("dev", r.gen, b.epoch, "n2", d.due_ms, FireOutcome.FIRED, "reset", 2)
    assert rec.fired_ms >= rec.due_ms and rec.id == res.audit_id
    # and it is gone: a second claimant gets GONE [MQTT-3.1.2-10]
    before = await dump(engine)
    (again,) = await engine.fire(c.epoch, "n3", replica.version, [FireRequest(w.gen, w.client_id, targets)])
    assert again.outcome is FireOutcome.GONE
    assert await dump(engine) == before
    await check_invariants(engine)


def _fetch(cid: str, gen: int):
    from lastwill.cluster.model import FetchRequest
    return FetchRequest(cid, gen)


async def test_a_will_is_not_claimed_before_its_deadline(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=5))
    d = await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    before = await dump(engine)
    (res,) = await engine.fire(a.epoch, "n1", 0, [FireRequest(r.gen, "c")])
    assert res.outcome is FireOutcome.NOT_DUE and res.due_ms == d.due_ms
    assert await dump(engine) == before
    batch = await engine.due(a.epoch)
    assert batch.wills == () and batch.next_due_ms == d.due_ms


async def test_fire_on_a_stale_routing_table_writes_nothing(engine: RedisEngine):
    a = await engine.register("n1")
    s1 = await engine.connect(a.epoch, "n1", "s1", False, 60, None)
    await engine.subscribe(a.epoch, "s1", s1.gen, [("dead/#", SubOptions(1))])
    replica = RouteReplica()
    await replica.sync(engine)
    r = await engine.connect(a.epoch, "n1", "dev", False, 60, will())
    await engine.disconnect(a.epoch, "dev", r.gen, normal=False)
    s2 = await engine.connect(a.epoch, "n1", "s2", False, 60, None)
    await engine.subscribe(a.epoch, "s2", s2.gen, [("dead/x", SubOptions(1))])  # the table moves on
    before = await dump(engine)
    with pytest.raises(StaleRoutes) as stale:
        await engine.fire(a.epoch, "n1", replica.version, [FireRequest(r.gen, "dev", replica.targets("dead/x", 1))])
    assert stale.value.version == replica.version + 1
    assert await dump(engine) == before
    await replica.sync(engine)
    (res,) = await engine.fire(a.epoch, "n1", replica.version, [FireRequest(r.gen, "dev", replica.targets("dead/x", 1))])
    assert res.receivers == 2  # the new subscriber got it too


async def test_will_retain_replaces_the_retained_message_MQTT_3_1_2_15_v5(engine: RedisEngine):
    a = await engine.register("n1")
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(topic="st/c", payload=b"offline", retain=True))
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    await engine.fire(a.epoch, "n1", 0, [FireRequest(r.gen, "c")])  # nobody subscribed: still retained
    (ret,) = await engine.retained(["st/c"])
    assert (ret.topic, ret.payload, ret.origin) == ("st/c", b"offline", "c")
    # a will with an empty payload clears it
    r2 = await engine.connect(a.epoch, "n1", "c", True, 60, will(topic="st/c", payload=b"", retain=True))
    await engine.disconnect(a.epoch, "c", r2.gen, normal=False)
    await engine.fire(a.epoch, "n1", 0, [FireRequest(r2.gen, "c")])
    assert await engine.retained(["st/c"]) == ()
    assert [k async for k in engine.client.scan_iter(match=engine.key("msg:*"))] == []


async def test_will_message_expiry_counts_from_publication_MQTT_3_3_2_5_v5(engine: RedisEngine):
    a = await engine.register("n1")
    s = await engine.connect(a.epoch, "n1", "s", False, 600, None)
    await engine.subscribe(a.epoch, "s", s.gen, [("dead/x", SubOptions(1))])
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will(delay=10, message_expiry=5))
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    await advance(engine, 10_000, a.epoch)
    (res,) = await engine.fire(a.epoch, "n1", 1, [FireRequest(r.gen, "c", (Target("s", 1),))])
    (rec,) = await engine.audit()
    (q,) = await engine.fetch(a.epoch, [_fetch("s", s.gen)])
    assert q.deliveries[0].expires_ms == rec.fired_ms + 5000
    await advance(engine, 5000, a.epoch)
    (q,) = await engine.fetch(a.epoch, [_fetch("s", s.gen)])
    assert q.deliveries == ()  # expired: dropped, not delivered
    assert [k async for k in engine.client.scan_iter(match=engine.key("msg:*"))] == []


async def test_a_will_the_acl_denies_is_removed_and_recorded_not_published(engine: RedisEngine):
    a = await engine.register("n1")
    s = await engine.connect(a.epoch, "n1", "s", False, 600, None)
    await engine.subscribe(a.epoch, "s", s.gen, [("dead/x", SubOptions(1))])
    r = await engine.connect(a.epoch, "n1", "c", False, 60, will())
    await engine.disconnect(a.epoch, "c", r.gen, normal=False)
    (res,) = await engine.fire(a.epoch, "n1", 1, [FireRequest(r.gen, "c", (Target("s", 1),), denied=True)])
    assert res.outcome is FireOutcome.DENIED and res.receivers == 0
    (q,) = await engine.fetch(a.epoch, [_fetch("s", s.gen)])
    assert q.deliveries == ()
    (rec,) = await engine.audit()
    assert rec.outcome is FireOutcome.DENIED
    await check_invariants(engine)


# -- late claims: connections a node served alone while it could not reach the engine -----------------
async def test_a_late_claim_takes_a_free_client_id_and_an_older_connection_over_MQTT_3_1_4_3(engine: RedisEngine):
    n1 = await engine.register("n1")
    n2 = await engine.register("n2")
    free = await engine.connect(n1.epoch, "n1", "fresh", True, 0, None, since_ms=await engine.now_ms())
    assert isinstance(free, ConnectResult) and not free.session_present
    old = await engine.connect(n2.epoch, "n2", "c", False, 60, will())  # before n1 accepted "c" alone
    await engine.advance_clock(5)
    late = await engine.connect(n1.epoch, "n1", "c", True, 0, None, since_ms=await engine.now_ms())
    assert isinstance(late, ConnectResult)
    assert late.kick is not None and late.kick.epoch == n2.epoch and late.kick.gen == old.gen
    assert [f.gen for f in late.fire_now] == [old.gen]  # Clean Start 1 ends the old session [MQTT-3.1.2-4]
    await check_invariants(engine)


async def test_a_late_claim_loses_to_a_connection_made_after_it_and_writes_nothing_MQTT_3_1_4_3(engine: RedisEngine):
    n1 = await engine.register("n1")
    n2 = await engine.register("n2")
    accepted_alone = await engine.now_ms()
    await engine.advance_clock(5)
    await engine.connect(n2.epoch, "n2", "c", True, 0, None)  # the same client id, later, on n2
    before = await dump(engine)
    late = await engine.connect(n1.epoch, "n1", "c", True, 0, None, since_ms=accepted_alone)
    assert isinstance(late, ClaimTaken) and late.connected_ms > accepted_alone
    assert await dump(engine) == before
    await check_invariants(engine)
