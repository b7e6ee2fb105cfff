"""What the cluster engine takes and returns: enums and frozen dataclasses, never text to parse.

Times are integer milliseconds of the engine's clock (Redis ``TIME``), the only clock that orders
deadlines across nodes; a node's own clock only measures its lease (lease.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..core.topics import SubOptions

NEVER = 0xFFFFFFFF  # Session Expiry Interval "does not expire" (as core.sessions.NEVER)


# -- refusals: the whole call wrote nothing ---------------------------------------------------------
class EngineError(Exception):
    """The engine refused a call, or is not fit to run a cluster on."""


class Fenced(EngineError):
    """The caller's epoch holds no live lease: it wrote nothing, and the node must close its client
    connections, fire nothing, and register again under a new epoch."""

    def __init__(self, epoch: int):
        super().__init__(f"epoch {epoch} is fenced: its lease ended; register again")
        self.epoch = epoch


class StaleRoutes(EngineError):
    """The caller routed on a subscription table older than the engine's: it wrote nothing. Catch the
    replica up to ``version`` (RouteReplica.sync) and route again."""

    def __init__(self, sent: int, version: int):
        super().__init__(f"routed at table version {sent}, the engine is at {version}")
        self.sent = sent
        self.version = version


class ResyncNeeded(EngineError):
    """The route log was trimmed past the replica's version: take a snapshot."""

    def __init__(self, after: int, first: int):
        super().__init__(f"route log starts after version {first}; the replica is at {after}")
        self.after = after
        self.first = first


class EngineConfigError(EngineError):
    """A setting of the engine would lose data (``check_engine``): names it and what is expected."""

    def __init__(self, setting: str, expected: str, actual: str):
        super().__init__(f"redis setting {setting!r} is {actual!r}; the cluster needs {expected!r} "
                         f"(or pass allow_unsafe_engine for tests)")
        self.setting = setting
        self.expected = expected
        self.actual = actual


# -- nodes ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Registration:
    epoch: int
    lease_until_ms: int
    replaced: int | None  # a live epoch of the same node id, fenced by this registration


@dataclass(frozen=True, slots=True)
class FencedNode:
    epoch: int
    node_id: str
    lease_end_ms: int


@dataclass(frozen=True, slots=True)
class ReapedSession:
    client_id: str
    dead_epoch: int
    will_gen: int | None  # its armed will, now pending
    will_due_ms: int | None


@dataclass(frozen=True, slots=True)
class ReapResult:
    fenced: tuple[FencedNode, ...]  # epochs this call fenced
    reaped: tuple[ReapedSession, ...]  # sessions this call made offline
    finished: tuple[int, ...]  # epochs whose reap ended in this call
    remaining: int  # epochs still being reaped (call again)


# -- sessions and wills -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WillSpec:
    """A CONNECT's will, as the engine keeps it. ``properties``: the will's forwarded properties as the
    broker encodes them (opaque to the engine). MQTT 3.1.1 wills have ``delay`` 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes = b""
    delay: int = 0
    message_expiry: int | None = None
    protocol_level: int = 5


@dataclass(frozen=True, slots=True)
class DueRef:
    """A will that must be published now: it is in the due set, for any node to claim with fire()."""

    gen: int
    due_ms: int


class CancelCause(enum.Enum):
    RECONNECT = "reconnect"  # back before min(Will Delay, Session Expiry) after its connection ended
    TAKEOVER = "takeover"  # its connection was open on a live node and the new one resumed the session
    NODE_DIED = "node_died"  # back within the recovery grace / will delay after its node's lease ended


@dataclass(frozen=True, slots=True)
class CancelledWill:
    gen: int
    due_ms: int
    cause: CancelCause
    ended_cause: str  # why its connection had ended (a key of core.will.CAUSES, or "node_died")
    dead_node: str | None  # the node id, when the connection ended with its node


@dataclass(frozen=True, slots=True)
class Kick:
    """The connection this CONNECT took over: close it [MQTT-3.1.4-3] (its node got a ctl message)."""

    epoch: int
    gen: int


@dataclass(frozen=True, slots=True)
class ConnectResult:
    gen: int
    session_present: bool
    kick: Kick | None
    fire_now: tuple[DueRef, ...]  # claim these at once with fire()
    cancelled: tuple[CancelledWill, ...]  # for the timeline: discarded unpublished [MQTT-3.1.3-9]
    subscriptions: tuple[tuple[str, SubOptions], ...]  # of the resumed session
    queued: int  # entries in the resumed session's queue
    user_changed: bool  # the session was another user's: it ended instead of being resumed


@dataclass(frozen=True, slots=True)
class ClaimTaken:
    """A late claim refused: the client id connected (at ``connected_ms``, engine time) after the node
    accepted its connection while the engine was unreachable; the newer connection has the session."""

    connected_ms: int


class WillOutcome(enum.Enum):
    NONE = "none"  # the connection had no will
    CANCELLED = "cancelled"  # DISCONNECT 0x00 [MQTT-3.14.4-3]
    DEFERRED = "deferred"  # due at due_ms unless the client comes back [MQTT-3.1.3-9]
    DUE = "due"  # due now [MQTT-3.1.2-8]: claim it with fire()


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    owner: bool  # False: the session was taken over meanwhile; nothing was written
    will_gen: int | None = None
    outcome: WillOutcome = WillOutcome.NONE
    due_ms: int | None = None
    session_ended: bool = False


@dataclass(frozen=True, slots=True)
class DueWill:
    gen: int
    client_id: str
    due_ms: int
    topic: str
    qos: int
    retain: bool
    user: str | None  # the session's user name, for the ACL check before publishing
    cause: str  # why its connection ended (a key of core.will.CAUSES, "takeover" or "node_died")
    dead_node: str | None
    dead_epoch: int | None
    ended_ms: int | None  # when its connection ended (the lease end for node_died)


@dataclass(frozen=True, slots=True)
class DueBatch:
    now_ms: int
    next_due_ms: int | None  # the earliest deadline in the due set (past or future)
    wills: tuple[DueWill, ...]  # due by now_ms


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery: a session, the QoS and retain flag it gets, its subscription identifiers."""

    client_id: str
    qos: int
    retain: bool = False
    subscription_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FireRequest:
    gen: int
    client_id: str
    targets: tuple[Target, ...] = ()
    denied: bool = False  # the ACL refuses it now: removed and recorded, not published


class FireOutcome(enum.Enum):
    FIRED = "FIRED"
    DENIED = "DENIED"
    GONE = "GONE"  # another node fired it, or the client came back and cancelled it
    NOT_DUE = "NOT_DUE"


@dataclass(frozen=True, slots=True)
class FireResult:
    gen: int
    outcome: FireOutcome
    due_ms: int | None
    receivers: int
    audit_id: str | None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the ``fired`` stream: which node published (or denied) which will, and when."""

    id: str
    client_id: str
    gen: int
    by_epoch: int
    node_id: str
    due_ms: int
    fired_ms: int
    outcome: FireOutcome
    cause: str
    dead_node: str | None
    dead_epoch: int | None
    ended_ms: int | None
    receivers: int
    topic: str
    msg_id: str | None


# -- messages ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutMessage:
    """A PUBLISH to hand to the engine, with the deliveries the node's replica computed for it.
    ``retain``: the PUBLISH's RETAIN flag: the message becomes (or, with an empty payload, clears)
    the retained message of its topic."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    targets: tuple[Target, ...]
    properties: bytes = b""
    origin: str | None = None
    message_expiry: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A queue entry of a session with the message it refers to."""

    entry_id: str
    msg_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...]
    properties: bytes
    origin: str | None
    expires_ms: int | None
    is_will: bool
    # a QoS 2 delivery already sent (by this session's earlier holder): its packet id and state
    # ('pubrec': PUBLISH sent, 'pubcomp': PUBREL sent), to send it again as it was [MQTT-4.4.0-1]
    packet_id: int | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """A QoS 2 delivery of queue entry ``entry_id`` sent under ``packet_id``, now in ``state``."""

    client_id: str
    gen: int
    entry_id: str
    packet_id: int
    state: str


@dataclass(frozen=True, slots=True)
class FetchRequest:
    client_id: str
    gen: int
    after: str = ""  # the last entry id the node holds; "" from the start
    count: int = 100


@dataclass(frozen=True, slots=True)
class SessionQueue:
    client_id: str
    owned: bool  # False: this epoch/generation does not hold the session any more
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    client_id: str
    gen: int
    entry_id: str


@dataclass(frozen=True, slots=True)
class AckResult:
    acknowledged: int
    refused: int  # entries of sessions the caller no longer holds


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    owner: bool  # False: the session was taken over meanwhile; nothing was written
    version: int = 0  # routever after the change
    existed: tuple[bool, ...] = ()  # per removed filter: whether the session had it


class RouteOp(enum.Enum):
    SUBSCRIBE = "s"
    UNSUBSCRIBE = "u"


@dataclass(frozen=True, slots=True)
class RouteChange:
    version: int
    op: RouteOp
    client_id: str
    topic_filter: str
    options: SubOptions | None  # None for UNSUBSCRIBE


@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    version: int
    entries: tuple[tuple[str, str, SubOptions], ...]  # (client id, filter, options)


@dataclass(frozen=True, slots=True)
class Retained:
    topic: str
    msg_id: str
    payload: bytes
    qos: int
    properties: bytes
    origin: str | None
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class ExpireResult:
    sessions_ended: tuple[str, ...]
    retained_expired: tuple[str, ...]


# -- what a node hears on its channels --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Doorbell:
    """Sessions this node owns got queue entries: fetch them. A hint: a lost one is found by polling."""

    client_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Kicked:
    """A CONNECT on some node took this client id over: close the connection of this generation."""

    client_id: str
    gen: int


class Feed(enum.Enum):
    """What a node's pub/sub channel of an epoch carries (RedisEngine.broadcast; the value names the channel)."""

    QOS0 = "qos0"  # QoS 0 messages, handed out as Broadcast
    HELD = "held"  # client ids a node took, handed out as Held


@dataclass(frozen=True, slots=True)
class Broadcast:
    """QoS 0 messages another node sent to this one (pub/sub: at most once), as that node encoded them."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Held:
    """CONNECTs on the node of ``epoch`` took these client ids (a hint: where to send their QoS 0)."""

    client_ids: tuple[str, ...]
    epoch: int


@dataclass(frozen=True, slots=True)
class RoutesChanged:
    """The subscription table reached ``version``: a replica behind it catches up (a hint)."""

    version: int


# -- the engine's own settings ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineInfo:
    version: str
    appendonly: bool
    appendfsync: str
    maxmemory_policy: str
    test_clock: bool  # a test moved the engine clock (advance_clock)


def encode_options(o: SubOptions) -> str:
    """A subscription's options as the engine stores them (opaque to the scripts)."""
    sid = "" if o.subscription_id is None else str(o.subscription_id)
    return f"{o.qos},{int(o.no_local)},{int(o.retain_as_published)},{o.retain_handling},{sid}"


def decode_options(text: str) -> SubOptions:
    qos, nl, rap, rh, sid = text.split(",")
    return SubOptions(int(qos), nl == "1", rap == "1", int(rh), int(sid) if sid else None)
