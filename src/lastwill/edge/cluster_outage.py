"""A cluster node while its engine (Redis) cannot be reached, and when it answers again.

The core decides what a CONNECT gets while the engine is unreachable (core/cluster.py
``when_unreachable``): one with nothing to keep (Clean Start 1, no will, Session Expiry 0) is served by
this node alone, the rest is refused with 0x88 / rc 3. This module does the edge's half:

* ``answer_unreachable``: the claims of a loop turn, answered at once while the engine is known to be
  down (they do not wait behind a commit that is retrying);
* ``LateClaims``: once the engine answers (after a heartbeat went through, under the node's current
  epoch), the connections served alone are claimed there, in one round trip, as the CONNECTs they were
  (Clean Start 1, no will), with the time each was accepted. A client id that connected anywhere after
  that has the session: the local connection ends as taken over [MQTT-3.1.4-3] (MQTT 5: DISCONNECT
  0x8E). The claimed sessions' subscriptions go into the cluster's table with the next commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..cluster.engine import RedisEngine
from ..cluster.model import ClaimTaken, ConnectResult, Fenced
from ..core.actions import ClaimSession
from ..core.cluster import Unreachable, when_unreachable

log = logging.getLogger("lastwill.cluster")


def answer_unreachable(core, server, claims: list[ClaimSession], now: float, stats: dict[str, int]) -> None:
    """The engine cannot be reached: each claim is served locally or refused (the core's rule)."""
    for c in claims:
        kind = when_unreachable(c.clean_start, c.will is not None, c.session_expiry)
        stats["connects_refused_unavailable" if kind is Unreachable.REFUSED else "connects_served_alone"] += 1
        _, actions = core.session_claimed(c.conn_id, None, now)
        server.write_actions(actions)


class LateClaims:
    """Claims in the engine the connections this node accepted while it could not reach it."""

    def __init__(self, engine: RedisEngine, core, server, node_id: str, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.core = core
        self.server = server
        self.node_id = node_id
        self.clock = clock

    async def claim(self, epoch: int, engine_ms: Callable[[float], int], current: Callable[[], bool]) -> bool:
        """Claim every unclaimed connection (one pipeline). ``engine_ms``: the engine time of a time of
        the core's clock; ``current()``: False if the node fenced itself meanwhile (then the claims, made
        under an epoch now fenced, are not applied: the connections stay unclaimed and are claimed again
        under the new epoch). True: a claim made an older will due now (the caller wakes its will loop).
        Raises ``Fenced`` (the epoch lost its lease: nothing was claimed) and the client's errors."""
        pending = self.core.unclaimed()
        if not pending:
            return False
        calls = [self.engine.call_connect(epoch, self.node_id, u.client_id, True, 0, None, u.username,
                                          since_ms=engine_ms(u.since)) for u in pending]
        results = await self.engine.run_all(calls)
        fenced = next((r for r in results if isinstance(r, Fenced)), None)
        if fenced is not None:
            raise fenced
        if not current():
            return False
        now = self.clock()
        due = False
        for u, r in zip(pending, results, strict=True):
            if isinstance(r, ConnectResult):
                due = due or bool(r.fire_now)
                if self.core.claimed_late(u.client_id, u.conn_id, r.gen, now):
                    log.info("cluster: client_id=%s, accepted while the engine could not be reached, is now held "
                             "in the engine (generation %d)", u.client_id, r.gen)
            elif isinstance(r, ClaimTaken):
                log.info("cluster: client_id=%s connected again elsewhere after this node accepted it while the "
                         "engine could not be reached: this connection is taken over [MQTT-3.1.4-3]", u.client_id)
                self.server.run(self.core.claim_lost(u.client_id, u.conn_id, now))
            else:
                log.warning("cluster: the engine refused the late claim of client_id=%s: %r", u.client_id, r)
        return due
