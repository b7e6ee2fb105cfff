"""Node incarnations, leases and fencing: a node whose lease lapsed writes nothing."""

from __future__ import annotations

import asyncio

import pytest

from lastwill.cluster.engine import RedisEngine
from lastwill.cluster.lease import LocalLease
from lastwill.cluster.model import Ack, Fenced, FetchRequest, FireRequest, OutMessage, Target
from lastwill.cluster.seams import Router, SessionOwnership, WillFiring
from lastwill.core.topics import SubOptions

from .helpers import check_invariants, dump, will

pytestmark = pytest.mark.timeout(60)


async def test_epochs_are_new_for_every_registration(engine: RedisEngine):
    a = await engine.register("n1", "127.0.0.1:1883")
    b = await engine.register("n2", "127.0.0.1:1884")
    c = await engine.register("n3")
    assert a.epoch < b.epoch < c.epoch
    assert a.replaced is None and b.replaced is None
    now = await engine.now_ms()
    assert now < a.lease_until_ms <= now + engine.settings.lease_ms


async def test_registering_a_node_id_again_fences_its_previous_incarnation(engine: RedisEngine):
    old = await engine.register("n1")
    new = await engine.register("n1")
    assert new.replaced == old.epoch and new.epoch > old.epoch
    with pytest.raises(Fenced):
        await engine.heartbeat(old.epoch)
    await engine.heartbeat(new.epoch)
    # the old incarnation is reaped like a dead node, counted from now
    r = await engine.reap(new.epoch)
    assert r.finished == (old.epoch,)


async def test_heartbeat_extends_the_lease(engine: RedisEngine):
    reg = await engine.register("n1")
    await engine.advance_clock(1000)
    until = await engine.heartbeat(reg.epoch)
    assert until >= reg.lease_until_ms + 1000
    await engine.advance_clock(1000)  # 2 s after registering: alive thanks to the beat
    await engine.heartbeat(reg.epoch)


async def test_a_lapsed_lease_is_not_renewed(engine: RedisEngine):
    reg = await engine.register("n1")
    await engine.advance_clock(engine.settings.lease_ms + 1)
    with pytest.raises(Fenced):
        await engine.heartbeat(reg.epoch)
    again = await engine.register("n1")  # rejoins under a new epoch
    assert again.epoch > reg.epoch


async def test_lease_lapses_on_the_real_engine_clock(engine: RedisEngine):
    # no advance_clock: Redis TIME alone ends the lease
    reg = await engine.register("n1", lease_ms=200)
    await engine.heartbeat(reg.epoch, lease_ms=200)
    await asyncio.sleep(0.4)
    with pytest.raises(Fenced):
        await engine.heartbeat(reg.epoch, lease_ms=200)


async def test_a_fenced_node_writes_nothing(engine: RedisEngine):
    a = await engine.register("n1")
    b = await engine.register("n2")
    sub = await engine.connect(b.epoch, "n2", "sub", False, 60, None)
    await engine.subscribe(b.epoch, "sub", sub.gen, [("dead/#", SubOptions(qos=1))])
    c1 = await engine.connect(a.epoch, "n1", "c1", False, 60, will(delay=0))
    await engine.disconnect(a.epoch, "c1", c1.gen, normal=False)  # due now
    c2 = await engine.connect(a.epoch, "n1", "c2", False, 60, will(delay=5))
    await engine.publish(a.epoch, 1, [OutMessage("dead/m", b"x", 1, False, (Target("sub", 1),))])
    await engine.advance_clock(engine.settings.lease_ms + 1)  # both leases lapse
    b2 = await engine.register("n3")  # a survivor
    before = await dump(engine)
    e = a.epoch
    attempts = [
        engine.heartbeat(e), engine.deregister(e), engine.reap(e),
        engine.connect(e, "n1", "c3", True, 0, will()), engine.connect(e, "n1", "c2", False, 60, None),
        engine.disconnect(e, "c2", c2.gen, normal=False), engine.disconnect(e, "c2", c2.gen, normal=True),
        engine.subscribe(e, "c2", c2.gen, [("a/b", SubOptions())]), engine.expire(e),
        engine.publish(e, 1, [OutMessage("dead/m", b"x", 1, True, (Target("sub", 1),))]),
        engine.due(e), engine.fire(e, "n1", 1, [FireRequest(c1.gen, "c1", (Target("sub", 1),))]),
        engine.fetch(e, [FetchRequest("sub", sub.gen)]), engine.ack(e, [Ack("sub", sub.gen, "0-1")]),
    ]
    for attempt in attempts:
        with pytest.raises(Fenced):
            await attempt
    assert await dump(engine) == before  # nothing written by any of them
    # the survivor reaps the fenced node; the invariants hold
    await engine.reap(b2.epoch, grace_ms=0)
    await check_invariants(engine)


async def test_the_engine_implements_the_three_seams(engine: RedisEngine):
    assert isinstance(engine, SessionOwnership)
    assert isinstance(engine, Router)
    assert isinstance(engine, WillFiring)


def test_local_lease_counts_from_the_send_time_of_the_last_acknowledged_beat():
    lease = LocalLease(lease_ms=10_000, margin_ms=500)
    assert not lease.valid(0.0)
    lease.renewed(sent_at=100.0)
    assert lease.valid(109.4) and not lease.valid(109.5)
    lease.renewed(sent_at=99.0)  # an older beat acknowledged late does not shorten it
    assert lease.valid(109.4)
    lease.renewed(sent_at=102.0)
    assert lease.valid(111.4) and lease.remaining(111.0) == pytest.approx(0.5)
