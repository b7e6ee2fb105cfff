"""What the cluster tests share: a dump of the engine's keys (to show a refused call wrote nothing),
the invariants of the engine's data, small builders."""

from __future__ import annotations

from lastwill.cluster.engine import RedisEngine
from lastwill.cluster.model import FireOutcome, WillSpec


def s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


async def dump(engine: RedisEngine) -> dict[bytes, bytes]:
    """Every key of the engine with its serialized value: equal dumps, equal data."""
    c = engine.client
    return {k: await c.dump(k) async for k in c.scan_iter(match=engine.prefix + "*")}


async def check_invariants(engine: RedisEngine, strict: bool = False) -> None:
    """The engine's data is coherent:
    - every due entry has its will (no due entry for a client without a will);
    - a session is owned by a live epoch, or by a fenced one still being reaped that lists it in its
      owned set (``strict``: by a live epoch only, i.e. after every reap finished);
    - no session is owned by a reaped epoch, and an owned set lists only sessions its epoch owns;
    - an armed will exists and is not due;
    - each will was fired at most once, and no audit record is from an epoch after its fence.
    """
    c, p = engine.client, engine.prefix
    due = {s(g): score for g, score in await c.zrange(p + "due", 0, -1, withscores=True)}
    for g in due:
        assert await c.exists(f"{p}will:{g}"), f"due entry {g} without a will"
    live = {s(e) for e in await c.zrange(p + "nodes", 0, -1)}
    reaping = {s(e) for e in await c.zrange(p + "reaping", 0, -1)}
    async for key in c.scan_iter(match=p + "sess:*"):
        cid = s(key)[len(p) + 5:]
        owner, will = (await c.hmget(key, "owner", "will"))
        owner = s(owner)
        if owner != "0":
            if strict:
                assert owner in live, f"session {cid} owned by fenced epoch {owner}"
            else:
                assert owner in live or (owner in reaping and await c.sismember(f"{p}owned:{owner}", cid)), \
                    f"session {cid} owned by epoch {owner}, neither live nor being reaped"
            assert s(await c.hget(f"{p}node:{owner}", "state")) != "reaped", f"session {cid} owned by reaped {owner}"
        if will is not None:
            assert owner != "0", f"offline session {cid} with an armed will"
            assert await c.exists(f"{p}will:{s(will)}"), f"armed will {s(will)} of {cid} missing"
            assert s(will) not in due, f"armed will {s(will)} of {cid} is also due"
    async for key in c.scan_iter(match=p + "owned:*"):
        epoch = s(key)[len(p) + 6:]
        for cid in await c.smembers(key):
            assert s(await c.hget(f"{p}sess:{s(cid)}", "owner")) == epoch, f"owned:{epoch} lists {s(cid)}"
    seen: set[int] = set()
    nodes: dict[int, list] = {}
    for rec in await engine.audit(count=10**7):
        assert rec.gen not in seen, f"will {rec.gen} fired twice"
        seen.add(rec.gen)
        assert rec.outcome in (FireOutcome.FIRED, FireOutcome.DENIED)
        assert rec.due_ms <= rec.fired_ms, f"will {rec.gen} fired before it was due"
        if rec.by_epoch not in nodes:
            nodes[rec.by_epoch] = await c.hmget(f"{p}node:{rec.by_epoch}", "fenced_ms", "lease_until")
        fenced_ms, lease_until = nodes[rec.by_epoch]
        assert fenced_ms is None or rec.fired_ms < int(fenced_ms), f"epoch {rec.by_epoch} fired after its fence"
        assert rec.fired_ms <= int(lease_until), f"epoch {rec.by_epoch} fired after its lease"


def will(topic: str = "dead/x", payload: bytes = b"gone", qos: int = 1, retain: bool = False, delay: int = 0,
         message_expiry: int | None = None, v5: bool = True) -> WillSpec:
    return WillSpec(topic, payload, qos, retain, b"", delay if v5 else 0, message_expiry, 5 if v5 else 4)


async def advance(engine: RedisEngine, ms: int, *epochs: int, step: int = 1000) -> None:
    """Move the engine clock by ``ms`` while the nodes of ``epochs`` keep beating (a beat per step)."""
    while ms > 0:
        d = min(step, ms)
        await engine.advance_clock(d)
        for e in epochs:
            await engine.heartbeat(e)
        ms -= d
