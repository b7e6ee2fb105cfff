"""A node's replica of the cluster's subscription table, kept current from the engine's route log.

The replica knows the version (``routever``) it reflects; the node routes on it and passes that
version to ``publish``/``fire``, which refuse (``StaleRoutes``) when the engine's table moved on, so a
node never routes on a table older than the engine's. Matching uses the core's SubscriptionTree.
"""

from __future__ import annotations

from ..core.routing import merge_subscriptions
from ..core.topics import SubscriptionTree
from .model import ResyncNeeded, RouteChange, RouteOp, RouteSnapshot, Target
from .seams import Router


class RouteReplica:
    def __init__(self) -> None:
        self.tree = SubscriptionTree()
        self.version: int | None = None  # None: never synced
        self._next_member: dict[str, int] = {}  # share key -> round-robin position
        self.snapshots = 0  # how often it had to take the whole table

    def load(self, snapshot: RouteSnapshot) -> None:
        tree = SubscriptionTree()
        for client_id, topic_filter, options in snapshot.entries:
            tree.add(client_id, topic_filter, options)
        self.tree = tree
        self.version = snapshot.version
        self.snapshots += 1

    def apply(self, changes: tuple[RouteChange, ...]) -> None:
        """Apply log entries in order (each must be the next version)."""
        for c in changes:
            if self.version is None or c.version != self.version + 1:
                raise ValueError(f"route change {c.version} does not follow version {self.version}")
            if c.op is RouteOp.SUBSCRIBE:
                assert c.options is not None
                self.tree.add(c.client_id, c.topic_filter, c.options)
            else:
                self.tree.remove(c.client_id, c.topic_filter)
            self.version = c.version

    async def sync(self, router: Router, batch: int = 1000) -> int:
        """Catch up with the engine (one round trip when nothing changed); the version reached."""
        if self.version is None:
            self.load(await router.snapshot())
        while True:
            assert self.version is not None
            try:
                changes = await router.changes(self.version, batch)
            except ResyncNeeded:
                self.load(await router.snapshot())
                continue
            self.apply(changes)
            if len(changes) < batch:
                return self.version

    def targets(self, topic: str, qos: int, retain: bool = False, origin: str | None = None) -> tuple[Target, ...]:
        """The deliveries of a PUBLISH to ``topic``: one per subscribed session (overlapping
        subscriptions merged: the highest QoS, every subscription identifier [MQTT-3.3.4-3]), No Local
        [MQTT-3.8.3-3], Retain As Published [MQTT-3.3.1-12], one member per shared group."""
        normal, shared = self.split_targets(topic, qos, retain, origin)
        return normal + shared

    def split_targets(self, topic: str, qos: int, retain: bool = False,
                      origin: str | None = None) -> tuple[tuple[Target, ...], tuple[Target, ...]]:
        """``targets``, as (the normal subscriptions', the shared groups' chosen members')."""
        normal, shared = self.tree.match(topic)
        out = [Target(c, min(qos, q), retain and rap, tuple(ids))
               for c, (q, rap, ids) in merge_subscriptions(normal, origin).items()]
        picked = []
        for key, _group, members in shared:
            if not members:
                continue
            names = sorted(members)
            i = self._next_member.get(key, 0) % len(names)
            self._next_member[key] = i + 1
            o = members[names[i]]
            ids = () if o.subscription_id is None else (o.subscription_id,)
            picked.append(Target(names[i], min(qos, o.qos), retain and o.retain_as_published, ids))
        return tuple(out), tuple(picked)
