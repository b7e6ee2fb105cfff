"""Routing: who subscribes to what, and which sessions a published message goes to.

``Router`` is the seam: the packet handlers, the will keeper and the ``$SYS`` announcer publish and
subscribe through it. ``LocalRouter`` is the one-process implementation (the subscription trie and
the retained store of this broker); a cluster adds one that also reaches sessions on other nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .access import Access
from .delivery import Deliverer
from .message import Message
from .persistence import Recorder
from .retained import RetainedStore
from .sessions import Session
from .timers import TimerKind, TimerQueue
from .topics import SubOptions, SubscriptionTree
from .will import DropReason, WillKeeper

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_NOT_AUTHORIZED = DropReason.NOT_AUTHORIZED
_RETAINED = TimerKind.RETAINED.value


class Router(Protocol):
    def route(self, message: Message, now: float) -> int:
        """Deliver ``message`` to every matching subscription; store it if retained. Returns how many
        sessions it went to."""

    def subscribe(self, client_id: str, topic_filter: str, options: SubOptions) -> None: ...

    def subscription_count(self) -> int:
        """Subscriptions over every session (the max_total_subscriptions bound)."""

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool: ...

    def retained_matching(self, topic_filter: str, now: float) -> list[Message]:
        """The retained messages a new subscription to ``topic_filter`` gets [MQTT-3.3.1-9]."""

    def has_subscribers_under(self, first_level: str) -> bool:
        """Whether any subscription starts with ``first_level`` (e.g. ``$SYS``): nothing needs to be
        built for a topic there if not."""

    def drop_retained(self, topic: str) -> bool:
        """Remove the retained message of ``topic`` without publishing anything (an operator's
        deletion). False if there was none."""


class LocalRouter:
    __slots__ = ("tree", "retained", "sessions", "deliverer", "access", "wills", "recorder", "timers",
                 "stats", "_share_cursor", "deliver", "has_subscribers_under")

    def __init__(self, tree: SubscriptionTree, retained: RetainedStore, sessions: Mapping[str, Session],
                 deliverer: Deliverer, access: Access, wills: WillKeeper, recorder: Recorder, timers: TimerQueue,
                 stats: dict[str, int]) -> None:
        self.tree = tree
        self.retained = retained
        self.sessions = sessions  # client id -> its Session (every subscriber has one); read only
        self.deliverer = deliverer
        self.deliver = deliverer.deliver
        self.access = access
        self.wills = wills  # told when a will's delivery is not made (ACL)
        self.recorder = recorder
        self.timers = timers
        self.stats = stats
        self._share_cursor: dict[str, int] = {}
        # (the tree's own method: the $SYS announcer asks on every connect and disconnect)
        self.has_subscribers_under = tree.has_child
        timers.register(TimerKind.RETAINED, self._retained_expired)

    # -- subscriptions -------------------------------------------------------------------------------
    def subscribe(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        self.tree.add(client_id, topic_filter, options)

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        return self.tree.remove(client_id, topic_filter)

    def subscription_count(self) -> int:
        return len(self.tree)

    def retained_matching(self, topic_filter: str, now: float) -> list[Message]:
        return self.retained.matching(topic_filter, now)

    # -- publishing ------------------------------------------------------------------------------------
    def route(self, message: Message, now: float) -> int:
        if message.retain:
            if self.retained.store(message):  # [MQTT-3.3.1-5]
                self.recorder.retained_changed(message.topic, message if message.payload else None)
            if message.expiry_at is not None and message.payload:
                self.timers.schedule((_RETAINED, message.topic), message.expiry_at)
        normal, shared = self.tree.match(message.topic)
        if not normal and not shared:
            return 0
        if self.access.acl is not None:  # every receiver must be allowed to read it (acl_file), checked now
            normal, shared = self._readers(message, normal, shared, now)
            if not normal and not shared:
                return 0
        sessions = self.sessions
        deliver = self.deliver
        origin = message.origin
        if len(normal) == 1 and not shared:
            client_id, opts = normal[0]
            if opts.no_local and client_id == origin:  # [MQTT-3.8.3-3]
                return 0
            deliver(sessions[client_id], message, min(message.qos, opts.qos),
                    message.retain and opts.retain_as_published,
                    (opts.subscription_id,) if opts.subscription_id else (), now)
            return 1
        receivers = 0
        for client_id, (sub_qos, rap, ids) in merge_subscriptions(normal, origin).items():
            deliver(sessions[client_id], message, min(message.qos, sub_qos), message.retain and rap, tuple(ids), now)
            receivers += 1
        for share_key, _group, members in shared:
            chosen = self._pick_member(share_key, members)
            if chosen is None:
                continue
            client_id, opts = chosen
            deliver(sessions[client_id], message, min(message.qos, opts.qos),
                    message.retain and opts.retain_as_published,
                    (opts.subscription_id,) if opts.subscription_id else (), now)
            receivers += 1
        return receivers

    def _pick_member(self, share_key: str, members: dict[str, SubOptions]):
        """Round robin over the group, preferring members that are connected [MQTT-4.8.2-2]."""
        items = list(members.items())
        if not items:
            return None
        start = self._share_cursor.get(share_key, 0)
        n = len(items)
        for i in range(n):
            client_id, opts = items[(start + i) % n]
            if self.sessions[client_id].conn is not None:
                self._share_cursor[share_key] = (start + i + 1) % n
                return client_id, opts
        self._share_cursor[share_key] = (start + 1) % n
        return items[start % n]

    def _readers(self, message: Message, normal: list, shared: list, now: float) -> tuple[list, list]:
        """The matching subscriptions whose client may read ``message`` (new lists: the tree's are cached).
        The others are not delivered to, counted, and for a will written on its timeline."""
        topic = message.topic
        may_read = self.access.may_read
        kept = [(cid, o) for cid, o in normal if may_read(cid, topic)]
        denied = {cid for cid, _ in normal} - {cid for cid, _ in kept}
        kept_shared = []
        for share_key, group, members in shared:
            allowed = {cid: o for cid, o in members.items() if may_read(cid, topic)}
            if allowed:
                kept_shared.append((share_key, group, allowed))
            else:
                denied.add(f"$share/{share_key}")
        if denied:
            self.stats["dropped_not_authorized"] += len(denied)
            if message.is_will:
                for subscriber in sorted(denied):
                    self.wills.delivery_dropped(message, subscriber, _NOT_AUTHORIZED, now)
        return kept, kept_shared

    def drop_retained(self, topic: str) -> bool:
        msg = self.retained.get(topic)
        if msg is None or not self.retained.remove_if(topic, msg):
            return False
        self.recorder.retained_changed(topic, None)
        return True

    def _retained_expired(self, topic: str, now: float) -> None:
        msg = self.retained.get(topic)
        if msg is not None and msg.expired(now):
            self.retained.remove_if(topic, msg)
            self.recorder.retained_changed(topic, None)


def merge_subscriptions(normal: list, origin: str | None) -> dict[str, list]:
    """One delivery per client of overlapping subscriptions (shared with the cluster's replica,
    cluster/replica.py): the highest QoS, every identifier
    [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5]; none to its own publisher with No Local
    [MQTT-3.8.3-3]. client id -> [qos, retain as published, subscription ids]."""
    merged: dict[str, list] = {}
    for client_id, opts in normal:
        if opts.no_local and client_id == origin:
            continue
        entry = merged.get(client_id)
        if entry is None:
            merged[client_id] = [opts.qos, opts.retain_as_published,
                                 [opts.subscription_id] if opts.subscription_id else []]
        else:
            if opts.qos > entry[0]:
                entry[0] = opts.qos
            entry[1] = entry[1] or opts.retain_as_published
            if opts.subscription_id:
                entry[2].append(opts.subscription_id)
    return merged
