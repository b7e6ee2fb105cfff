"""Hypothesis stateful tests of the engine's scripts against a real redis-server: random sequences of
node registrations, beats, clock moves, CONNECTs, disconnections, subscriptions, reaps, claims and
session expiry, with the engine's invariants checked after every step."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from lastwill.cluster.engine import RedisEngine
from lastwill.cluster.model import NEVER, Fenced, FireOutcome, FireRequest, StaleRoutes, WillOutcome
from lastwill.cluster.replica import RouteReplica
from lastwill.core.topics import SubOptions

from .conftest import make_engine
from .helpers import check_invariants, will

pytestmark = pytest.mark.timeout(120)

NODES = ("n1", "n2", "n3")
CLIENTS = ("c0", "c1", "c2", "c3")
FILTERS = ("dead/#", "dead/c0", "$share/g/dead/+")


class EngineMachine(RuleBasedStateMachine):
    port: int = 0
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.engine: RedisEngine = make_engine(self.port)
        self.run(self.engine.client.flushall())
        self.epoch: dict[str, int | None] = dict.fromkeys(NODES)
        self.conn: dict[str, tuple[int, int]] = {}  # client -> (epoch, gen) of its connection
        self.cancelled: set[int] = set()  # will generations discarded unpublished
        self.replica = RouteReplica()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.client.aclose())

    def _call(self, node: str, make):
        """Run a call as ``node``; a fenced node forgets its epoch (it would re-register)."""
        epoch = self.epoch[node]
        if epoch is None:
            return None
        try:
            return self.run(make(epoch))
        except Fenced:
            self.epoch[node] = None
            return None

    @initialize()
    def start(self) -> None:
        for n in NODES[:2]:
            self.epoch[n] = self.run(self.engine.register(n)).epoch

    @rule(node=st.sampled_from(NODES))
    def register(self, node: str) -> None:
        self.epoch[node] = self.run(self.engine.register(node)).epoch

    @rule(node=st.sampled_from(NODES))
    def beat(self, node: str) -> None:
        self._call(node, lambda e: self.engine.heartbeat(e))

    @rule()
    def beat_all(self) -> None:
        for node in NODES:
            self._call(node, lambda e: self.engine.heartbeat(e))

    @rule(ms=st.sampled_from([100, 400, 1000, 2500]))
    def tick(self, ms: int) -> None:
        self.run(self.engine.advance_clock(ms))

    @rule(node=st.sampled_from(NODES), cid=st.sampled_from(CLIENTS), clean=st.booleans(),
          expiry=st.sampled_from([0, 3, NEVER]), delay=st.sampled_from([None, 0, 2, 10]), v5=st.booleans())
    def connect(self, node, cid, clean, expiry, delay, v5) -> None:
        w = None if delay is None else will(topic=f"dead/{cid}", payload=cid.encode(), delay=delay, v5=v5)
        r = self._call(node, lambda e: self.engine.connect(e, node, cid, clean, expiry, w))
        if r is not None:
            self.conn[cid] = (self.epoch[node], r.gen)
            self.cancelled.update(c.gen for c in r.cancelled)

    @rule(cid=st.sampled_from(CLIENTS), normal=st.booleans(), expiry=st.sampled_from([None, 0, 5]))
    def disconnect(self, cid, normal, expiry) -> None:
        if cid not in self.conn:
            return
        epoch, gen = self.conn.pop(cid)
        node = next((n for n, e in self.epoch.items() if e == epoch), None)
        if node is None:
            return  # that incarnation is gone: it can no longer end the connection
        r = self._call(node, lambda e: self.engine.disconnect(e, cid, gen, normal, expiry, "eof"))
        if r is not None and r.outcome is WillOutcome.CANCELLED:
            self.cancelled.add(r.will_gen)

    @rule(cid=st.sampled_from(CLIENTS), f=st.sampled_from(FILTERS))
    def subscribe(self, cid, f) -> None:
        if cid not in self.conn:
            return
        epoch, gen = self.conn[cid]
        node = next((n for n, e in self.epoch.items() if e == epoch), None)
        if node is not None:
            self._call(node, lambda e: self.engine.subscribe(e, cid, gen, [(f, SubOptions(1))]))

    @rule(node=st.sampled_from(NODES), rgrace=st.sampled_from([0, 2000]), to_the_end=st.booleans())
    def reap(self, node, rgrace, to_the_end) -> None:
        while True:
            r = self._call(node, lambda e: self.engine.reap(e, recovery_grace_ms=rgrace, batch=2))
            if r is None or not to_the_end or r.remaining == 0:
                break
        if to_the_end and r is not None:
            self.run(check_invariants(self.engine, strict=True))

    @rule(node=st.sampled_from(NODES))
    def fire(self, node) -> None:
        batch = self._call(node, lambda e: self.engine.due(e, limit=10))
        if not batch or not batch.wills:
            return
        for _ in range(3):
            self.run(self.replica.sync(self.engine))
            reqs = [FireRequest(w.gen, w.client_id, self.replica.targets(w.topic, w.qos, w.retain, w.client_id))
                    for w in batch.wills]
            try:
                res = self._call(node, lambda e, reqs=reqs: self.engine.fire(e, node, self.replica.version, reqs))
            except StaleRoutes:
                continue
            if res is not None:
                assert all(x.outcome in (FireOutcome.FIRED, FireOutcome.GONE) for x in res)
            return

    @rule()
    def fire_from_every_node_at_once(self) -> None:
        """Every live node claims the same due wills concurrently: each one fired once, the rest GONE."""
        live = [(n, e) for n, e in self.epoch.items() if e is not None]
        if not live:
            return
        batch = self._call(live[0][0], lambda e: self.engine.due(e, limit=20))
        if not batch or not batch.wills:
            return
        self.run(self.replica.sync(self.engine))
        reqs = [FireRequest(w.gen, w.client_id, self.replica.targets(w.topic, w.qos, w.retain, w.client_id))
                for w in batch.wills]

        async def claim(node: str, epoch: int):
            try:
                return await self.engine.fire(epoch, node, self.replica.version, reqs)
            except (Fenced, StaleRoutes):
                return None
        async def all_at_once():
            return await asyncio.gather(*[claim(n, e) for n, e in live])
        results = [r for r in self.run(all_at_once()) if r is not None]
        for i in range(len(reqs)):
            outcomes = [r[i].outcome for r in results]
            assert outcomes.count(FireOutcome.FIRED) <= 1, outcomes

    @rule(node=st.sampled_from(NODES))
    def expire(self, node) -> None:
        self._call(node, lambda e: self.engine.expire(e))

    @invariant()
    def engine_is_coherent(self) -> None:
        self.run(check_invariants(self.engine))
        fired = {r.gen for r in self.run(self.engine.audit(count=100_000))}
        assert not fired & self.cancelled, f"cancelled wills fired: {fired & self.cancelled}"


def test_engine_scripts_keep_their_invariants(redis_server, loop):
    EngineMachine.port = redis_server.port
    EngineMachine.loop = loop
    # no shrinking phase: each replay costs real round trips, and shrinking a failure would run for
    # minutes; a failure prints its whole (unshrunk) sequence of steps
    run_state_machine_as_test(EngineMachine, settings=settings(
        max_examples=30, stateful_step_count=50, deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
