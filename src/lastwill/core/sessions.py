"""Sessions and connections as the core sees them: plain state, no I/O.

A ``Session`` outlives its network connections (Clean Start 0 / Session Expiry Interval); a
``Conn`` is one network connection. The rules that move them live in the handler modules
(``connection.py``, ``connect.py``, ``publish.py``, ...) and, for the will, in ``will.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..codec.packets import PROTOCOL_311, Publish, Will
from .causes import ConnectionEnded
from .message import Message
from .topics import SubOptions

if TYPE_CHECKING:
    from .backlog import Backlog

NEVER = 0xFFFFFFFF  # Session Expiry Interval meaning "does not expire"


class ConnState(StrEnum):
    NEW = "new"  # no CONNECT accepted yet
    AUTHENTICATING = "authenticating"  # the CONNECT waits for the edge to check its password
    CONNECTED = "connected"
    CLOSED = "closed"


class AckState(StrEnum):
    """Where an outbound QoS 1/2 delivery stands (the values are what the store keeps)."""

    AWAIT_PUBACK = "puback"
    AWAIT_PUBREC = "pubrec"
    AWAIT_PUBCOMP = "pubcomp"


NEW, AUTHENTICATING, CONNECTED, CLOSED = ConnState.NEW, ConnState.AUTHENTICATING, ConnState.CONNECTED, ConnState.CLOSED
AWAIT_PUBACK, AWAIT_PUBREC, AWAIT_PUBCOMP = AckState.AWAIT_PUBACK, AckState.AWAIT_PUBREC, AckState.AWAIT_PUBCOMP

# Shared, immutable empty containers: a Session or Conn holds these until it first needs a real one
# (an idle connection with a will never does). An empty deque costs ~760 bytes, a set ~216, a dict
# 64: for 10,000 idle clients that was most of the core's memory. Being immutable, a caller that
# forgets to make a real container first fails loudly instead of sharing state between clients.
EMPTY_MAP: MappingProxyType = MappingProxyType({})
EMPTY_SET: frozenset = frozenset()
EMPTY_QUEUE: tuple = ()


def _empty_map() -> MappingProxyType:
    return EMPTY_MAP


@dataclass(slots=True, eq=False)
class Delivery:
    """A message on its way to one session: the QoS and flags it gets there."""

    message: Message
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    seq: int = 0  # position in its session, for the store (0: not stored)


@dataclass(slots=True, eq=False)
class InFlight:
    delivery: Delivery
    packet: Publish  # as last sent (packet_id set)
    state: AckState


@dataclass(slots=True, eq=False)
class WillState:
    """A session's Will Message while it is stored [MQTT-3.1.2-7], and where it stands. Changed only
    by core/will.py (``WillKeeper``); read through ``WillKeeper.status``."""

    message: Will
    fire_at: float | None = None  # set while pending after the connection ended (monotonic deadline)
    ended: ConnectionEnded | None = None  # how the connection ended (once it has)
    recovered: bool = False  # pending because the broker stopped while the client was connected

    # the will's own fields, read as the Will's
    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def payload(self) -> bytes:
        return self.message.payload

    @property
    def qos(self) -> int:
        return self.message.qos

    @property
    def retain(self) -> bool:
        return self.message.retain

    @property
    def properties(self) -> dict:
        return self.message.properties


@dataclass(slots=True, eq=False)
class Session:
    client_id: str
    expiry_interval: int = 0
    # the containers below start as the shared empties above; the methods at the end make real ones
    subscriptions: dict[str, SubOptions] = field(default_factory=_empty_map)
    conn: Conn | None = None
    will: WillState | None = None  # the CONNECT's Will Message while it is stored (core/will.py)
    disconnected_at: float | None = None  # when the last connection ended (for session expiry)
    queue: deque[Delivery] = EMPTY_QUEUE  # type: ignore[assignment]
    inflight: dict[int, InFlight] = field(default_factory=_empty_map)
    awaiting_pubrel: set[int] = EMPTY_SET  # type: ignore[assignment]  # inbound QoS 2 packet ids
    next_packet_id: int = 1
    next_seq: int = 1  # for Delivery.seq
    dropped: int = 0  # messages dropped because the queue was full
    queued_bytes: int = 0  # topics + payloads of the messages in ``queue`` (for max_queued_bytes)
    inflight_bytes: int = 0  # topics + payloads of the deliveries in ``inflight`` (for max_inflight_bytes)
    # the user name the session was last connected with (None: anonymous): what the ACL checks for
    # its deliveries and its will, also when no connection is open (stored with the session)
    username: str | None = None
    # restored from a store older than schema 3, which kept no user name: the ACL treats it as
    # anonymous, and the first user to reconnect to it resumes it (not "another user's session")
    username_unknown: bool = False
    # restored: its queue beyond ``queue``, left in the store until the queue drains to it, and what
    # was queued behind it since (core/backlog.py); its bytes are in ``queued_bytes``
    backlog: Backlog | None = None

    def queued_count(self) -> int:
        """Its queued deliveries (max_queued_messages), those of its backlog too."""
        return len(self.queue) + self.backlog.queued() if self.backlog is not None else len(self.queue)

    def allocate_packet_id(self) -> int:
        pid = self.next_packet_id
        inflight = self.inflight
        for _ in range(65535):
            if pid not in inflight:
                break
            pid = pid % 65535 + 1
        else:  # pragma: no cover - callers never exceed the receive maximum (<= 65535)
            raise RuntimeError("no free packet identifier")
        self.next_packet_id = pid % 65535 + 1
        return pid

    # -- the containers, made real when first written to ---------------------------------------
    def enqueue(self, d: Delivery) -> None:
        if self.backlog is not None:  # behind the deliveries still in the store
            self.backlog.after.append(d)
            return
        q = self.queue
        if q is EMPTY_QUEUE:
            q = self.queue = deque()
        q.append(d)

    def enqueue_all(self, items: list[Delivery]) -> None:
        q = self.queue
        if q is EMPTY_QUEUE:
            self.queue = deque(items)
        else:
            q.extend(items)

    def set_inflight(self, pid: int, f: InFlight) -> None:
        inflight = self.inflight
        if inflight is EMPTY_MAP:
            inflight = self.inflight = {}
        old = inflight.get(pid)
        if old is not None:
            self.inflight_bytes -= len(old.delivery.message.payload) + len(old.delivery.message.topic)
        inflight[pid] = f
        self.inflight_bytes += len(f.delivery.message.payload) + len(f.delivery.message.topic)

    def drop_inflight(self, pid: int) -> None:
        """The delivery of ``pid`` is no longer in flight (acknowledged, refused, discarded)."""
        f = self.inflight.pop(pid)
        self.inflight_bytes -= len(f.delivery.message.payload) + len(f.delivery.message.topic)

    def add_awaiting_pubrel(self, pid: int) -> None:
        awaiting = self.awaiting_pubrel
        if awaiting is EMPTY_SET:
            awaiting = self.awaiting_pubrel = set()
        awaiting.add(pid)

    def set_subscription(self, topic_filter: str, opts: SubOptions) -> None:
        subs = self.subscriptions
        if subs is EMPTY_MAP:
            subs = self.subscriptions = {}
        subs[topic_filter] = opts

    def clear_subscriptions(self) -> None:
        self.subscriptions = EMPTY_MAP  # type: ignore[assignment]


@dataclass(slots=True, eq=False)
class Conn:
    conn_id: int
    peer: str = ""
    state: ConnState = NEW
    protocol_level: int = PROTOCOL_311
    client_id: str = ""
    session: Session | None = None
    keep_alive: int = 0  # the value in force (the client's, or the Server Keep Alive)
    last_activity: float = 0.0
    connect_expiry_interval: int = 0  # Session Expiry Interval from CONNECT (for [MQTT-3.14.2-2])
    connected_at: float = 0.0  # when the CONNECT was accepted (monotonic; for the admin API)
    username: str | None = None  # who the client is: the authenticated (or, without password_file, claimed) user name
    sockport: int = 0  # the local port the connection came in on (for the $SYS events)
    # The identity the TLS layer proved: the CN of the client's verified certificate, set by the edge
    # only when tls_cert_cn_as_username is on (None otherwise). It replaces the CONNECT's User Name
    # (as mosquitto's use_identity_as_username): authentication must treat the connection as this
    # user without asking for a password, and ACLs must use this name.
    cert_username: str | None = None
    # authentication (AUTHENTICATING): the CONNECT and what arrived after it while the edge checks the
    # password; auth_done: checked, the CONNECT is being handled again
    held: list | None = None
    auth_done: bool = False
    claimed: bool = False  # cluster: the engine gave this CONNECT its session (ClaimSession)
    acl_denied: int = 0  # PUBLISHes refused by the ACL on this connection (to throttle the log)
    # what the client told us (MQTT 5 CONNECT properties)
    receive_maximum: int = 65535
    maximum_packet_size: int | None = None
    topic_alias_maximum: int = 0
    request_problem_information: bool = True
    paused: bool = False  # the socket is not keeping up (edge: pause_writing): hold QoS 1/2, drop QoS 0
    # max_publish_rate: a token bucket of PUBLISH packets, refilled from the core's ``now``
    publish_tokens: float = 0.0
    publish_tokens_at: float = 0.0
    # topic aliases (MQTT 5), both ways: the shared EMPTY_MAP until the first one is set
    aliases_in: dict[int, str] = field(default_factory=_empty_map)
    aliases_out: dict[str, int] = field(default_factory=_empty_map)
    # packet ids of a resumed session's unacknowledged PUBLISHes not yet re-sent on this connection:
    # held back while the client's Receive Maximum is used up [MQTT-4.9.0-1] (a dict: ordered set;
    # the shared EMPTY_MAP until a resumed session has some)
    resend: dict[int, None] = field(default_factory=_empty_map)
    decoder: object = None
