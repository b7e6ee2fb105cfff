"""The cluster's wills on a node: claiming those due now (``fire``: each goes out once, whichever node
claims it, [MQTT-3.1.2-8]) and what the node says of them in words (the timeline, ``explain``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from ..cluster.engine import RedisEngine
from ..cluster.model import (
    CancelCause,
    CancelledWill,
    DueWill,
    FireOutcome,
    FireRequest,
    FireResult,
    StaleRoutes,
)
from ..cluster.replica import RouteReplica
from ..core.timeline import EventKind

log = logging.getLogger("lastwill.cluster")

FIRE_BATCH = 250  # due wills claimed per round trip (one fire script: bounds how long it blocks Redis)


def engine_clock(ms: int | None) -> str:
    """An engine time (wall-clock ms) as a time of day, UTC."""
    if ms is None:
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000 // 100} UTC"


def cancelled_text(node_id: str, c: CancelledWill) -> str:
    """Why the engine discarded a pending will at a CONNECT on node ``node_id``, in words (the timeline)."""
    here = f"on node {node_id}"
    if c.cause is CancelCause.NODE_DIED:
        return (f"the client came back ({here}) after node {c.dead_node} died, before its will was due "
                f"(at {engine_clock(c.due_ms)}): discarded unpublished")
    if c.cause is CancelCause.TAKEOVER:
        return (f"a new connection ({here}) took the session over before the will of the previous one was due "
                f"(at {engine_clock(c.due_ms)}): discarded unpublished")
    return (f"the client reconnected ({here}) to its session before its will was due (at {engine_clock(c.due_ms)}): "
            f"discarded unpublished")


class WillClaims:
    """Claims and publishes the due wills for one node (``clock()``: the loop's time; ``beat``: seconds
    between two claims when none is due sooner)."""

    def __init__(self, engine: RedisEngine, core, server, node_id: str, stats: dict[str, int],
                 clock: Callable[[], float], beat: float) -> None:
        self.engine = engine
        self.core = core
        self.server = server
        self.node_id = node_id
        self.stats = stats
        self.clock = clock
        self.beat = beat

    def _fired_text(self, epoch: int, w: DueWill, r: FireResult, now_ms: int) -> str:
        """What ``explain`` says of a will this node published, in words, with the engine's times (UTC)."""
        fired = f"node {self.node_id} (epoch {epoch}) published this will at {engine_clock(now_ms)} to " \
                f"{r.receivers} session(s)"
        if w.dead_node:
            wait = (w.due_ms - (w.ended_ms or w.due_ms)) / 1000
            return (f"node {w.dead_node} (epoch {w.dead_epoch}) stopped renewing its lease; it ended at "
                    f"{engine_clock(w.ended_ms)}; {fired} (lease end + {wait:g} s: recovery grace or min(will delay, "
                    f"session expiry))")
        return f"{fired}, due at {engine_clock(w.due_ms)} ({w.cause})"

    async def fire_due(self, epoch: int, replica: Callable[[], RouteReplica],
                       sync: Callable[[], Awaitable[None]]) -> float:
        """Claim the wills due now (each goes out once, whichever node claims it); seconds until the next.
        ``replica()``: the node's route replica (``sync()`` catches it up when the engine says it is stale).
        Raises ``Fenced`` (the epoch lost its lease) and the client's errors."""
        batch = await self.engine.due(epoch, FIRE_BATCH)
        if batch.wills:
            access = self.core.access
            for _ in range(5):
                requests = [FireRequest(w.gen, w.client_id,
                                        replica().targets(w.topic, w.qos, w.retain, w.client_id),
                                        denied=not access.may_publish(w.user, w.client_id, w.topic))
                            for w in batch.wills]
                try:
                    results = await self.engine.fire(epoch, self.node_id, replica().version or 0, requests)
                    break
                except StaleRoutes:
                    self.stats["stale_routes"] += 1
                    await sync()
            else:
                return 0.0
            now = self.clock()
            for w, r in zip(batch.wills, results, strict=True):
                if r.outcome is FireOutcome.FIRED:
                    self.stats["wills_fired"] += 1
                    if w.dead_node:
                        self.stats["wills_fired_dead_node"] += 1
                        self.server.run(self.core.dead_node_will(w.client_id, w.user, w.dead_node, w.ended_ms,
                                                                 w.due_ms, now))
                    self.core.cluster_event(w.client_id, now, EventKind.PUBLISHED,
                                            self._fired_text(epoch, w, r, batch.now_ms), "MQTT-3.1.2-8",
                                            receivers=r.receivers, topic=w.topic, cause=w.cause, node=self.node_id)
                    log.info("will client_id=%s (generation %d) published by node %s (epoch %d) to %d session(s): "
                             "%s%s, due at engine time %d ms", w.client_id, w.gen, self.node_id, epoch,
                             r.receivers, w.cause, f" (node {w.dead_node} epoch {w.dead_epoch} died)"
                             if w.dead_node else "", w.due_ms)
                elif r.outcome is FireOutcome.GONE:
                    self.stats["claims_lost"] += 1
            if len(batch.wills) >= FIRE_BATCH:
                return 0.0
        if batch.next_due_ms is None:
            return self.beat
        return max(0.0, (batch.next_due_ms - batch.now_ms) / 1000)
