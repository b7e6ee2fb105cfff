"""The core's seams in cluster mode: routing, session ownership and will firing across nodes.

Sans-IO like the rest of the core: these classes decide what this node does with its own clients and
record what the cluster's engine must be told (``ClusterIntents``); the edge (edge/cluster.py) sends
those to the engine once per loop turn, in one pipeline, before the turn's acknowledgements leave.

How the work is split (docs/cluster.md, "The broker side"):

* A node's core holds the sessions **connected to it** (and nothing else): a session whose connection
  ends is handed to the engine (``ClusterSessions.disconnected``), with the messages still queued or in
  flight for it; a CONNECT takes it back from the engine (``ClaimSession``, then ``claimed``).
* A PUBLISH goes at once to the matching local subscribers (the local subscription tree, as on one
  node); everything else (subscribers on other nodes, offline sessions, one member of each shared group
  cluster-wide, the retained message) is a ``Publish`` intent: the edge computes its targets from the
  node's replica of the cluster's subscription table, leaving out the clients served here.
* Wills are armed, deferred, cancelled and fired by the engine (exactly once, by claim): the local
  ``WillKeeper`` still writes the timeline, but its claim always answers "gone" (``ClusterWillFiring``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..logs import fast_logger
from .access import Access
from .causes import Cause, ConnectionEnded
from .delivery import Deliverer
from .message import Message
from .persistence import NoRecorder
from .routing import merge_subscriptions
from .sessions import Session, WillState
from .topics import SubOptions, SubscriptionTree
from .will import DropReason, WillKeeper

log = fast_logger("lastwill.cluster")

_NOT_AUTHORIZED = DropReason.NOT_AUTHORIZED
_NORMAL = Cause.NORMAL


# -- what the engine must be told (taken by the edge once per loop turn) -------------------------------
@dataclass(slots=True)
class PublishIntent:
    """A message for the cluster: stored there if retained, queued to every matching session that is
    not in ``served`` (the clients this node delivered it to itself)."""

    message: Message
    served: frozenset[str]


@dataclass(slots=True)
class SubscribeIntent:
    client_id: str
    add: list[tuple[str, SubOptions]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RetainedWanted:
    """A new subscription of ``client_id`` gets the retained messages matching ``topic_filter``
    [MQTT-3.3.1-9] (through its queue in the engine, after the SUBACK)."""

    client_id: str
    topic_filter: str
    options: SubOptions


@dataclass(slots=True)
class DisconnectIntent:
    """The connection of generation ``gen`` ended: the engine decides the will (``normal``: DISCONNECT
    0x00 deletes it [MQTT-3.14.4-3]) and keeps the session (``expiry``); ``requeue``: what was queued
    or in flight for it here, given back to its queue in the engine (message, qos, retain, ids)."""

    client_id: str
    gen: int
    normal: bool
    expiry: int
    cause: str
    requeue: list[tuple[Message, int, bool, tuple[int, ...]]]


class ClusterIntents:
    __slots__ = ("publishes", "subscribes", "retained", "disconnects", "acks")

    def __init__(self) -> None:
        self.publishes: list[PublishIntent] = []
        self.subscribes: list[SubscribeIntent] = []
        self.retained: list[RetainedWanted] = []
        self.disconnects: list[DisconnectIntent] = []
        # deliveries from the engine's queues that are done (PUBACK, PUBCOMP, expired, ...): (client id,
        # queue entry); until then they stay in the engine, so that a node's death loses none
        self.acks: list[tuple[str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.publishes or self.subscribes or self.retained or self.disconnects or self.acks)

    def take(self) -> ClusterIntents | None:
        """What was recorded since the last call (None if nothing), and a fresh record."""
        if not self:
            return None
        taken = ClusterIntents()
        taken.publishes, self.publishes = self.publishes, []
        taken.subscribes, self.subscribes = self.subscribes, []
        taken.retained, self.retained = self.retained, []
        taken.disconnects, self.disconnects = self.disconnects, []
        taken.acks, self.acks = self.acks, []
        return taken

    def extend(self, other: ClusterIntents) -> None:
        self.publishes += other.publishes
        self.subscribes += other.subscribes
        self.retained += other.retained
        self.disconnects += other.disconnects
        self.acks += other.acks


class ClusterRecorder(NoRecorder):
    """A cluster node stores nothing itself; a delivery taken from the engine's queue of a session is
    acknowledged there once it is done (the Recorder's ``delivery_done``)."""

    __slots__ = ("intents",)

    def __init__(self, intents: ClusterIntents) -> None:
        self.intents = intents

    def delivery_done(self, session, d) -> None:
        ref = d.message.ref
        if ref is not None:
            self.intents.acks.append((session.client_id, ref))


# -- the claim of a session (CONNECT) -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claim:
    """The engine's answer to a CONNECT's claim, as the core needs it. ``gen`` None: the engine could not
    be reached and the node serves the connection on its own (``Unreachable.SERVED_LOCALLY``)."""

    gen: int | None
    session_present: bool
    subscriptions: tuple[tuple[str, SubOptions], ...]
    cancelled: tuple[str, ...] = ()  # timeline lines: pending wills the reconnect cancelled


LOCAL_CLAIM = Claim(None, False, ())


class Unreachable(enum.Enum):
    """What a CONNECT gets when the engine cannot answer its claim (docs/cluster.md, "Redis down")."""

    SERVED_LOCALLY = "served locally"  # nothing durable to lose: accepted, claimed when the engine is back
    REFUSED = "refused"  # a will or a session to keep: CONNACK 0x88 Server unavailable (3.1.1: rc 3)


def when_unreachable(clean_start: bool, has_will: bool, session_expiry: int) -> Unreachable:
    """A connection with Clean Start 1 (3.1.1: clean session 1), no will and Session Expiry 0 has no state
    that outlives it [MQTT-3.1.2-4] [MQTT-3.1.2-23] and no will to keep safe [MQTT-3.1.2-8]: the node can
    serve it alone. Anything else would be accepted without its will or session being safe: refused."""
    if clean_start and not has_will and session_expiry == 0:
        return Unreachable.SERVED_LOCALLY
    return Unreachable.REFUSED


@dataclass(frozen=True, slots=True)
class Unclaimed:
    """A connection this node accepted while the engine could not be reached: not known there yet."""

    client_id: str
    conn_id: int
    since: float  # when it was accepted (the core's clock)
    username: str | None


# -- routing ---------------------------------------------------------------------------------------------
class ClusterRouter:
    """Router (core/routing.py) of a cluster node: local subscribers now, the rest through the engine."""

    __slots__ = ("tree", "sessions", "deliverer", "access", "wills", "stats", "intents", "remote_tree",
                 "_subscribing")

    def __init__(self, tree: SubscriptionTree, sessions: dict[str, Session], deliverer: Deliverer, access: Access,
                 wills: WillKeeper, stats: dict[str, int], intents: ClusterIntents,
                 remote_tree: SubscriptionTree | None = None) -> None:
        self.tree = tree  # the subscriptions of the sessions connected here
        self.sessions = sessions
        self.deliverer = deliverer
        self.access = access
        self.wills = wills
        self.stats = stats
        self.intents = intents
        self.remote_tree = remote_tree  # the cluster's table (the replica's tree), for has_subscribers_under
        self._subscribing: tuple[str, SubOptions] | None = None

    def subscribe(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        self.tree.add(client_id, topic_filter, options)
        self.intents.subscribes.append(SubscribeIntent(client_id, [(topic_filter, options)]))
        self._subscribing = (client_id, options)

    def adopt(self, client_id: str, topic_filter: str, options: SubOptions) -> None:
        """A subscription of a session taken from the engine (it is there already)."""
        self.tree.add(client_id, topic_filter, options)

    def forget(self, client_id: str, topic_filter: str) -> None:
        """A subscription of a session handed back to the engine (it stays there)."""
        self.tree.remove(client_id, topic_filter)

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        self.intents.subscribes.append(SubscribeIntent(client_id, remove=[topic_filter]))
        return self.tree.remove(client_id, topic_filter)

    def retained_matching(self, topic_filter: str, now: float) -> list[Message]:
        # the retained messages are in the engine: they reach the subscriber through its queue there,
        # after the SUBACK [MQTT-3.3.1-9]. (SubscribeHandler asks right after subscribe())
        if self._subscribing is not None:
            client_id, options = self._subscribing
            self.intents.retained.append(RetainedWanted(client_id, topic_filter, options))
        return []

    def has_subscribers_under(self, first_level: str) -> bool:
        if self.tree.has_child(first_level):
            return True
        return self.remote_tree is not None and self.remote_tree.has_child(first_level)

    def subscription_count(self) -> int:
        """The subscriptions of the sessions connected to this node (the max_total_subscriptions bound is
        a per-node bound in a cluster: the engine holds the offline sessions' subscriptions)."""
        return len(self.tree)

    def drop_retained(self, topic: str) -> bool:
        # an empty retained message clears the topic's in the engine; whether there was one is not known here
        self.intents.publishes.append(PublishIntent(Message(topic, b"", 0, True), frozenset()))
        return True

    def route(self, message: Message, now: float) -> int:
        """Local subscribers now (no shared groups: one member cluster-wide is chosen from the cluster's
        table); the message goes to the engine for everyone else and for the retained store."""
        receivers, served = self.route_local(message, now)
        self.intents.publishes.append(PublishIntent(message, served))
        return receivers

    def route_local(self, message: Message, now: float, remote: bool = False) -> tuple[int, frozenset[str]]:
        """Deliver to the matching subscriptions of the sessions connected here (not the shared ones):
        how many got it, and which clients were served here (not computed for a ``remote`` message,
        another node's QoS 0 by pub/sub: nothing goes on from here)."""
        normal, _shared = self.tree.match(message.topic)
        served: frozenset[str] = frozenset()
        receivers = 0
        if normal and message.qos:
            # QoS 1/2 to a persistent session goes through its queue in the engine even when its client
            # is connected here: acknowledged there only when the client acknowledged it, so that this
            # node's death loses none of it (the publisher had its PUBACK)
            sessions = self.sessions
            normal = [(cid, o) for cid, o in normal
                      if not (o.qos and (s := sessions.get(cid)) is not None and s.expiry_interval)]
        if normal:
            if self.access.acl is not None:
                normal = self._readers(message, normal, now)
            sessions = self.sessions
            deliver = self.deliverer.deliver
            merged = merge_subscriptions(normal, message.origin)
            for client_id, (sub_qos, rap, ids) in merged.items():
                session = sessions.get(client_id)
                if session is None:
                    continue
                deliver(session, message, min(message.qos, sub_qos), message.retain and rap, tuple(ids), now)
                receivers += 1
            # every local subscriber of the topic is served here, No Local ones included (they get nothing)
            if not remote:
                served = frozenset(client_id for client_id, _ in normal)
        return receivers, served

    def _readers(self, message: Message, normal: list, now: float) -> list:
        may_read = self.access.may_read
        kept = [(cid, o) for cid, o in normal if may_read(cid, message.topic)]
        denied = {cid for cid, _ in normal} - {cid for cid, _ in kept}
        if denied:
            self.stats["dropped_not_authorized"] += len(denied)
            if message.is_will:
                for subscriber in sorted(denied):
                    self.wills.delivery_dropped(message, subscriber, _NOT_AUTHORIZED, now)
        return kept


# -- session ownership ---------------------------------------------------------------------------------
class ClusterSessions:
    """SessionOwnership (core/ownership.py) of a cluster node: the sessions connected here, each under
    the generation the engine gave its CONNECT."""

    __slots__ = ("by_id", "router", "wills", "intents", "gens", "claims", "get_local", "changes", "offline",
                 "unclaimed")

    def __init__(self, by_id: dict[str, Session], router: ClusterRouter, wills: WillKeeper,
                 intents: ClusterIntents) -> None:
        self.by_id = by_id
        self.router = router
        self.wills = wills
        self.intents = intents
        self.gens: dict[str, int] = {}  # client id -> the generation its connection here holds
        self.claims: dict[str, Claim] = {}  # client id -> the engine's answer, while its CONNECT goes on
        self.get_local = by_id.get
        self.changes = None
        self.offline: dict[str, None] = {}  # none here: the engine holds the offline sessions
        # client id -> a connection accepted while the engine could not be reached (no generation yet)
        self.unclaimed: dict[str, Unclaimed] = {}

    def __iter__(self) -> Iterator[Session]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, client_id: str) -> Session | None:
        session = self.by_id.get(client_id)
        claim = self.claims.get(client_id)
        if claim is None:
            return session
        if session is not None and session.conn is not None:
            return session  # connected here: the CONNECT takes it over (its end hands it back first)
        if session is None and claim.session_present:
            # the engine holds it: its subscriptions come back (the queue follows through the engine)
            session = Session(client_id)
            for topic_filter, options in claim.subscriptions:
                session.set_subscription(topic_filter, options)
                self.router.adopt(client_id, topic_filter, options)
            self.by_id[client_id] = session
        elif session is not None and not claim.session_present:
            self._drop(session)
            session = None
        return session

    def create(self, client_id: str) -> Session:
        session = self.by_id[client_id] = Session(client_id)
        return session

    def resumed(self, session: Session) -> None:
        pass

    def restored(self) -> None:
        """Nothing to order: a node restores nothing from a local store (the engine holds the state)."""

    def connected(self, session: Session, now: float) -> None:
        """The CONNECT was accepted: the session holds the generation it claimed."""
        claim = self.claims.pop(session.client_id, None)
        if claim is None:
            return
        if claim.gen is None:  # served locally while the engine is unreachable: claimed when it is back
            conn = session.conn
            self.unclaimed[session.client_id] = Unclaimed(session.client_id, conn.conn_id, now, conn.username)
        else:
            self.gens[session.client_id] = claim.gen

    def claimed_late(self, client_id: str, conn_id: int, gen: int, now: float) -> bool:
        """The engine took, under ``gen``, the session of a connection accepted while it was unreachable:
        from now on it is an engine session like any other, and its subscriptions go into the cluster's
        table. False: that connection ended meanwhile (its claim is given back: a normal end, nothing
        kept, as its Session Expiry 0 and no will say)."""
        u = self.unclaimed.get(client_id)
        session = self.by_id.get(client_id)
        if u is None or u.conn_id != conn_id or session is None or session.conn is None:
            self.intents.disconnects.append(DisconnectIntent(client_id, gen, True, 0, "", []))
            return False
        del self.unclaimed[client_id]
        self.gens[client_id] = gen
        if session.subscriptions:
            self.intents.subscribes.append(SubscribeIntent(client_id, list(session.subscriptions.items())))
        return True

    def unclaimed_conn(self, client_id: str, conn_id: int) -> bool:
        u = self.unclaimed.get(client_id)
        return u is not None and u.conn_id == conn_id

    def disconnected(self, session: Session, now: float, ended: ConnectionEnded | None = None) -> None:
        """Its connection ended: the engine decides its will and keeps it; this node forgets it, giving
        back what it still had to send."""
        gen = self.gens.pop(session.client_id, None)
        self.unclaimed.pop(session.client_id, None)  # (never known to the engine: nothing to tell it)
        # what came from the engine stays there until acknowledged: only what was routed here goes back
        requeue = [(d.message, d.qos, d.retain, d.subscription_ids) for d in _pending(session)
                   if d.message.ref is None]
        if gen is not None:
            normal = ended is not None and ended.cause is _NORMAL
            self.intents.disconnects.append(DisconnectIntent(
                session.client_id, gen, normal, session.expiry_interval,
                ended.cause.value if ended is not None else "", requeue))
        self._drop(session)

    def _drop(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.router.forget(session.client_id, topic_filter)
        if self.by_id.get(session.client_id) is session:
            del self.by_id[session.client_id]

    def end_oldest_offline(self, now: float, limit: str) -> bool:
        """No offline session to end here: the engine holds them (offline_session_overflow is a
        single-node setting)."""
        return False

    def end(self, session: Session, now: float, why: str, rule: str | None) -> None:
        """The session ends here (Clean Start 1, another user's CONNECT, an operator): the engine ended
        it already, or ends it when the connection's end reaches it (session expiry)."""
        log.info("session client_id=%s ended on this node: %s%s", session.client_id, why, f" [{rule}]" if rule else "")
        if session.conn is None:
            self._drop(session)

    def forget_all(self, kept: dict[str, int] | None = None) -> None:
        """This node lost its lease: the engine gave every session to the other nodes. ``kept``: client id
        -> connection accepted while the engine was unreachable that stays (claimed when it is back)."""
        kept = kept or {}
        for session in list(self.by_id.values()):
            if session.client_id in kept:
                continue
            session.conn = None
            self._drop(session)
        self.gens.clear()
        self.claims.clear()
        self.unclaimed = {cid: u for cid, u in self.unclaimed.items() if kept.get(cid) == u.conn_id}

    def generation(self, client_id: str) -> int | None:
        return self.gens.get(client_id)


def _pending(session: Session) -> list:
    """The deliveries not completed: in flight first (in packet id order), then queued."""
    out = [f.delivery for _, f in sorted(session.inflight.items())] if session.inflight else []
    if session.queue:
        out.extend(session.queue)
    return out


# -- will firing -----------------------------------------------------------------------------------------
class ClusterWillFiring:
    """WillFiring (core/will.py) of a cluster node: the engine fires every will, exactly once, by claim
    (the edge's due/fire loop); the local keeper only writes the timeline, so its claim is always lost."""

    __slots__ = ("publish",)

    def __init__(self) -> None:
        self.publish = None

    def claim(self, client_id: str, state: WillState, now: float) -> bool:
        return False
