"""The Redis engine of a lastwill cluster: Lua scripts (``scripts/*.lua``) and the calls that run them.

Every change that touches more than one key is one script, so it is atomic; every script of a node
first checks that the caller's epoch holds a live lease (``Fenced`` otherwise, nothing written).
Each script is ``lib.lua`` followed by its own file, loaded with SCRIPT LOAD and run with EVALSHA
(loaded again when the server answers NOSCRIPT, e.g. after a restart).

One call is one round trip. ``run(*calls)`` sends several in one pipeline: one round trip for all
(what a node does once per event-loop turn). The calls that take lists (``publish``, ``fetch``,
``ack``, ``fire``) batch inside one script.

The data model, each script's contract and what is guaranteed: docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ..core.topics import SubOptions
from . import replies as rp  # decoding the scripts' replies, encoding their arguments
from .model import (
    NEVER,
    Ack,
    AckResult,
    AuditRecord,
    Broadcast,
    CancelCause,
    CancelledWill,
    ClaimTaken,
    ConnectResult,
    DisconnectResult,
    Doorbell,
    DueBatch,
    DueRef,
    DueWill,
    EngineConfigError,
    EngineInfo,
    ExpireResult,
    Feed,
    Fenced,
    FencedNode,
    FetchRequest,
    FireOutcome,
    FireRequest,
    FireResult,
    Held,
    Kick,
    Kicked,
    Mark,
    OutMessage,
    ReapedSession,
    ReapResult,
    Registration,
    ResyncNeeded,
    Retained,
    RouteChange,
    RouteOp,
    RoutesChanged,
    RouteSnapshot,
    SessionQueue,
    StaleRoutes,
    SubscribeResult,
    Target,
    WillOutcome,
    WillSpec,
    decode_options,
    encode_options,
)
from .model import Delivery as QueuedDelivery

# the replies' decoders under short names: they are on nearly every line of the calls below
_s, _i, _oi, _os, _user = rp.text, rp.integer, rp.optional_integer, rp.optional_text, rp.user
_enc_user, _sids, _enc_sids, _flag, _pairs = (rp.encode_user, rp.subscription_ids, rp.encode_subscription_ids,
                                              rp.flag, rp.groups)

SCRIPTS = ("register", "heartbeat", "deregister", "reap", "connect", "disconnect", "due", "fire", "publish",
           "fetch", "ack", "mark", "subscribe", "expire", "retained", "snapshot", "clock")


def script_source(name: str) -> str:
    """The text SCRIPT LOAD gets for a script: lib.lua, then the script's own file."""
    base = resources.files(__package__).joinpath("scripts")
    return base.joinpath("lib.lua").read_text("utf-8") + "\n" + base.joinpath(f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Lease, beat and grace (issue 13's defaults; tests use shorter ones)."""

    lease_ms: int = 10_000  # how long a heartbeat keeps a node's epoch live
    beat_ms: int = 2_000  # how often a node renews it
    grace_ms: int = 2_000  # how long after a lease ended the survivors reap the node
    recovery_grace_ms: int = 0  # recovery_grace: a will of a dead node's client waits at least this
    reap_batch: int = 500  # sessions per reap call (bounds how long one script blocks the server)


class Call(NamedTuple):
    """One script call, prepared: what ``RedisEngine.run`` sends."""

    script: str
    args: tuple
    parse: Callable[[Any], Any]


def _targets(targets: Sequence[Target]) -> list:
    args: list = [len(targets)]
    for t in targets:
        args += [t.client_id, t.qos, _flag(t.retain), _enc_sids(t.subscription_ids)]
    return args


class RedisEngine:
    """The cluster's engine on one Redis 7 primary (or Valkey). Implements the seams of seams.py."""

    def __init__(self, client: Redis, prefix: str = "lw:", settings: ClusterSettings | None = None):
        self.client = client
        self.prefix = prefix
        self.settings = settings or ClusterSettings()
        self._anchor = prefix + "epoch"  # KEYS[1] of every script (see lib.lua)
        self._sources = {name: script_source(name) for name in SCRIPTS}
        self._shas = {name: hashlib.sha1(text.encode("utf-8")).hexdigest() for name, text in self._sources.items()}
        self.round_trips = 0  # calls to the server (a pipeline counts once): for measurements
        self.script_loads = 0

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- running scripts ----------------------------------------------------------------------------
    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (also done by itself on NOSCRIPT)."""
        pipe = self.client.pipeline(transaction=False)
        for text in self._sources.values():
            pipe.script_load(text)
        await pipe.execute()
        self.round_trips += 1
        self.script_loads += 1

    async def run(self, *calls: Call) -> list:
        """Run the calls in one round trip (a pipeline); their parsed results, in order. A refusal
        (``Fenced``, ``StaleRoutes``) of any call is raised after all ran."""
        if not calls:
            return []
        if len(calls) == 1:
            c = calls[0]
            try:
                self.round_trips += 1
                raw = await self.client.evalsha(self._shas[c.script], 1, self._anchor, self.prefix, *c.args)
            except NoScriptError:
                await self.load_scripts()
                self.round_trips += 1
                raw = await self.client.evalsha(self._shas[c.script], 1, self._anchor, self.prefix, *c.args)
            return [c.parse(raw)]
        raws = await self._pipeline_with_scripts(calls)
        for r in raws:
            if isinstance(r, Exception):
                raise r
        results: list = []
        refusal: Exception | None = None
        for c, r in zip(calls, raws, strict=True):
            try:
                results.append(c.parse(r))
            except (Fenced, StaleRoutes) as e:
                refusal = refusal or e
                results.append(e)
        if refusal is not None:
            raise refusal
        return results

    async def _pipeline_with_scripts(self, calls: Sequence[Call]) -> list:
        """One pipeline; the calls that found their script missing (Redis restarted or flushed its
        script cache) run again, in a second pipeline, once the scripts are loaded."""
        raws = await self._pipeline(calls)
        if any(isinstance(r, NoScriptError) for r in raws):
            await self.load_scripts()
            again = [i for i, r in enumerate(raws) if isinstance(r, NoScriptError)]
            for i, r in zip(again, await self._pipeline([calls[i] for i in again]), strict=True):
                raws[i] = r
        return raws

    async def run_all(self, calls: Sequence[Call]) -> list:
        """Run the calls in one round trip (a pipeline); each one's parsed result or, in its place, the
        exception it raised (``Fenced``, ``StaleRoutes``, a server error). A connection error raises."""
        if not calls:
            return []
        raws = await self._pipeline_with_scripts(calls)
        results: list = []
        for c, r in zip(calls, raws, strict=True):
            if isinstance(r, Exception):
                results.append(r)
                continue
            try:
                results.append(c.parse(r))
            except Exception as e:  # noqa: BLE001 - handed to the caller, per call
                results.append(e)
        return results

    async def _pipeline(self, calls: Sequence[Call]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(self._shas[c.script], 1, self._anchor, self.prefix, *c.args)
        self.round_trips += 1
        return list(await pipe.execute(raise_on_error=False))

    async def _one(self, call: Call) -> Any:
        return (await self.run(call))[0]

    # -- start-up checks ----------------------------------------------------------------------------
    async def check_engine(self, allow_unsafe: bool = False) -> EngineInfo:
        """Refuse (EngineConfigError naming the setting) an engine that would lose wills: eviction on,
        AOF off, a test clock set. ``allow_unsafe``: only for tests."""
        cfg = await self.client.config_get("maxmemory-policy")
        cfg.update(await self.client.config_get("appendonly"))
        cfg.update(await self.client.config_get("appendfsync"))
        info = await self.client.info("server")
        offset = await self.client.get(self.key("clock:offset"))
        self.round_trips += 5
        conf = {_s(k): _s(v) for k, v in cfg.items()}
        result = EngineInfo(version=_s(info.get("redis_version", "")), appendonly=conf.get("appendonly") == "yes",
                            appendfsync=conf.get("appendfsync", ""),
                            maxmemory_policy=conf.get("maxmemory-policy", ""), test_clock=offset is not None)
        if not allow_unsafe:
            major = _i(result.version.split(".")[0] or 0)
            if major < 7:
                raise EngineConfigError("redis_version", ">= 7.0", result.version)
            if result.maxmemory_policy != "noeviction":
                raise EngineConfigError("maxmemory-policy", "noeviction", result.maxmemory_policy)
            if not result.appendonly:
                raise EngineConfigError("appendonly", "yes", conf.get("appendonly", ""))
            if result.test_clock:
                raise EngineConfigError(self.key("clock:offset"), "absent (it is set only by tests)",
                                        _s(offset or b""))
        return result

    # -- nodes --------------------------------------------------------------------------------------
    def call_register(self, node_id: str, addr: str = "", lease_ms: int | None = None) -> Call:
        def parse(r: list) -> Registration:
            return Registration(_i(r[0]), _i(r[1]), _i(r[2]) or None)
        return Call("register", (0, node_id, addr, lease_ms or self.settings.lease_ms), parse)

    async def register(self, node_id: str, addr: str = "", lease_ms: int | None = None) -> Registration:
        """A new incarnation of node ``node_id``: a new epoch (never reused) holding a lease."""
        return await self._one(self.call_register(node_id, addr, lease_ms))

    def call_heartbeat(self, epoch: int, lease_ms: int | None = None) -> Call:
        def parse(r: list) -> int:
            _check(r, epoch)
            return _i(r[1])
        return Call("heartbeat", (epoch, lease_ms or self.settings.lease_ms), parse)

    async def heartbeat(self, epoch: int, lease_ms: int | None = None) -> int:
        """Renew the lease: its new end (engine ms). ``Fenced`` when it had lapsed."""
        return await self._one(self.call_heartbeat(epoch, lease_ms))

    async def deregister(self, epoch: int) -> int:
        """End the lease now (a clean shutdown): the sessions still owned are reaped; how many."""
        def parse(r: list) -> int:
            _check(r, epoch)
            return _i(r[1])
        return await self._one(Call("deregister", (epoch,), parse))

    def call_reap(self, epoch: int, grace_ms: int | None = None, recovery_grace_ms: int | None = None,
                  batch: int | None = None) -> Call:
        s = self.settings

        def parse(r: list) -> ReapResult:
            _check(r, epoch)
            return ReapResult(
                fenced=tuple(FencedNode(_i(e), _s(n), _i(t)) for e, n, t in _pairs(r[1], 3)),
                reaped=tuple(ReapedSession(_s(c), _i(d), _oi(g), _oi(t)) for c, d, g, t in _pairs(r[2], 4)),
                finished=tuple(_i(e) for e in r[3]), remaining=_i(r[4]))
        return Call("reap", (epoch, s.grace_ms if grace_ms is None else grace_ms,
                             s.recovery_grace_ms if recovery_grace_ms is None else recovery_grace_ms,
                             batch or s.reap_batch), parse)

    async def reap(self, epoch: int, grace_ms: int | None = None, recovery_grace_ms: int | None = None,
                   batch: int | None = None) -> ReapResult:
        """Fence the epochs whose lease ended more than grace ago; reap one batch of their sessions."""
        return await self._one(self.call_reap(epoch, grace_ms, recovery_grace_ms, batch))

    # -- sessions (SessionOwnership) ----------------------------------------------------------------
    def call_connect(self, epoch: int, node_id: str, client_id: str, clean_start: bool, session_expiry: int,
                     will: WillSpec | None, user: str | None = None, user_check: bool = False,
                     recovery_grace_ms: int | None = None, since_ms: int = 0) -> Call:
        """``since_ms``: a late claim of a connection the node accepted at that engine time while it could
        not reach the engine; answered ``ClaimTaken`` (nothing written) if the client id connected since."""
        rg = self.settings.recovery_grace_ms if recovery_grace_ms is None else recovery_grace_ms
        args: list = [epoch, client_id, _flag(clean_start), session_expiry, node_id, _enc_user(user),
                      _flag(user_check), rg, since_ms]
        if will is None:
            args.append("0")
        else:
            args += ["1", will.topic, will.payload, will.qos, _flag(will.retain), will.properties, will.delay,
                     "" if will.message_expiry is None else will.message_expiry, will.protocol_level]

        def parse(r: list) -> ConnectResult | ClaimTaken:
            if _s(r[0]) == "TAKEN":
                return ClaimTaken(_i(r[1]))
            _check(r, epoch)
            return ConnectResult(
                gen=_i(r[1]), session_present=bool(_i(r[2])),
                kick=Kick(_i(r[3]), _i(r[4])) if _i(r[3]) else None,
                fire_now=tuple(DueRef(_i(g), _i(t)) for g, t in _pairs(r[5], 2)),
                cancelled=tuple(_cancelled(g, t, c, n) for g, t, c, n in _pairs(r[6], 4)),
                subscriptions=tuple((_s(f), decode_options(_s(o))) for f, o in _pairs(r[7], 2)),
                queued=_i(r[8]), user_changed=bool(_i(r[9])))
        return Call("connect", tuple(args), parse)

    async def connect(self, epoch: int, node_id: str, client_id: str, clean_start: bool, session_expiry: int,
                      will: WillSpec | None, user: str | None = None, user_check: bool = False,
                      recovery_grace_ms: int | None = None, since_ms: int = 0) -> ConnectResult | ClaimTaken:
        """An accepted CONNECT: the session is this epoch's under a new generation, the old connection
        taken over, old wills cancelled or due now, the new will armed [MQTT-3.1.2-7]."""
        return await self._one(self.call_connect(epoch, node_id, client_id, clean_start, session_expiry, will,
                                                 user, user_check, recovery_grace_ms, since_ms))

    def call_disconnect(self, epoch: int, client_id: str, gen: int, normal: bool,
                        session_expiry: int | None = None, cause: str = "") -> Call:
        def parse(r: list) -> DisconnectResult:
            if _s(r[0]) == "NOT_OWNER":
                return DisconnectResult(owner=False)
            _check(r, epoch)
            return DisconnectResult(owner=True, will_gen=_oi(r[1]), outcome=WillOutcome(_s(r[2])),
                                    due_ms=_oi(r[3]), session_ended=bool(_i(r[4])))
        return Call("disconnect", (epoch, client_id, gen, _flag(normal),
                                   "" if session_expiry is None else session_expiry, cause), parse)

    async def disconnect(self, epoch: int, client_id: str, gen: int, normal: bool,
                         session_expiry: int | None = None, cause: str = "") -> DisconnectResult:
        """The connection of this generation ended: DISCONNECT 0x00 (``normal``) deletes the will;
        otherwise it is due at now + min(Will Delay, Session Expiry). ``cause``: a key of will.CAUSES."""
        return await self._one(self.call_disconnect(epoch, client_id, gen, normal, session_expiry, cause))

    async def expire(self, epoch: int, limit: int = 500) -> ExpireResult:
        """End offline sessions whose expiry passed; drop retained messages whose expiry passed."""
        def parse(r: list) -> ExpireResult:
            _check(r, epoch)
            return ExpireResult(tuple(_s(c) for c in r[1]), tuple(_s(t) for t in r[2]))
        return await self._one(Call("expire", (epoch, limit), parse))

    # -- wills (WillFiring) -------------------------------------------------------------------------
    def call_due(self, epoch: int, limit: int = 100, offset: int = 0) -> Call:
        def parse(r: list) -> DueBatch:
            _check(r, epoch)
            wills = tuple(DueWill(gen=_i(w[0]), client_id=_s(w[1]), due_ms=_i(w[2]), topic=_s(w[3]),
                                  qos=_i(w[4]), retain=_s(w[5]) == "1", user=_user(w[6]), cause=_s(w[7]),
                                  dead_node=_os(w[8]), dead_epoch=_oi(w[9]), ended_ms=_oi(w[10]))
                          for w in r[3])
            return DueBatch(_i(r[1]), _oi(r[2]), wills)
        return Call("due", (epoch, limit, offset), parse)

    async def due(self, epoch: int, limit: int = 100, offset: int = 0) -> DueBatch:
        """Wills due by now (from ``offset`` in deadline order), with the next deadline."""
        return await self._one(self.call_due(epoch, limit, offset))

    def call_fire(self, epoch: int, node_id: str, routever: int, requests: Sequence[FireRequest]) -> Call:
        args: list = [epoch, node_id, routever, len(requests)]
        for q in requests:
            args += [q.gen, q.client_id, "d" if q.denied else "p", *_targets(() if q.denied else q.targets)]

        def parse(r: list) -> tuple[FireResult, ...]:
            _check(r, epoch, routever)
            return tuple(FireResult(q.gen, FireOutcome(_s(x[0])), _i(x[1]) or None, _i(x[2]), _os(x[3]))
                         for q, x in zip(requests, r[1], strict=True))
        return Call("fire", tuple(args), parse)

    async def fire(self, epoch: int, node_id: str, routever: int,
                   requests: Sequence[FireRequest]) -> tuple[FireResult, ...]:
        """Claim due wills: each one FIRED (removed, queued once to its targets, retained, audited) by
        exactly one caller; the others get GONE. ``StaleRoutes`` when the table changed since
        ``routever``."""
        return await self._one(self.call_fire(epoch, node_id, routever, requests))

    async def audit(self, after: str = "-", count: int = 1000) -> tuple[AuditRecord, ...]:
        """Records of the ``fired`` stream after an id (exclusive; "-" from the start)."""
        start = after if after == "-" else f"({after}"
        entries = await self.client.xrange(self.key("fired"), start, "+", count=count)
        self.round_trips += 1
        out = []
        for eid, f in entries:
            g = {_s(k): v for k, v in f.items()}
            out.append(AuditRecord(
                id=_s(eid), client_id=_s(g["cid"]), gen=_i(g["gen"]), by_epoch=_i(g["by"]), node_id=_s(g["node"]),
                due_ms=_i(g["due"]), fired_ms=_i(g["at"]), outcome=FireOutcome(_s(g["status"])),
                cause=_s(g["cause"]), dead_node=_os(g["dead_node"]), dead_epoch=_oi(g["dead_epoch"]),
                ended_ms=_oi(g["ended"]), receivers=_i(g["receivers"]), topic=_s(g["topic"]),
                msg_id=_os(g["msg"])))
        return tuple(out)

    # -- routing (Router) ---------------------------------------------------------------------------
    def call_subscribe(self, epoch: int, client_id: str, gen: int,
                       add: Sequence[tuple[str, SubOptions]] = (), remove: Sequence[str] = ()) -> Call:
        args: list = [epoch, client_id, gen, len(add)]
        for f, o in add:
            args += [f, encode_options(o)]
        args += [len(remove), *remove]

        def parse(r: list) -> SubscribeResult:
            if _s(r[0]) == "NOT_OWNER":
                return SubscribeResult(owner=False)
            _check(r, epoch)
            return SubscribeResult(True, _i(r[1]), tuple(bool(_i(x)) for x in r[2]))
        return Call("subscribe", tuple(args), parse)

    async def subscribe(self, epoch: int, client_id: str, gen: int,
                        add: Sequence[tuple[str, SubOptions]] = (), remove: Sequence[str] = ()) -> SubscribeResult:
        """Add or replace, and remove, subscriptions of a session this generation holds."""
        return await self._one(self.call_subscribe(epoch, client_id, gen, add, remove))

    async def snapshot(self) -> RouteSnapshot:
        def parse(r: list) -> RouteSnapshot:
            entries = []
            for key, o in _pairs(r[2], 2):
                cid, _, f = _s(key).partition("\0")
                entries.append((cid, f, decode_options(_s(o))))
            return RouteSnapshot(_i(r[1]), tuple(entries))
        return await self._one(Call("snapshot", (0,), parse))

    async def changes(self, after: int, count: int = 1000) -> tuple[RouteChange, ...]:
        """The route log after version ``after`` (at most ``count``), in order. ``ResyncNeeded`` when the
        log was trimmed past it."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.key("routever"))
        pipe.xrange(self.key("routelog"), f"{after + 1}-0", "+", count=count)
        ver_raw, entries = await pipe.execute()
        self.round_trips += 1
        version = _i(ver_raw or 0)
        out = []
        for eid, f in entries:
            g = {_s(k): v for k, v in f.items()}
            op = RouteOp(_s(g["o"]))
            out.append(RouteChange(_i(_s(eid).split("-")[0]), op, _s(g["c"]), _s(g["f"]),
                                   decode_options(_s(g["p"])) if op is RouteOp.SUBSCRIBE else None))
        if version > after and (not out or out[0].version != after + 1):
            raise ResyncNeeded(after, out[0].version if out else version)
        return tuple(out)

    def call_publish(self, epoch: int, routever: int, messages: Sequence[OutMessage]) -> Call:
        args: list = [epoch, routever, len(messages)]
        for m in messages:
            args += [m.topic, m.payload, m.qos, _flag(m.retain), m.properties, m.origin or "",
                     "" if m.message_expiry is None else m.message_expiry, *_targets(m.targets)]

        def parse(r: list) -> tuple[str | None, ...]:
            _check(r, epoch, routever)
            return tuple(_os(x) for x in r[1])
        return Call("publish", tuple(args), parse)

    async def publish(self, epoch: int, routever: int, messages: Sequence[OutMessage]) -> tuple[str | None, ...]:
        """A batch of PUBLISHes: each stored once and queued to its targets; the message ids (None
        where nobody got it and it was not retained)."""
        return await self._one(self.call_publish(epoch, routever, messages))

    def call_fetch(self, epoch: int, requests: Sequence[FetchRequest]) -> Call:
        args: list = [epoch, len(requests)]
        for q in requests:
            args += [q.client_id, q.gen, q.after, q.count]

        def parse(r: list) -> tuple[SessionQueue, ...]:
            _check(r, epoch)
            out = []
            for q, (status, entries) in zip(requests, r[1], strict=True):
                out.append(SessionQueue(q.client_id, _s(status) == "OK", tuple(
                    QueuedDelivery(entry_id=_s(e[0]), msg_id=_s(e[1]), topic=_s(e[2]), payload=bytes(e[3]),
                                   qos=_i(e[4]), retain=_s(e[5]) == "1", subscription_ids=_sids(e[6]),
                                   properties=bytes(e[7]), origin=_os(e[8]), expires_ms=_oi(e[9]),
                                   is_will=_s(e[10]) == "1", **_mark(e[11])) for e in entries)))
            return tuple(out)
        return Call("fetch", tuple(args), parse)

    async def fetch(self, epoch: int, requests: Sequence[FetchRequest]) -> tuple[SessionQueue, ...]:
        """The queued deliveries of sessions this epoch holds, after the entry each request names."""
        return await self._one(self.call_fetch(epoch, requests))

    def call_ack(self, epoch: int, acks: Sequence[Ack]) -> Call:
        args: list = [epoch, len(acks)]
        for a in acks:
            args += [a.client_id, a.gen, a.entry_id]

        def parse(r: list) -> AckResult:
            _check(r, epoch)
            return AckResult(_i(r[1]), _i(r[2]))
        return Call("ack", tuple(args), parse)

    def call_mark(self, epoch: int, marks: Sequence[Mark]) -> Call:
        """QoS 2 deliveries sent under these packet ids (kept with their entries until acknowledged)."""
        args: list = [epoch, len(marks)]
        for m in marks:
            args += [m.client_id, m.gen, m.entry_id, m.packet_id, m.state]

        def parse(r: list) -> int:
            _check(r, epoch)
            return _i(r[1])
        return Call("mark", tuple(args), parse)

    async def mark(self, epoch: int, marks: Sequence[Mark]) -> int:
        return await self._one(self.call_mark(epoch, marks))

    async def ack(self, epoch: int, acks: Sequence[Ack]) -> AckResult:
        """Deliveries done: their queue entries and message references go."""
        return await self._one(self.call_ack(epoch, acks))

    async def retained(self, topics: Sequence[str] | None = None) -> tuple[Retained, ...]:
        """The retained messages of these topics (all topics when None); expired ones left out."""
        def parse(r: list) -> tuple[Retained, ...]:
            return tuple(Retained(_s(t), _s(i), bytes(p), _i(q), bytes(pr), _os(o), _oi(x))
                         for t, i, p, q, pr, o, x in _pairs(r[1], 7))
        names = list(topics or ())
        if topics is not None and not names:
            return ()
        return await self._one(Call("retained", (0, len(names), *names), parse))

    async def view(self, limit: int = 100) -> dict:
        """The cluster as the engine holds it, read only (the admin API's /api/cluster): every node
        incarnation with its lease and state and how many sessions it holds, the pending wills (the
        first ``limit`` by deadline), the last ``limit`` audit records, the engine's clock."""
        c = self.client
        last = _i(await c.get(self.key("epoch")) or 0)  # every incarnation, the last ``limit`` of them
        epochs = list(range(max(1, last - limit + 1), last + 1))
        pipe = c.pipeline(transaction=False)
        for e in epochs:
            pipe.hgetall(self.key(f"node:{e}"))
            pipe.scard(self.key(f"owned:{e}"))
        pipe.zcard(self.key("due"))
        pipe.zrange(self.key("due"), 0, limit - 1, withscores=True)
        raw = await pipe.execute()
        due_count, due = raw[-2], raw[-1]
        nodes = []
        for i, e in enumerate(epochs):
            h = {_s(k): _s(v) for k, v in raw[2 * i].items()}
            if not h:
                continue
            clients: list[str] = []
            if h.get("state") == "live" and raw[2 * i + 1]:  # which clients it holds (the first ``limit``)
                async for cid in c.sscan_iter(self.key(f"owned:{e}"), count=limit):
                    clients.append(_s(cid))
                    if len(clients) >= limit:
                        break
            nodes.append({"epoch": e, "node_id": h.get("nid"), "addr": h.get("addr"), "state": h.get("state"),
                          "lease_until_ms": _oi(h.get("lease_until")), "lease_end_ms": _oi(h.get("lease_end")),
                          "fenced_by": _oi(h.get("fenced_by")), "sessions": raw[2 * i + 1],
                          "clients": sorted(clients)})
        pipe = c.pipeline(transaction=False)
        for gen, _ in due:
            pipe.hmget(self.key(f"will:{_s(gen)}"), "cid", "topic", "cause", "dead_node", "node")
        fields = await pipe.execute() if due else []
        pending = [{"gen": _i(gen), "due_ms": int(score), "client_id": _os(f[0]), "topic": _os(f[1]),
                    "cause": _os(f[2]), "dead_node": _os(f[3]), "node": _os(f[4])}
                   for (gen, score), f in zip(due, fields, strict=True)]
        records = []
        for eid, f in await c.xrevrange(self.key("fired"), "+", "-", count=limit):
            g = {_s(k): _s(v) for k, v in f.items()}
            records.append({"id": _s(eid), "client_id": g.get("cid"), "gen": _oi(g.get("gen")),
                            "fired_by": g.get("node"), "by_epoch": _oi(g.get("by")), "status": g.get("status"),
                            "cause": g.get("cause"), "dead_node": _os(g.get("dead_node")),
                            "due_ms": _oi(g.get("due")), "fired_ms": _oi(g.get("at")),
                            "receivers": _oi(g.get("receivers")), "topic": g.get("topic")})
        self.round_trips += 5
        return {"now_ms": await self.now_ms(), "nodes": nodes, "pending_wills": due_count, "due": pending,
                "fired": records}

    async def live_clients(self, limit: int = 10000) -> list[dict]:
        """Every client connected to a live node, as the engine holds it (read only, the admin API's
        cluster-wide /api/clients): client id, node id and epoch, connected since (engine ms), whether an
        armed will is stored. At most ``limit`` clients."""
        c = self.client
        nodes = {_s(k): _i(v) for k, v in (await c.hgetall(self.key("nodeid"))).items()}
        pipe = c.pipeline(transaction=False)
        for e in nodes.values():
            pipe.hget(self.key(f"node:{e}"), "state")
        states = await pipe.execute()
        held: list[tuple[str, int, str]] = []
        for (nid, e), state in zip(nodes.items(), states, strict=True):
            if _os(state) != "live":
                continue
            async for cid in c.sscan_iter(self.key(f"owned:{e}"), count=1000):
                held.append((_s(cid), e, nid))
                if len(held) >= limit:
                    break
        pipe = c.pipeline(transaction=False)
        for cid, _, _ in held:
            pipe.hmget(self.key(f"sess:{cid}"), "owner", "conn_ms", "will", "expiry")
        fields = await pipe.execute() if held else []
        self.round_trips += 3 + len(nodes)
        out = []
        for (cid, e, nid), f in zip(held, fields, strict=True):
            if _oi(f[0]) != e:  # taken over meanwhile (it is in the new owner's set)
                continue
            out.append({"client_id": cid, "node": nid, "epoch": e, "connected_ms": _oi(f[1]),
                        "will": f[2] is not None, "expiry_interval": _oi(f[3])})
        return out

    async def pending_wills(self, limit: int = 10000) -> list[dict]:
        """The wills of the whole cluster waiting for their deadline, soonest first (at most ``limit``):
        client id, topic, QoS, retain, due (engine ms), cause, the node that armed it, the dead node."""
        c = self.client
        due = await c.zrange(self.key("due"), 0, limit - 1, withscores=True)
        pipe = c.pipeline(transaction=False)
        for gen, _ in due:
            pipe.hmget(self.key(f"will:{_s(gen)}"), "cid", "topic", "qos", "retain", "cause", "node", "dead_node")
        fields = await pipe.execute() if due else []
        self.round_trips += 2
        return [{"gen": _i(gen), "due_ms": int(score), "client_id": _os(f[0]), "topic": _os(f[1]),
                 "qos": _oi(f[2]) or 0, "retain": _os(f[3]) == "1", "cause": _os(f[4]), "node": _os(f[5]),
                 "dead_node": _os(f[6])}
                for (gen, score), f in zip(due, fields, strict=True) if f[0] is not None]

    async def client_record(self, cid: str, audit_scan: int = 5000) -> dict | None:
        """One client as the engine holds it (the admin API's explain of a client of another node): its
        session (which node holds it, since when), its stored will (armed, or pending with its deadline
        and cause), and the audit records of its wills that were published (which node and epoch, when),
        found among the newest ``audit_scan`` records. None if the engine knows nothing of it."""
        c = self.client
        sess = {_s(k): _s(v) for k, v in (await c.hgetall(self.key(f"sess:{cid}"))).items()}
        will = None
        gen = sess.get("will") or sess.get("pwill")
        if gen:
            w = {_s(k): _s(v) for k, v in (await c.hgetall(self.key(f"will:{gen}"))).items()}
            due = await c.zscore(self.key("due"), gen)
            if w:
                will = {"gen": _i(gen), "topic": w.get("topic"), "qos": _oi(w.get("qos")),
                        "retain": w.get("retain") == "1", "delay": _oi(w.get("delay")),
                        "armed_ms": _oi(w.get("armed_ms")), "armed_by": w.get("node"),
                        "pending": due is not None, "due_ms": None if due is None else int(due),
                        "ended_ms": _oi(w.get("ended_ms")), "cause": w.get("cause") or None,
                        "dead_node": w.get("dead_node") or None}
        fired = []
        for eid, f in await c.xrevrange(self.key("fired"), "+", "-", count=audit_scan):
            g = {_s(k): _s(v) for k, v in f.items()}
            if g.get("cid") != cid:
                continue
            fired.append({"id": _s(eid), "gen": _oi(g.get("gen")), "fired_by": g.get("node"),
                          "by_epoch": _oi(g.get("by")), "status": g.get("status"), "cause": g.get("cause"),
                          "dead_node": _os(g.get("dead_node")) or None, "dead_epoch": _oi(g.get("dead_epoch") or None),
                          "ended_ms": _oi(g.get("ended") or None), "due_ms": _oi(g.get("due")),
                          "fired_ms": _oi(g.get("at")), "receivers": _oi(g.get("receivers")),
                          "topic": g.get("topic")})
        self.round_trips += 4
        if not sess and not fired:
            return None
        owner = _oi(sess.get("owner")) if sess else None
        return {"client_id": cid, "session": bool(sess), "connected": bool(owner),
                "node": sess.get("node") or None, "epoch": owner or None, "connected_ms": _oi(sess.get("conn_ms")),
                "disconnected_ms": _oi(sess.get("disc_ms")), "expiry_interval": _oi(sess.get("expiry")),
                "will": will, "fired": fired}

    # -- the engine clock ---------------------------------------------------------------------------
    async def now_ms(self) -> int:
        """The engine's clock (what every script reads)."""
        return await self._one(Call("clock", (0,), lambda r: _i(r[1])))

    async def advance_clock(self, ms: int) -> None:
        """Tests only: move the engine's clock forward (check_engine refuses an engine where this was
        done). Leases, deadlines and expiries are all read against it."""
        await self.client.incrby(self.key("clock:offset"), ms)
        self.round_trips += 1

    async def broadcast(self, payloads: dict[tuple[Feed, int], bytes]) -> None:
        """Payloads for other nodes, each on a channel of its node's epoch, one round trip (pub/sub, at
        most once): (Feed.QOS0, E) QoS 0 messages (the node's NodeChannel hands them out as Broadcast),
        (Feed.HELD, E) client ids a node took (``epoch NUL cid NUL cid ...``; handed out as Held)."""
        if len(payloads) == 1:
            (((feed, epoch), data),) = payloads.items()
            await self.client.publish(self.key(f"{feed.value}:{epoch}"), data)
        else:
            pipe = self.client.pipeline(transaction=False)
            for (feed, epoch), data in payloads.items():
                pipe.publish(self.key(f"{feed.value}:{epoch}"), data)
            await pipe.execute()
        self.round_trips += 1

    async def holders(self) -> tuple[frozenset[int], dict[str, int]]:
        """The live epochs, and which live epoch holds each connected client (the ``owned:E`` sets;
        read only, two round trips). A node sends QoS 0 only to the nodes whose clients match."""
        c = self.client
        now_ms = await self.now_ms()
        live = [_i(e) for e in await c.zrangebyscore(self.key("nodes"), now_ms, "+inf")]
        pipe = c.pipeline(transaction=False)
        for e in live:
            pipe.smembers(self.key(f"owned:{e}"))
        held: dict[str, int] = {}
        for e, members in zip(live, await pipe.execute() if live else [], strict=True):
            for cid in members:
                held[_s(cid)] = e
        self.round_trips += 3
        return frozenset(live), held

    # -- channels -----------------------------------------------------------------------------------
    def listen(self, epoch: int) -> NodeChannel:
        """The doorbells and takeover kicks of this epoch (pub/sub: hints; a node also polls)."""
        return NodeChannel(self, epoch)


class NodeChannel:
    """``async with engine.listen(epoch) as ch: event = await ch.get(timeout)``."""

    def __init__(self, engine: RedisEngine, epoch: int):
        self._pubsub = engine.client.pubsub()
        self._bell = engine.key(f"bell:{epoch}")
        self._ctl = engine.key(f"ctl:{epoch}")
        self._routes = engine.key("routes")
        self._bcast = engine.key(f"qos0:{epoch}")
        self._held = engine.key(f"held:{epoch}")

    async def __aenter__(self) -> NodeChannel:
        await self._pubsub.subscribe(self._bell, self._ctl, self._routes, self._bcast, self._held)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pubsub.unsubscribe()
        await self._pubsub.aclose()

    async def get(self, timeout: float) -> Doorbell | Kicked | RoutesChanged | Broadcast | Held | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # (subscribe confirmations come through as None)
            msg = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                 timeout=max(0.0, deadline - loop.time()))
            if msg is not None and msg.get("type") == "message":
                break
            if loop.time() >= deadline:
                return None
        channel, data = _s(msg["channel"]), msg["data"]
        if channel == self._ctl:
            cid, _, gen = _s(data).rpartition("\0")
            return Kicked(cid, _i(gen))
        if channel == self._routes:
            return RoutesChanged(_i(data))
        if channel == self._bcast:
            return Broadcast(bytes(data))
        if channel == self._held:
            epoch, *cids = _s(data).split("\0")
            return Held(tuple(cids), _i(epoch))
        return Doorbell(tuple(_s(data).split("\0")))


def _mark(raw: Any) -> dict:
    """A fetched entry's mark ('packet id state', or empty) as Delivery fields."""
    pid, _, state = _s(raw).partition(" ")
    return {"packet_id": int(pid), "state": state} if pid else {}


def _check(r: list, epoch: int, routever: int | None = None) -> None:
    status = _s(r[0])
    if status == "FENCED":
        raise Fenced(epoch)
    if status == "STALE":
        raise StaleRoutes(routever if routever is not None else -1, _i(r[1]))


def _cancelled(g: Any, due: Any, cause: Any, node: Any) -> CancelledWill:
    ended = _s(cause)
    kind = CancelCause.NODE_DIED if ended == "node_died" else \
        CancelCause.TAKEOVER if ended == "takeover" else CancelCause.RECONNECT
    return CancelledWill(_i(g), _i(due), kind, ended, _os(node))


__all__ = ["NEVER", "Call", "ClusterSettings", "NodeChannel", "RedisEngine", "script_source"]
