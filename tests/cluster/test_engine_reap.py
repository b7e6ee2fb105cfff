"""A dead node's sessions and wills: fenced, reaped in resumable batches, due at lease end +
max(recovery grace, min(Will Delay, Session Expiry)); a client back in time cancels its will;
a Redis kill -9 in the middle of a reap loses nothing."""

from __future__ import annotations

import pytest

from lastwill.cluster.engine import ClusterSettings, RedisEngine
from lastwill.cluster.model import NEVER, CancelCause, Fenced, FireOutcome, FireRequest

from .conftest import make_engine
from .helpers import advance, check_invariants, will
from .redis_proc import RedisServer

pytestmark = pytest.mark.timeout(60)


async def _lapse(engine: RedisEngine, dead: int, *survivors: int) -> int:
    """Let ``dead`` stop beating until its lease ended more than grace ago; its lease end."""
    lease_end = int(await engine.client.zscore(engine.key("nodes"), dead))
    s = engine.settings
    await advance(engine, s.lease_ms + s.grace_ms + 10, *survivors, step=300)
    return lease_end


async def _due(engine: RedisEngine) -> dict[int, int]:
    return {int(g): int(t) for g, t in await engine.client.zrange(engine.key("due"), 0, -1, withscores=True)}


async def test_reap_fences_the_dead_node_and_defers_its_wills_from_its_lease_end(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r5 = await engine.connect(a.epoch, "n1", "v5", False, 60, will(delay=3))
    r4 = await engine.connect(a.epoch, "n1", "v311", True, 0, will(delay=0, v5=False))
    rx = await engine.connect(a.epoch, "n1", "short", False, 1, will(delay=5))  # the session ends first
    await engine.connect(a.epoch, "n1", "plain", True, 0, None)  # nothing to keep
    await engine.connect(a.epoch, "n1", "keep", False, NEVER, None)
    # not yet: the lease ended, but not grace ago; the dead node is already fenced
    await advance(engine, engine.settings.lease_ms + 1, b.epoch, step=300)
    with pytest.raises(Fenced):
        await engine.heartbeat(a.epoch)
    lease_end = await _lapse(engine, a.epoch, b.epoch)
    r = await engine.reap(b.epoch, recovery_grace_ms=0)
    assert [(f.epoch, f.node_id, f.lease_end_ms) for f in r.fenced] == [(a.epoch, "n1", lease_end)]
    assert r.finished == (a.epoch,) and r.remaining == 0
    assert {x.client_id for x in r.reaped} == {"v5", "v311", "short", "plain", "keep"}
    assert await _due(engine) == {r5.gen: lease_end + 3000, r4.gen: lease_end, rx.gen: lease_end + 1000}
    assert not await engine.client.exists(engine.key("sess:plain"))
    assert await engine.client.hget(engine.key("sess:keep"), "owner") == b"0"
    assert await engine.client.hget(engine.key(f"will:{r5.gen}"), "dead_node") == b"n1"
    node = await engine.client.hgetall(engine.key(f"node:{a.epoch}"))
    assert node[b"state"] == b"reaped" and int(node[b"fenced_by"]) == b.epoch
    await check_invariants(engine, strict=True)
    # the wills fire as due, saying why
    batch = await engine.due(b.epoch)
    due = await _due(engine)
    assert {w.gen for w in batch.wills} == {g for g, t in due.items() if t <= batch.now_ms}
    assert r4.gen in {w.gen for w in batch.wills}  # 3.1.1: lease end + recovery grace 0
    assert r5.gen not in {w.gen for w in batch.wills} and batch.next_due_ms == min(due.values())
    assert {(w.cause, w.dead_node, w.dead_epoch, w.ended_ms) for w in batch.wills} == \
        {("node_died", "n1", a.epoch, lease_end)}


async def test_reap_keeps_the_recovery_grace(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r4 = await engine.connect(a.epoch, "n1", "v311", True, 0, will(v5=False))
    r5 = await engine.connect(a.epoch, "n1", "v5", False, 60, will(delay=10))
    lease_end = await _lapse(engine, a.epoch, b.epoch)
    await engine.reap(b.epoch, recovery_grace_ms=5000)
    assert await _due(engine) == {r4.gen: lease_end + 5000, r5.gen: lease_end + 10_000}
    # the expiry-0 session with a will is kept for the grace period, so a client back in time resumes it
    assert int(await engine.client.zscore(engine.key("sessdue"), "v311")) == lease_end + 5000


async def test_a_client_back_within_the_recovery_grace_cancels_its_will(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "dev", True, 0, will(v5=False))
    lease_end = await _lapse(engine, a.epoch, b.epoch)
    await engine.reap(b.epoch, recovery_grace_ms=5000)
    back = await engine.connect(b.epoch, "n2", "dev", False, 0, None, recovery_grace_ms=5000)
    (c,) = back.cancelled
    assert (c.gen, c.due_ms, c.cause, c.dead_node) == (r.gen, lease_end + 5000, CancelCause.NODE_DIED, "n1")
    assert back.session_present and await _due(engine) == {}
    await check_invariants(engine, strict=True)


async def test_a_client_back_before_the_reap_cancels_its_will_too(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "dev", False, 60, will(delay=30))
    await _lapse(engine, a.epoch, b.epoch)  # nobody reaped yet
    back = await engine.connect(b.epoch, "n2", "dev", False, 60, None)
    assert back.kick is None  # the dead node is not kicked
    (c,) = back.cancelled
    assert c.gen == r.gen and c.cause is CancelCause.NODE_DIED
    assert not await engine.client.sismember(engine.key(f"owned:{a.epoch}"), "dev")
    r2 = await engine.reap(b.epoch)
    assert r2.reaped == () and r2.finished == (a.epoch,)
    await check_invariants(engine, strict=True)


async def test_a_client_back_after_its_due_time_does_not_cancel(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    r = await engine.connect(a.epoch, "n1", "dev", False, 60, will(delay=0))
    await _lapse(engine, a.epoch, b.epoch)  # grace passed, delay 0, recovery grace 0: due
    back = await engine.connect(b.epoch, "n2", "dev", False, 60, None)
    assert [f.gen for f in back.fire_now] == [r.gen] and not back.cancelled
    (res,) = await engine.fire(b.epoch, "n2", 0, [FireRequest(r.gen, "dev")])
    assert res.outcome is FireOutcome.FIRED


async def test_reap_resumes_where_a_dead_reaper_stopped(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    c = await engine.register("n3")
    gens = {}
    for i in range(35):
        r = await engine.connect(a.epoch, "n1", f"c{i}", False, 60, will(delay=1))
        gens[f"c{i}"] = r.gen
    lease_end = await _lapse(engine, a.epoch, b.epoch, c.epoch)
    first = await engine.reap(b.epoch, batch=10)
    assert len(first.reaped) == 10 and first.remaining == 1 and first.finished == ()
    await check_invariants(engine)  # half-way: sessions still owned by the fenced epoch are listed
    # the reaper dies: its lease lapses; the third node goes on
    await advance(engine, engine.settings.lease_ms + engine.settings.grace_ms + 10, c.epoch, step=300)
    done, rounds = [], 0
    while True:
        r = await engine.reap(c.epoch, batch=10)
        rounds += 1
        done += r.reaped
        if r.remaining == 0:
            break
    assert {x.client_id for x in done if x.dead_epoch == a.epoch} | {x.client_id for x in first.reaped} == set(gens)
    assert len(done) + len(first.reaped) == 35  # each session once (the dead reaper owned none)
    assert await _due(engine) == {g: lease_end + 1000 for g in gens.values()}
    await check_invariants(engine, strict=True)


async def test_redis_kill_9_and_restart_from_aof_in_the_middle_of_a_reap_loses_nothing(tmp_path, loop):
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = ClusterSettings(lease_ms=1500, beat_ms=300, grace_ms=500)
    engine = make_engine(server.port, settings)
    try:
        a = await engine.register("n1")
        b = await engine.register("n2")
        gens = {}
        calls = [engine.call_connect(a.epoch, "n1", f"c{i}", False, 60, will(delay=2)) for i in range(200)]
        for i, r in enumerate(await engine.run(*calls)):
            gens[f"c{i}"] = r.gen
        lease_end = await _lapse(engine, a.epoch, b.epoch)
        first = await engine.reap(b.epoch, batch=50)
        assert len(first.reaped) == 50
        server.restart_from_aof()  # kill -9, then the AOF brings back every acknowledged write
        await engine.client.aclose()
        engine = make_engine(server.port, settings)  # a new connection (scripts reloaded on NOSCRIPT)
        await engine.heartbeat(b.epoch)
        n = len(first.reaped)
        while True:
            r = await engine.reap(b.epoch, batch=50)
            n += len(r.reaped)
            if r.remaining == 0:
                break
        assert n == 200 and engine.script_loads == 1
        assert await _due(engine) == {g: lease_end + 2000 for g in gens.values()}
        await check_invariants(engine, strict=True)
    finally:
        await engine.client.aclose()
        server.stop()
