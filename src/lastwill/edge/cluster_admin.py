"""What the admin API asks a cluster node about the whole cluster: answered from the engine (a node
that held a client may be dead, which is when ``explain`` matters; docs/cluster.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from ..cluster.engine import RedisEngine

log = logging.getLogger("lastwill.cluster")


class ClusterQueries:
    """The admin API's cluster-wide views (``node_id``: the node that answers; ``epoch()``: its epoch)."""

    def __init__(self, engine: RedisEngine, node_id: str, epoch: Callable[[], int]) -> None:
        self.engine = engine
        self.node_id = node_id
        self.epoch = epoch

    async def view(self) -> dict:
        """The admin API's /api/cluster: the engine's view, and which node answers."""
        out = await self.engine.view()
        out["this_node"] = {"node_id": self.node_id, "epoch": self.epoch()}
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
