"""10,000 wills due at once, three nodes claiming them concurrently (each on its own connection):
each fired exactly once, the audit records agree with what the claimants were told, none starved."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from lastwill.cluster.engine import ClusterSettings, RedisEngine
from lastwill.cluster.model import FetchRequest, FireOutcome, FireRequest
from lastwill.cluster.replica import RouteReplica
from lastwill.core.topics import SubOptions

from .conftest import make_engine
from .helpers import check_invariants, will

pytestmark = pytest.mark.timeout(120)

N = 10_000
LONG = ClusterSettings(lease_ms=120_000, beat_ms=20_000, grace_ms=2_000)


async def node_dies_holding_wills(engine: RedisEngine, n: int, chunk: int = 1000) -> tuple[int, dict[str, int]]:
    """Node n0 connects n clients with a will (delay 0, pipelined), then stops beating: its epoch and
    the generations of the wills."""
    reg = await engine.register("n0")
    gens: dict[str, int] = {}
    for start in range(0, n, chunk):
        ids = [f"dev{i}" for i in range(start, min(n, start + chunk))]
        conns = await engine.run(*[engine.call_connect(reg.epoch, "n0", c, True, 0, will(topic=f"dead/{c}",
                                   payload=c.encode(), qos=1)) for c in ids])
        gens.update({c: r.gen for c, r in zip(ids, conns, strict=True)})
    await engine.advance_clock(engine.settings.lease_ms + engine.settings.grace_ms + 1)
    return reg.epoch, gens


async def claimant(engine: RedisEngine, epoch: int, node: str, routever: int, replica: RouteReplica,
                   told: Counter, rng: random.Random) -> None:
    while True:
        batch = await engine.due(epoch, limit=100, offset=rng.randrange(0, 2000))
        if not batch.wills:
            if batch.next_due_ms is None:
                return
            continue
        requests = [FireRequest(w.gen, w.client_id, replica.targets(w.topic, w.qos, w.retain, w.client_id))
                    for w in batch.wills]
        for r in await engine.fire(epoch, node, routever, requests):
            told[(node, r.outcome)] += 1


async def test_ten_thousand_due_wills_three_claimants_each_fired_exactly_once(engine: RedisEngine, redis_server):
    setup = make_engine(redis_server.port, LONG)
    claimants = [make_engine(redis_server.port, LONG) for _ in range(3)]
    try:
        dead, gens = await node_dies_holding_wills(setup, N)
        src = await setup.register("n9")
        obs = await setup.connect(src.epoch, "n9", "observer", False, NEVER_EXPIRES, None)
        await setup.subscribe(src.epoch, "observer", obs.gen, [("dead/#", SubOptions(qos=1))])
        regs = [await c.register(f"n{i + 1}") for i, c in enumerate(claimants)]
        # a survivor reaps the dead node: its 10,000 wills are due at its lease end (recovery grace 0)
        while (await claimants[0].reap(regs[0].epoch, recovery_grace_ms=0)).remaining:
            pass
        assert await setup.client.zcard(setup.key("due")) == N
        replica = RouteReplica()
        version = await replica.sync(setup)
        told: Counter = Counter()
        await asyncio.gather(*[claimant(c, r.epoch, f"n{i + 1}", version, replica, told, random.Random(i))
                               for i, (c, r) in enumerate(zip(claimants, regs, strict=True))])
        fired = {node: told[(node, FireOutcome.FIRED)] for node in ("n1", "n2", "n3")}
        assert sum(fired.values()) == N
        # no claimant starved: each fired a fair part (a third would be 3,333)
        assert all(n >= N // 30 for n in fired.values()), fired
        # the audit: one record per will, by the node that was told FIRED
        records = await setup.audit(count=2 * N)
        assert len(records) == N and {r.gen for r in records} == set(gens.values())
        assert Counter(r.node_id for r in records) == Counter(fired)
        assert all(r.outcome is FireOutcome.FIRED and r.receivers == 1 for r in records)
        assert {(r.cause, r.dead_node, r.dead_epoch) for r in records} == {("node_died", "n0", dead)}
        # the observer's queue: every token exactly once
        (q,) = await setup.fetch(src.epoch, [FetchRequest("observer", obs.gen, count=2 * N)])
        assert sorted(d.payload.decode() for d in q.deliveries) == sorted(gens)
        assert await setup.client.zcard(setup.key("due")) == 0
        await check_invariants(setup)
    finally:
        for e in (setup, *claimants):
            await e.client.aclose()


NEVER_EXPIRES = 0xFFFFFFFF
