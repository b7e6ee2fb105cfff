"""The edge of a cluster node: carries the core's intents to the engine (Redis) and the engine's news
to the core. The only place that talks to Redis (through cluster/engine.py's RedisEngine).

What runs here (docs/cluster.md, "The broker side"):

* **Commits**: what one or more loop turns decided (claims of CONNECTs, publishes, subscriptions,
  connection ends, acknowledgements of fetched deliveries) goes to the engine in one pipeline, one
  round trip; the turns' packets (PUBACK, SUBACK, CONNACK, ...) are written only after it succeeded,
  so nothing is acknowledged before the engine has it. Turns that come meanwhile wait for the next
  pipeline (a group commit). When the engine cannot be reached, CONNECTs with a will or a lasting
  session are refused (0x88 / rc 3), those with nothing to keep are served alone and claimed later
  (edge/cluster_outage.py), and the rest is retried until the lease runs out (then the node fences
  itself: nothing was acknowledged).
* **Heartbeat**: the lease is renewed every ``cluster_heartbeat``; the node checks its own lease on its
  monotonic clock before handling a client's bytes and on a short timer; a node whose lease lapsed
  closes every client connection, publishes nothing, and registers again under a new epoch.
* **Reap and fire**: every node reaps dead epochs and claims due wills (the engine makes each will go
  out once, whoever claims it).
* **Doorbells and kicks** (pub/sub, hints): fetch the queues of sessions connected here; end a
  connection another node took over. Queues are also polled, so a lost doorbell only delays.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..cluster.engine import Call, ClusterSettings, RedisEngine
from ..cluster.lease import LocalLease
from ..cluster.model import (
    Ack,
    Broadcast,
    CancelCause,
    ConnectResult,
    DisconnectResult,
    Doorbell,
    EngineConfigError,
    Fenced,
    FetchRequest,
    FireOutcome,
    FireRequest,
    Held,
    Kicked,
    OutMessage,
    RoutesChanged,
    StaleRoutes,
    Target,
    WillOutcome,
    WillSpec,
)
from ..cluster.replica import RouteReplica
from ..codec.packets import Will
from ..codec.properties import read_properties
from ..config import Config
from ..core.actions import ClaimSession
from ..core.cluster import Claim, ClusterIntents, DisconnectIntent, PublishIntent
from ..core.message import Message
from ..core.timeline import EventKind
from ..core.topics import topic_matches
from ..errors import ConfigError
from ..storage.base import StoreError
from .cluster_outage import LateClaims, answer_unreachable
from .cluster_qos0 import Holders, Qos0Sender, decode_qos0
from .cluster_qos0 import forwarded_properties as _props

log = logging.getLogger("lastwill.cluster")
_NOWHERE: frozenset[int] = frozenset()
logging.getLogger("redis").setLevel(logging.WARNING)  # (its debug lines say nothing about the broker)

FETCH_COUNT = 1000  # queue entries per session per fetch
FIRE_BATCH = 250  # due wills claimed per round trip (one fire script: bounds how long it blocks Redis)
POLL_PER_BEAT = 500  # sessions whose queue is polled per heartbeat (doorbells are hints)
RETRY_AFTER = 0.2  # seconds between two tries of a commit the engine did not take


def settings_of(config: Config) -> ClusterSettings:
    return ClusterSettings(lease_ms=int(config.cluster_lease * 1000), beat_ms=int(config.cluster_heartbeat * 1000),
                           grace_ms=int(config.cluster_grace * 1000),
                           recovery_grace_ms=int(config.recovery_grace * 1000))


def will_spec(will: Will, protocol_level: int) -> WillSpec:
    props = will.properties
    return WillSpec(topic=will.topic, payload=will.payload, qos=will.qos, retain=will.retain,
                    properties=_props(props), delay=props.get("will_delay_interval", 0),
                    message_expiry=props.get("message_expiry_interval"), protocol_level=protocol_level)


def _clock(ms: int | None) -> str:
    if ms is None:
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000 // 100} UTC"


class ClusterNode:
    """One node's link to the engine, for one ``Server`` (edge/server.py)."""

    def __init__(self, server, config: Config, client: Redis | None = None) -> None:
        self.server = server
        self.core = server.core
        self.config = config
        self.settings = settings_of(config)
        timeout = max(1.0, config.cluster_lease / 2)
        self.client = client or Redis.from_url(config.cluster, socket_timeout=timeout,
                                               socket_connect_timeout=timeout)
        self.engine = RedisEngine(self.client, settings=self.settings)
        self.node_id = config.cluster_node_id
        self.epoch = 0
        self.incarnation = 0  # bumped at every fence: what an older incarnation started is dropped
        self.lease = LocalLease(self.settings.lease_ms, margin_ms=min(500, self.settings.lease_ms // 5))
        self.replica = RouteReplica()
        self.clock_offset = 0.0  # engine seconds minus loop seconds (for message expiry)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[ClusterIntents | None, list]] = []
        self._busy = False
        self._acks: list[Ack] = []
        self._want_fetch: set[str] = set()
        self._fetching = False
        self.last_entry: dict[str, str] = {}  # client id -> the last queue entry handed to the core
        self._poll_from = 0
        self._due = asyncio.Event()
        self._broadcasts: list[tuple[Message, frozenset[int]]] = []  # QoS 0 for other nodes, with their epochs
        self.holders = Holders()
        self.qos0 = Qos0Sender(self.engine, lambda: self.loop.time(), self._engine_down)
        self._sync_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._listener: asyncio.Task | None = None
        self._fencing = False
        self._conn_floor = 0
        self._kept: set[int] = set()
        self._committing: list = []  # the actions of the commit under way (written once it is done)  # connections a fence kept (the engine never had them)
        self.late = LateClaims(self.engine, self.core, server, self.node_id, lambda: self.loop.time())
        self._stopping = False
        self.down_since: float | None = None  # the engine has not answered since (logged once per outage)
        # counters (the admin API's metrics read them)
        self.stats = {"round_trips": 0, "commits": 0, "leases_renewed": 0, "leases_missed": 0, "fenced": 0,
                      "epochs_reaped": 0, "wills_fired": 0, "wills_fired_dead_node": 0, "claims_lost": 0,
                      "stale_routes": 0, "connects_refused_unavailable": 0, "connects_served_alone": 0}

    # ---- start and stop -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            info = await self.engine.check_engine(allow_unsafe=self.config.cluster_unsafe_engine)
        except EngineConfigError as e:
            raise ConfigError(f"cluster: the engine at {self.config.cluster} would lose data: redis setting "
                              f"{e.setting!r} is {e.actual!r}, the cluster needs {e.expected!r} (or "
                              f"cluster_unsafe_engine = true, for tests only)", "cluster") from None
        except (RedisError, OSError) as e:
            raise StoreError(f"cluster: cannot reach the engine at {self.config.cluster}: {e}") from None
        log.info("cluster engine %s: redis %s, appendonly %s, appendfsync %s, maxmemory-policy %s",
                 self.config.cluster, info.version, "yes" if info.appendonly else "no", info.appendfsync,
                 info.maxmemory_policy)
        if self.config.queue_qos0:
            log.warning("cluster: queue_qos0 is not supported in cluster mode: QoS 0 messages for offline "
                        "sessions are not queued")
        await self._register()
        for coro in (self._beat_loop(), self._reap_loop(), self._watch_loop(), self._fire_loop()):
            self._tasks.append(asyncio.ensure_future(coro))

    async def stop(self, publish_wills: bool) -> None:
        """A clean stop: the connections close; with ``publish_wills`` their wills follow the normal
        rules now, otherwise the lease ends now and the other nodes take them over like a dead node's
        (the recovery grace applies: a client that reconnects in time cancels its will)."""
        self._stopping = True
        now = self.loop.time()
        if publish_wills:
            self.server.run(self.core.shutdown(now))
            self.server._flush()
            for _ in range(100):
                if not self._busy and not self._queue:
                    break
                await asyncio.sleep(0.02)
            try:  # the wills those ends made due go out now, from this node (or any other: once)
                for _ in range(20):
                    if await self._fire_due() > 0:
                        break
            except (RedisError, OSError, Fenced, StaleRoutes) as e:
                log.warning("cluster: wills not published at stop (the other nodes will): %s", e)
        else:
            self.server.write_actions(self.core.fence(now))
        for task in (*self._tasks, self._listener):
            if task is not None:
                task.cancel()
        try:
            await self.engine.deregister(self.epoch)
        except (RedisError, OSError, Fenced) as e:
            log.warning("cluster: could not end the lease of epoch %d at stop: %s", self.epoch, e)
        await self.client.aclose()

    async def _register(self) -> None:
        sent = self.loop.time()
        addr = ",".join(f"{h}:{p}" for h, p in self.server.addresses)
        reg = await self.engine.register(self.node_id, addr, self.settings.lease_ms)
        self.epoch = reg.epoch
        self.lease = LocalLease(self.settings.lease_ms, margin_ms=min(500, self.settings.lease_ms // 5))
        self.lease.renewed(sent)
        self._note_clock(reg.lease_until_ms, sent)
        self.replica = RouteReplica()
        await self._sync()
        self.holders.reading()
        self.holders.replace(*await self.engine.holders())
        if self._listener is not None:
            self._listener.cancel()
        self._listener = asyncio.ensure_future(self._listen_loop(self.epoch))
        log.info("cluster: node %s registered as epoch %d (lease %gs, heartbeat %gs)%s", self.node_id, self.epoch,
                 self.config.cluster_lease, self.config.cluster_heartbeat,
                 f"; epoch {reg.replaced} of the same node id fenced" if reg.replaced else "")

    async def view(self) -> dict:
        """The admin API's /api/cluster: the engine's view, and which node answers."""
        out = await self.engine.view()
        out["this_node"] = {"node_id": self.node_id, "epoch": self.epoch}
        return out

    async def clients(self) -> list[dict] | None:
        """The admin API's cluster-wide client list: every client of a live node, from the engine (None:
        the engine cannot be reached, the node answers for its own clients only)."""
        try:
            return await self.engine.live_clients()
        except (RedisError, OSError) as e:
            log.debug("cluster: the admin API's client list without the engine: %s", e)
            return None

    async def pending(self) -> list[dict] | None:
        """The admin API's cluster-wide pending wills, from the engine (its clock: wall-clock ms)."""
        try:
            return await self.engine.pending_wills()
        except (RedisError, OSError) as e:
            log.debug("cluster: the admin API's pending wills without the engine: %s", e)
            return None

    async def record(self, client_id: str) -> dict | None:
        """The admin API's explain of a client on any node: the engine's record of it (None: unknown there,
        or the engine cannot be reached)."""
        try:
            return await self.engine.client_record(client_id)
        except (RedisError, OSError) as e:
            log.debug("cluster: the admin API's explain of %r without the engine: %s", client_id, e)
            return None

    def _note_clock(self, lease_until_ms: int, sent: float) -> None:
        now = self.loop.time()
        engine_now = (lease_until_ms - self.settings.lease_ms) / 1000
        self.clock_offset = engine_now - (sent + now) / 2

    async def _sync(self) -> None:
        async with self._sync_lock:  # one catch-up at a time (each applies the log after its version)
            replica = self.replica
            await replica.sync(self.engine)
            if replica is self.replica:
                self.core.router.remote_tree = replica.tree

    def live(self, now: float, conn_id: int) -> bool:
        """May this connection's bytes be handled? This node's own view of its lease: when it lapsed, the
        node fences itself, and the connections it had are not served any more; a connection opened since
        may send its CONNECT (refused with 0x88 until the node holds a lease again)."""
        if self.lease.valid(now) or self._stopping:
            return True
        if not self._fencing:
            asyncio.ensure_future(self._fence("its lease ran out before a heartbeat renewed it", self.epoch))
        return conn_id >= self._conn_floor or conn_id in self._kept

    # ---- commits ----------------------------------------------------------------------------------------
    def submit(self, intents: ClusterIntents | None, actions: list) -> None:
        """A loop turn's intents and actions: the actions are written once the engine took the intents."""
        if intents is not None and (intents.subscribes or intents.retained):
            intents = self._claimed_only(intents)
        if self.down_since is not None and any(type(a) is ClaimSession for a in actions):
            # the engine is not answering: these CONNECTs do not wait behind a commit being retried
            answer_unreachable(self.core, self.server, [a for a in actions if type(a) is ClaimSession],
                               self.loop.time(), self.stats)
            actions = [a for a in actions if type(a) is not ClaimSession]
        if not self._busy and not self._acks and not any(type(a) is ClaimSession for a in actions) and \
                (intents is None or self._qos0_only(intents)):
            self.server.write_actions(actions)
            return
        self._queue.append((intents, actions))
        if not self._busy:
            self._busy = True
            asyncio.ensure_future(self._drain())

    def _claimed_only(self, intents: ClusterIntents) -> ClusterIntents | None:
        """Subscriptions of connections the engine does not hold (accepted while it was unreachable) are
        not sent: they go with the connection's late claim (LateClaims)."""
        gen = self.core.generation
        intents.subscribes = [x for x in intents.subscribes if gen(x.client_id) is not None]
        intents.retained = [x for x in intents.retained if gen(x.client_id) is not None]
        return intents if intents else None

    def _qos0_only(self, intents: ClusterIntents) -> bool:
        """Nothing the engine must take before the turn's packets leave: only QoS 0 publishes that no
        shared group of the cluster matches and that are not retained. Then those with subscribers on
        other nodes go out by pub/sub, and True."""
        if intents.subscribes or intents.retained or intents.disconnects or intents.acks:
            return False
        match = self.replica.tree.match
        destinations = self.holders.destinations
        epoch = self.epoch
        remote = []
        # per topic within this turn (the table, the holders and what was served here do not change in it)
        known: dict[str, frozenset[int]] = {}
        for p in intents.publishes:
            m = p.message
            if m.qos or m.retain:
                return False
            nodes = known.get(m.topic)
            if nodes is None:
                normal, shared = match(m.topic)
                if shared:
                    return False
                nodes = known[m.topic] = destinations([cid for cid, _ in normal], p.served, epoch) \
                    if normal else _NOWHERE
            if nodes:
                remote.append((m, nodes))
        if remote:
            self.qos0.send(epoch, remote)
        return True

    def _kick(self) -> None:
        if not self._busy:
            self._busy = True
            asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue or self._acks:
                batch, self._queue = self._queue, []
                intents = ClusterIntents()
                actions: list = []
                for i, a in batch:
                    if i is not None:
                        intents.extend(i)
                    actions.extend(a)
                claims = [a for a in actions if type(a) is ClaimSession]
                if claims:
                    actions = [a for a in actions if type(a) is not ClaimSession]
                incarnation = self.incarnation
                self._committing = actions
                answered = await self._commit(intents, claims)
                self._committing = []
                if incarnation != self.incarnation:
                    continue  # fenced meanwhile: the connections are closed, nothing is acknowledged
                self.server.write_actions(actions)
                now = self.loop.time()
                for claim, answer in answered:
                    self._claimed(claim, answer, now)
        except Exception:  # the commit path must never die silently
            log.exception("cluster: internal error committing to the engine")
        finally:
            self._busy = False
        if self._queue or self._acks:
            self._kick()

    def _claimed(self, claim: ClaimSession, answer: ConnectResult, now: float) -> None:
        cancelled = tuple(self._cancelled_text(c) for c in answer.cancelled)
        alive, actions = self.core.session_claimed(
            claim.conn_id, Claim(answer.gen, answer.session_present, answer.subscriptions, cancelled), now)
        self.server.run(actions)
        if answer.fire_now:
            self._due.set()
        if not alive:  # the client went away before its CONNACK: nothing of it was accepted
            self.core.intents.disconnects.append(DisconnectIntent(claim.client_id, answer.gen, True, 0, "", []))
            self._kick_commit()
            return
        self.last_entry.pop(claim.client_id, None)
        if answer.session_present:
            self._want(claim.client_id)

    def _cancelled_text(self, c) -> str:
        """Why the engine discarded a pending will at this CONNECT, in words (for the timeline)."""
        here = f"on node {self.node_id}"
        if c.cause is CancelCause.NODE_DIED:
            return (f"the client came back ({here}) after node {c.dead_node} died, before its will was due "
                    f"(at {_clock(c.due_ms)}): discarded unpublished")
        if c.cause is CancelCause.TAKEOVER:
            return (f"a new connection ({here}) took the session over before the will of the previous one was due "
                    f"(at {_clock(c.due_ms)}): discarded unpublished")
        return (f"the client reconnected ({here}) to its session before its will was due (at {_clock(c.due_ms)}): "
                f"discarded unpublished")

    def _kick_commit(self) -> None:
        intents = self.core.take_intents()
        if intents is not None:
            self.submit(intents, [])

    async def _commit(self, intents: ClusterIntents,
                      claims: list[ClaimSession]) -> list[tuple[ClaimSession, ConnectResult]]:
        """One pipeline: claims, acknowledgements, connection ends (with what they give back), publishes,
        subscriptions. Retried until the engine takes it or the node fences itself. Claims the engine
        cannot answer are refused at once (CONNACK 0x88 / rc 3); returns the ones it answered."""
        engine = self.engine
        epoch = self.epoch
        acks, self._acks = self._acks, []
        for cid, entry in intents.acks:
            gen = self.core.generation(cid)
            if gen is not None:  # (a session gone from here: its next holder gets the entry again)
                acks.append(Ack(cid, gen, entry))
        claim_calls = [engine.call_connect(epoch, self.node_id, c.client_id, c.clean_start, c.session_expiry,
                                           will_spec(c.will, c.protocol_level) if c.will is not None else None,
                                           c.username, c.user_check) for c in claims]
        answered: list[tuple[ClaimSession, ConnectResult]] = []
        incarnation = self.incarnation
        broadcast = True  # QoS 0 for other nodes goes out once, with the first try
        while True:
            calls = claim_calls + self._calls(intents, acks, broadcast)
            broadcast = False
            if not calls:
                return answered
            try:
                results = await engine.run_all(calls)
            except (RedisError, OSError) as e:
                self._engine_down(e)
                if claims:  # refused now rather than left waiting for the engine
                    self._refuse(claims)
                    claims, claim_calls = [], []
                if incarnation != self.incarnation or self._stopping:
                    return []
                await asyncio.sleep(RETRY_AFTER)
                continue
            self._engine_up()
            self.stats["round_trips"] += 1
            self.stats["commits"] += 1
            fenced = next((r for r in results if isinstance(r, Fenced)), None)
            if fenced is not None:
                if claims:
                    self._refuse(claims)  # (connections opened before the fence are closed by it)
                    claims, claim_calls = [], []
                await self._fence("the engine refused a call: the lease had ended", fenced.epoch)
                if incarnation != self.incarnation or self._stopping:
                    return []  # this commit's connections are closed: nothing of it is acknowledged
                # sent under the epoch a fence under way is replacing (by connections the engine never had,
                # which the fence kept): sent again under the new one, acknowledged only then
                await asyncio.sleep(RETRY_AFTER)
                continue
            refused = []
            for c, r in zip(claims, results, strict=False):
                if isinstance(r, ConnectResult):
                    answered.append((c, r))
                else:
                    log.warning("cluster: the engine refused the claim of client_id=%s: %r", c.client_id, r)
                    refused.append(c)
            if refused:
                self._refuse(refused)
            results = results[len(claim_calls):]
            claims, claim_calls = [], []
            self._after(intents, results)
            if intents.retained:
                await self._send_retained(intents)
            if not any(isinstance(r, StaleRoutes) for r in results):
                return answered
            # routed on an older table than the engine's: nothing of that publish was written
            self.stats["stale_routes"] += 1
            await self._sync()
            again = ClusterIntents()
            again.publishes = intents.publishes
            again.disconnects = [DisconnectIntent(d.client_id, -1, d.normal, d.expiry, d.cause, d.requeue)
                                 for d in intents.disconnects if d.requeue]
            intents, acks = again, []

    def _refuse(self, claims: list[ClaimSession]) -> None:
        answer_unreachable(self.core, self.server, claims, self.loop.time(), self.stats)

    def _calls(self, intents: ClusterIntents, acks: list[Ack], broadcast: bool = True) -> list[Call]:
        engine = self.engine
        epoch = self.epoch
        calls: list[Call] = []
        self._broadcasts = []
        if acks:
            calls.append(engine.call_ack(epoch, acks))
        requeue = [self._requeued(d) for d in intents.disconnects if d.requeue]
        messages = [m for m in (self._out(p) for p in intents.publishes) if m is not None]
        if requeue or messages:
            calls.append(engine.call_publish(epoch, self.replica.version or 0, [*messages, *sum(requeue, [])]))
        for d in intents.disconnects:
            if d.gen < 0:
                continue  # only its messages given back (a publish routed again)
            calls.append(engine.call_disconnect(epoch, d.client_id, d.gen, d.normal, d.expiry, d.cause))
        for s in intents.subscribes:
            gen = self.core.generation(s.client_id)
            if gen is not None:
                calls.append(engine.call_subscribe(epoch, s.client_id, gen, s.add, s.remove))
        if self._broadcasts and broadcast:
            self.qos0.send(self.epoch, self._broadcasts)
            self._broadcasts = []
        return calls

    def _after(self, intents: ClusterIntents, results: list) -> None:
        for r in results:
            if isinstance(r, DisconnectResult) and r.outcome is WillOutcome.DUE:
                self._due.set()
            elif isinstance(r, Exception) and not isinstance(r, (StaleRoutes, Fenced)):
                log.warning("cluster: the engine refused a call: %r", r)
        for d in intents.disconnects:
            self.last_entry.pop(d.client_id, None)
        if intents.subscribes:
            asyncio.ensure_future(self._sync_quietly())

    async def _sync_quietly(self) -> None:
        try:
            await self._sync()
        except (RedisError, OSError):
            pass

    def _out(self, p: PublishIntent) -> OutMessage | None:
        m = p.message
        if m.qos == 0:
            # QoS 0 to the normal subscriptions of other nodes: pub/sub to the nodes holding them, each
            # delivers to its own (at most once, as QoS 0 is); the shared groups' members and the
            # retained store through the engine
            normal, targets = self.replica.split_targets(m.topic, 0, m.retain, m.origin)
            if normal:
                nodes = self.holders.destinations([t.client_id for t in normal], p.served, self.epoch)
                if nodes:
                    self._broadcasts.append((m, nodes))
        else:
            targets = self.replica.targets(m.topic, m.qos, m.retain, m.origin)
        if p.served:
            targets = tuple(t for t in targets if t.client_id not in p.served)
        if not targets and not m.retain and m.qos == 0:
            # (QoS 1/2 go to the engine even without targets here: it refuses a table older than its
            # own, so a subscription made on another node a moment ago is not missed)
            return None
        now = self.loop.time()
        expiry = m.remaining_expiry(now)
        return OutMessage(m.topic, m.payload, m.qos, m.retain, targets, _props(m.properties), m.origin, expiry)

    def _requeued(self, d: DisconnectIntent) -> list[OutMessage]:
        now = self.loop.time()
        return [OutMessage(m.topic, m.payload, m.qos, False, (Target(d.client_id, qos, retain, ids),),
                           _props(m.properties), m.origin, m.remaining_expiry(now))
                for m, qos, retain, ids in d.requeue if not m.expired(now)]

    async def _send_retained(self, intents: ClusterIntents) -> None:
        """The retained messages a new subscription gets [MQTT-3.3.1-9], queued to it (RETAIN 1
        [MQTT-3.3.1-8]); never to a shared subscription (the core does not ask for those)."""
        try:
            stored = await self.engine.retained(None)
            out = []
            for want in intents.retained:
                for r in stored:
                    if not r.payload or not topic_matches(want.topic_filter, r.topic):
                        continue
                    if want.options.no_local and r.origin == want.client_id:
                        continue
                    ids = (want.options.subscription_id,) if want.options.subscription_id else ()
                    exp = None if r.expires_ms is None else max(1, (r.expires_ms - self._engine_ms()) // 1000)
                    out.append(OutMessage(r.topic, r.payload, r.qos, False,
                                          (Target(want.client_id, min(r.qos, want.options.qos), True, ids),),
                                          r.properties, r.origin, exp))
            if out:
                await self.engine.publish(self.epoch, self.replica.version or 0, out)
        except StaleRoutes:
            await self._sync()
            await self._send_retained(intents)
        except (RedisError, OSError, Fenced) as e:
            log.warning("cluster: retained messages for new subscriptions not sent: %s", e)

    def _engine_ms(self) -> int:
        return int((self.loop.time() + self.clock_offset) * 1000)

    def _engine_down(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = self.loop.time()
            log.error("cluster: the engine (%s) cannot be reached: %s; until it answers again, new CONNECTs with a "
                      "will or a lasting session are refused (0x88 / rc 3), the others served by this node alone",
                      self.config.cluster, error)

    def _engine_up(self) -> None:
        if self.down_since is not None:
            log.warning("cluster: the engine answers again after %.1fs", self.loop.time() - self.down_since)
            self.down_since = None

    # ---- deliveries from the engine -------------------------------------------------------------------
    def _want(self, client_id: str) -> None:
        self._want_fetch.add(client_id)
        if not self._fetching:
            self._fetching = True
            asyncio.ensure_future(self._fetch())

    async def _fetch(self) -> None:
        try:
            while self._want_fetch:
                wanted, self._want_fetch = self._want_fetch, set()
                requests = []
                for cid in wanted:
                    gen = self.core.generation(cid)
                    if gen is not None:
                        requests.append(FetchRequest(cid, gen, self.last_entry.get(cid, ""), FETCH_COUNT))
                if not requests:
                    continue
                incarnation = self.incarnation
                try:
                    queues = await self.engine.fetch(self.epoch, requests)
                except Fenced as e:
                    await self._fence("the engine refused a fetch: the lease had ended", e.epoch)
                    return
                except (RedisError, OSError) as e:
                    self._engine_down(e)
                    self._want_fetch |= {r.client_id for r in requests}
                    await asyncio.sleep(RETRY_AFTER)
                    continue
                if incarnation != self.incarnation:
                    return
                now = self.loop.time()
                for req, q in zip(requests, queues, strict=True):
                    if not q.owned:
                        self.server.run(self.core.kicked(req.client_id, req.gen, now))
                        continue
                    if not q.deliveries:
                        continue
                    items = []
                    for d in q.deliveries:
                        expiry_at = None if d.expires_ms is None else d.expires_ms / 1000 - self.clock_offset
                        props = read_properties(d.properties, 0, "PUBLISH")[0] if d.properties else {}
                        # QoS 1/2: acknowledged in the engine once the client acknowledged it (the core's
                        # ClusterRecorder); QoS 0 once it is handed to the core
                        msg = Message(d.topic, d.payload, d.qos, d.retain, props, d.origin, expiry_at, d.is_will,
                                      ref=d.entry_id if d.qos else None)
                        items.append((msg, d.qos, d.retain, d.subscription_ids))
                    ok, actions = self.core.deliver_remote(req.client_id, req.gen, items, now)
                    if not ok:
                        continue
                    self.server.run(actions)
                    self.last_entry[req.client_id] = q.deliveries[-1].entry_id
                    self._acks.extend(Ack(req.client_id, req.gen, d.entry_id) for d in q.deliveries if not d.qos)
                    if len(q.deliveries) >= req.count:
                        self._want_fetch.add(req.client_id)
                if self._acks:
                    self._kick()
        except Exception:
            log.exception("cluster: internal error fetching queued messages")
        finally:
            self._fetching = False

    async def _listen_loop(self, epoch: int) -> None:
        while not self._stopping and epoch == self.epoch:
            try:
                async with self.engine.listen(epoch) as channel:
                    while epoch == self.epoch:
                        event = await channel.get(1.0)
                        if isinstance(event, Doorbell):
                            for cid in event.client_ids:
                                self._want(cid)
                        elif isinstance(event, Kicked):
                            self.server.run(self.core.kicked(event.client_id, event.gen, self.loop.time()))
                        elif isinstance(event, Broadcast):
                            messages = decode_qos0(event.data, self.loop.time())
                            if messages:
                                self.server.run(self.core.route_local(messages, self.loop.time()))
                        elif isinstance(event, Held):
                            self.holders.held(event.client_id, event.epoch)
                        elif isinstance(event, RoutesChanged):
                            if (self.replica.version or 0) < event.version and not self._sync_lock.locked():
                                asyncio.ensure_future(self._sync_quietly())
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self._engine_down(e)
                await asyncio.sleep(RETRY_AFTER * 5)
            except Exception:
                log.exception("cluster: internal error on the node's channel")
                await asyncio.sleep(1.0)

    # ---- the lease ------------------------------------------------------------------------------------
    async def _beat_loop(self) -> None:
        beat = self.settings.beat_ms / 1000
        beats = 0
        while not self._stopping:
            await asyncio.sleep(beat)
            if self._fencing:
                continue
            beats += 1
            sent = self.loop.time()
            epoch = self.epoch
            try:
                until = await self.engine.heartbeat(epoch)
                if epoch == self.epoch:
                    self.lease.renewed(sent)
                    self._note_clock(until, sent)
                    self.stats["leases_renewed"] += 1
                self._engine_up()
                if self.core.unclaimed():
                    await self._claim_late(epoch)
                if beats % 5 == 0:
                    await self.engine.expire(self.epoch)
                await self._sync()
                self.holders.reading()
                self.holders.replace(*await self.engine.holders())
                self._poll()
            except Fenced as e:
                if epoch == self.epoch:
                    self.stats["leases_missed"] += 1
                    await self._fence("the engine says its lease had ended", e.epoch)
            except (RedisError, OSError) as e:
                self.stats["leases_missed"] += 1
                self._engine_down(e)
            except Exception:
                log.exception("cluster: internal error in the heartbeat")

    async def _claim_late(self, epoch: int) -> None:
        if self._fencing or epoch != self.epoch or not self.lease.valid(self.loop.time()):
            return
        offset = self.clock_offset
        incarnation = self.incarnation
        if await self.late.claim(epoch, lambda t: int((t + offset) * 1000), lambda: incarnation == self.incarnation):
            self._due.set()
        self._kick_commit()  # their subscriptions, into the cluster's table

    async def _reap_loop(self) -> None:
        """Dead nodes are looked for 4 times per heartbeat: a dead node's wills are not late by a whole
        beat after its lease + grace ended."""
        every = self.settings.beat_ms / 4000
        while not self._stopping:
            await asyncio.sleep(every)
            if self._fencing:
                continue
            try:
                await self._reap()
            except Fenced:
                pass  # (the heartbeat and the watch handle it)
            except (RedisError, OSError) as e:
                self._engine_down(e)
            except Exception:
                log.exception("cluster: internal error reaping dead nodes")

    async def _reap(self) -> None:
        for _ in range(100):
            r = await self.engine.reap(self.epoch)
            for node in r.fenced:
                self.stats["epochs_reaped"] += 1
                log.warning("cluster: node %s (epoch %d) stopped renewing its lease (it ended at engine time %d "
                            "ms): fenced; its sessions and wills are taken over", node.node_id, node.epoch,
                            node.lease_end_ms)
            if r.reaped:
                self._due.set()
                log.info("cluster: %d session(s) of dead epochs made offline", len(r.reaped))
            if not r.remaining:
                return

    def _poll(self) -> None:
        """Doorbells are hints: the queues of a slice of the sessions here are fetched every beat."""
        ids = list(self.core.ownership.gens)
        if not ids:
            return
        start = self._poll_from % len(ids)
        chosen = ids[start:start + POLL_PER_BEAT]
        self._poll_from = start + len(chosen)
        for cid in chosen:
            self._want(cid)

    async def _watch_loop(self) -> None:
        """The node's own view of its lease, on its monotonic clock (a paused or cut-off node notices)."""
        while not self._stopping:
            await asyncio.sleep(0.05)
            if not self._fencing and not self.lease.valid(self.loop.time()):
                await self._fence("its lease ran out before a heartbeat renewed it", self.epoch)

    async def _fence(self, why: str, epoch: int) -> None:
        """Close every client connection, publish nothing, and register again under a new epoch.

        ``epoch`` is the epoch found fenced: a refusal of a call that an earlier epoch sent (a claim, fetch or
        commit in flight while the node was paused, answered after it registered again) is stale and fences
        nothing, or the fresh epoch would be fenced a second time and its new connections closed."""
        if self._fencing or self._stopping or epoch != self.epoch:
            return
        self._fencing = True
        self._conn_floor = self.core.sockets + 1  # connections opened from now on are served
        self.incarnation += 1
        self.stats["fenced"] += 1
        try:
            # the connections the engine never had are kept, unless a dropped commit held a packet for them
            waiting = {a.conn_id for _, actions in self._queue for a in actions}
            waiting.update(a.conn_id for a in self._committing)
            self._kept = {u.conn_id for u in self.core.unclaimed()} - waiting
            log.error("cluster: node %s (epoch %d) fenced itself: %s; closing its %d connection(s) (keeping %d the "
                      "engine never had), publishing nothing (the other nodes take its sessions and wills over)",
                      self.node_id, self.epoch, why, len(self.server.transports) - len(self._kept), len(self._kept))
            self._queue = []
            self._acks = []
            self._want_fetch = set()
            self.last_entry.clear()
            self.server.write_actions(self.core.fence(self.loop.time(), self._kept))
            for conn_id, transport in list(self.server.transports.items()):
                if conn_id not in self._kept:
                    transport.abort()
            while not self._stopping:
                try:
                    await self._register()
                    return
                except (RedisError, OSError) as e:
                    self._engine_down(e)
                    await asyncio.sleep(max(RETRY_AFTER, self.settings.beat_ms / 1000))
        finally:
            self._fencing = False

    # ---- wills ----------------------------------------------------------------------------------------
    async def _fire_loop(self) -> None:
        beat = self.settings.beat_ms / 1000
        while not self._stopping:
            wait = beat
            try:
                if not self._fencing:
                    wait = await self._fire_due()
            except Fenced as e:
                await self._fence("the engine refused a claim: the lease had ended", e.epoch)
            except (RedisError, OSError) as e:
                self._engine_down(e)
            except Exception:
                log.exception("cluster: internal error firing wills")
            self._due.clear()
            try:
                await asyncio.wait_for(self._due.wait(), max(0.005, min(wait, beat)))
            except asyncio.TimeoutError:
                pass

    def _fired_text(self, w, r, now_ms: int) -> str:
        """What ``explain`` says of a will this node published, in words, with the engine's times (UTC)."""
        fired = f"node {self.node_id} (epoch {self.epoch}) published this will at {_clock(now_ms)} to " \
                f"{r.receivers} session(s)"
        if w.dead_node:
            wait = (w.due_ms - (w.ended_ms or w.due_ms)) / 1000
            return (f"node {w.dead_node} (epoch {w.dead_epoch}) stopped renewing its lease; it ended at "
                    f"{_clock(w.ended_ms)}; {fired} (lease end + {wait:g} s: recovery grace or min(will delay, "
                    f"session expiry))")
        return f"{fired}, due at {_clock(w.due_ms)} ({w.cause})"

    async def _fire_due(self) -> float:
        """Claim the wills due now (each goes out once, whichever node claims it); seconds until the next."""
        batch = await self.engine.due(self.epoch, FIRE_BATCH)
        if batch.wills:
            access = self.core.access
            for _ in range(5):
                requests = [FireRequest(w.gen, w.client_id,
                                        self.replica.targets(w.topic, w.qos, w.retain, w.client_id),
                                        denied=not access.may_publish(w.user, w.client_id, w.topic))
                            for w in batch.wills]
                try:
                    results = await self.engine.fire(self.epoch, self.node_id, self.replica.version or 0, requests)
                    break
                except StaleRoutes:
                    self.stats["stale_routes"] += 1
                    await self._sync()
            else:
                return 0.0
            now = self.loop.time()
            for w, r in zip(batch.wills, results, strict=True):
                if r.outcome is FireOutcome.FIRED:
                    self.stats["wills_fired"] += 1
                    if w.dead_node:
                        self.stats["wills_fired_dead_node"] += 1
                        self.server.run(self.core.dead_node_will(w.client_id, w.user, w.dead_node, w.ended_ms,
                                                                 w.due_ms, now))
                    self.core.cluster_event(w.client_id, now, EventKind.PUBLISHED, self._fired_text(w, r, batch.now_ms),
                                            "MQTT-3.1.2-8", receivers=r.receivers, topic=w.topic, cause=w.cause,
                                            node=self.node_id)
                    log.info("will client_id=%s (generation %d) published by node %s (epoch %d) to %d session(s): "
                             "%s%s, due at engine time %d ms", w.client_id, w.gen, self.node_id, self.epoch,
                             r.receivers, w.cause, f" (node {w.dead_node} epoch {w.dead_epoch} died)"
                             if w.dead_node else "", w.due_ms)
                elif r.outcome is FireOutcome.GONE:
                    self.stats["claims_lost"] += 1
            if len(batch.wills) >= FIRE_BATCH:
                return 0.0
        if batch.next_due_ms is None:
            return self.settings.beat_ms / 1000
        return max(0.0, (batch.next_due_ms - batch.now_ms) / 1000)


_METRICS = {  # ClusterNode.stats key -> (metric name, help)
    "leases_renewed": ("lastwill_cluster_leases_renewed", "Heartbeats that renewed this node's lease"),
    "leases_missed": ("lastwill_cluster_leases_missed", "Heartbeats that failed (engine unreachable or fenced)"),
    "fenced": ("lastwill_cluster_fencing_events", "Times this node fenced itself (closed its clients, new epoch)"),
    "epochs_reaped": ("lastwill_cluster_epochs_reaped", "Dead nodes' epochs this node fenced and took over"),
    "wills_fired": ("lastwill_cluster_wills_fired", "Wills this node claimed and published"),
    "wills_fired_dead_node": ("lastwill_cluster_wills_fired_for_dead_node",
                              "Wills this node published for clients of a dead node"),
    "claims_lost": ("lastwill_cluster_claims_lost", "Due wills another node claimed first (or a reconnect cancelled)"),
    "stale_routes": ("lastwill_cluster_stale_routes", "Publishes or claims routed again on a newer table"),
    "commits": ("lastwill_cluster_commits", "Pipelines of a loop turn's changes sent to the engine"),
    "connects_refused_unavailable": ("lastwill_cluster_connects_refused",
                                     "CONNECTs refused with 0x88 / rc 3: the engine could not be reached"),
    "connects_served_alone": ("lastwill_cluster_connects_served_alone",
                              "CONNECTs with nothing to keep accepted while the engine could not be reached"),
}


class ClusterCollector:
    """The node's cluster counters for the admin API's /metrics, read at scrape time."""

    def __init__(self, node: ClusterNode):
        self.node = node

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.node.stats
        for key, (name, text) in _METRICS.items():
            yield CounterMetricFamily(name, text, value=stats.get(key, 0))
        yield GaugeMetricFamily("lastwill_cluster_epoch", "This node's current epoch in the cluster",
                                value=self.node.epoch)
