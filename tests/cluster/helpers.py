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


# everything the invariants read, in one round trip (a test-only read; KEYS is fine on a test server)
_STATE_LUA = """
local P = ARGV[1]
local due = redis.call('ZRANGE', P .. 'due', 0, -1)
local due_has_will = {}
for i, g in ipairs(due) do due_has_will[i] = redis.call('EXISTS', P .. 'will:' .. g) end
local sessions = {}
for _, k in ipairs(redis.call('KEYS', P .. 'sess:*')) do
  local f = redis.call('HMGET', k, 'owner', 'will')
  local w = f[2] or ''
  sessions[#sessions + 1] = {string.sub(k, #P + 6), f[1], w, w ~= '' and redis.call('EXISTS', P .. 'will:' .. w) or 0}
end
local owned = {}
for _, k in ipairs(redis.call('KEYS', P .. 'owned:*')) do
  owned[#owned + 1] = {string.sub(k, #P + 7), redis.call('SMEMBERS', k)}
end
local nodes = {}
for _, k in ipairs(redis.call('KEYS', P .. 'node:*')) do
  local f = redis.call('HMGET', k, 'state', 'fenced_ms', 'lease_until')
  nodes[#nodes + 1] = {string.sub(k, #P + 6), f[1] or '', f[2] or '', f[3] or ''}
end
local wills = {}
for _, k in ipairs(redis.call('KEYS', P .. 'will:*')) do wills[#wills + 1] = string.sub(k, #P + 6) end
return {due, due_has_will, sessions, owned, nodes, redis.call('ZRANGE', P .. 'nodes', 0, -1),
        redis.call('ZRANGE', P .. 'reaping', 0, -1), wills}
"""


async def check_invariants(engine: RedisEngine, strict: bool = False) -> None:
    """The engine's data is coherent:
    - every due entry has its will (no due entry for a client without a will);
    - a session is owned by a live epoch, or by a fenced one still being reaped that lists it in its
      owned set (``strict``: by an epoch in the live set only, i.e. after every reap finished);
    - no session is owned by a reaped epoch, and an owned set lists only sessions its epoch owns;
    - an armed will exists and is not due; an offline session has no armed will; every stored will is
      armed or due (none leaked);
    - each will was fired at most once, never before it was due, and no audit record is from an epoch
      after its fence (nor after its lease).
    """
    due, has_will, sessions, owned, nodes, live, reaping, wills = await engine.client.eval(_STATE_LUA, 0, engine.prefix)
    due = [s(g) for g in due]
    for g, ok in zip(due, has_will, strict=True):
        assert ok, f"due entry {g} without a will"
    due_set = set(due)
    live = {s(e) for e in live}
    reaping = {s(e) for e in reaping}
    node = {s(e): (s(st), s(fenced), s(until)) for e, st, fenced, until in nodes}
    members = {s(e): {s(c) for c in m} for e, m in owned}
    owner_of: dict[str, str] = {}
    for cid, owner, w, w_exists in sessions:
        cid, owner, w = s(cid), s(owner), s(w)
        owner_of[cid] = owner
        if owner != "0":
            if strict:
                assert owner in live, f"session {cid} owned by fenced epoch {owner}"
            else:
                assert owner in live or (owner in reaping and cid in members.get(owner, ())), \
                    f"session {cid} owned by epoch {owner}, neither live nor being reaped"
            assert node[owner][0] != "reaped", f"session {cid} owned by reaped epoch {owner}"
        if w:
            assert owner != "0", f"offline session {cid} with an armed will"
            assert w_exists, f"armed will {w} of {cid} missing"
            assert w not in due_set, f"armed will {w} of {cid} is also due"
    armed = {s(w) for _, _, w, _ in sessions if s(w)}
    for g in wills:
        assert s(g) in due_set or s(g) in armed, f"will {s(g)} neither armed nor due (leaked)"
    for epoch, cids in members.items():
        for cid in cids:
            assert owner_of.get(cid) == epoch, f"owned:{epoch} lists {cid}"
    seen: set[int] = set()
    for rec in await engine.audit(count=10**7):
        assert rec.gen not in seen, f"will {rec.gen} fired twice"
        seen.add(rec.gen)
        assert rec.outcome in (FireOutcome.FIRED, FireOutcome.DENIED)
        assert rec.due_ms <= rec.fired_ms, f"will {rec.gen} fired before it was due"
        _state, fenced_ms, lease_until = node[str(rec.by_epoch)]
        assert not fenced_ms or rec.fired_ms < int(fenced_ms), f"epoch {rec.by_epoch} fired after its fence"
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
