"""Read-only answers about the broker's state, for the admin API, ``explain``, metrics and the edge.

Nothing here changes the state, and nothing outside the core needs to know how the state is kept:
the answers are frozen dataclasses with the core's monotonic times (the reader converts them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType

from .limits import BoundUse, Limits
from .retained import RetainedStore
from .sessions import CONNECTED, NEVER, Conn, Session
from .timeline import Timeline, WillEvent
from .will import WillKeeper, WillPhase, WillStatus


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A connected client (its CONNECT was accepted)."""

    client_id: str
    peer: str
    protocol_level: int
    keep_alive: int
    connected_at: float
    username: str | None
    will: WillStatus


@dataclass(frozen=True, slots=True)
class SessionInfo:
    client_id: str
    connected: bool
    expiry_interval: int | None  # None: never expires
    expires_at: float | None  # an offline session's deadline (monotonic)
    subscriptions: int
    queued: int
    inflight: int
    dropped: int
    will: WillStatus
    conn: ClientInfo | None


@dataclass(frozen=True, slots=True)
class RetainedInfo:
    """A retained message (the admin API's listing)."""

    topic: str
    payload: bytes
    qos: int
    expires_at: float | None  # Message Expiry (monotonic); None: never
    origin: str | None  # the client id that published it; None: the broker (presence, $SYS)
    properties: MappingProxyType


@dataclass(frozen=True, slots=True)
class Totals:
    connections: int
    sessions: int
    wills_held: int  # of connected clients (armed)
    wills_pending: int
    queued: int
    inflight: int


@dataclass(frozen=True, slots=True)
class Counters:
    """The core's counters, read at scrape time (nothing is counted for the metrics on the hot path)."""

    wills_armed: int
    wills_published_by_cause: MappingProxyType  # causes.Cause values -> count
    wills_published_unreceived: int
    wills_cancelled_by_cause: MappingProxyType  # will.CancelCause values -> count
    wills_dropped_by_reason: MappingProxyType  # will.DropReason values -> count
    wills_denied: int
    stats: MappingProxyType  # messages in/out, drops, connects, refusals (BrokerCore.stats)
    limit_hits: MappingProxyType  # limit -> times enforced
    retained: int
    timeline_clients: int
    bounds: tuple[BoundUse, ...] = ()  # the global bounds and what is held now (core/limits.py)


class BrokerView:
    __slots__ = ("_conns", "_sessions", "_wills", "_timeline", "_stats", "_limits", "_retained", "_bound_use")

    def __init__(self, conns: dict[int, Conn], sessions: dict[str, Session], wills: WillKeeper,
                 timeline: Timeline, stats: dict[str, int], limits: Limits, retained: RetainedStore,
                 bound_use: Callable[[], tuple[BoundUse, ...]] | None = None) -> None:
        self._bound_use = bound_use
        self._conns = conns
        self._sessions = sessions
        self._wills = wills
        self._timeline = timeline
        self._stats = stats
        self._limits = limits
        self._retained = retained

    def counters(self) -> Counters:
        w = self._wills
        return Counters(w.armed, MappingProxyType(dict(w.published_by_cause)), w.published_unreceived,
                        MappingProxyType(dict(w.cancelled_by_cause)), MappingProxyType(dict(w.dropped_by_reason)),
                        w.denied, MappingProxyType(dict(self._stats)), MappingProxyType(dict(self._limits.hits)),
                        len(self._retained), len(self._timeline),
                        self._bound_use() if self._bound_use is not None else ())

    def clients(self) -> Iterator[ClientInfo]:
        for conn in self._conns.values():
            if conn.state == CONNECTED and conn.session is not None:
                yield self._client(conn, conn.session)

    def _client(self, conn: Conn, session: Session) -> ClientInfo:
        return ClientInfo(conn.client_id, conn.peer, conn.protocol_level, conn.keep_alive, conn.connected_at,
                          conn.username, self._wills.status(session))

    def sessions(self) -> Iterator[SessionInfo]:
        for session in self._sessions.values():
            yield self._session(session)

    def session(self, client_id: str) -> SessionInfo | None:
        session = self._sessions.get(client_id)
        return self._session(session) if session is not None else None

    def _session(self, s: Session) -> SessionInfo:
        expires_at = None
        if s.conn is None and s.expiry_interval != NEVER and s.disconnected_at is not None:
            expires_at = s.disconnected_at + s.expiry_interval
        conn = s.conn
        return SessionInfo(s.client_id, conn is not None, None if s.expiry_interval == NEVER else s.expiry_interval,
                           expires_at, len(s.subscriptions), s.queued_count(), len(s.inflight), s.dropped,
                           self._wills.status(s), self._client(conn, s) if conn is not None else None)

    def will(self, client_id: str) -> WillStatus:
        return self._wills.status(self._sessions.get(client_id))

    def pending_wills(self) -> tuple[list[tuple[str, WillStatus]], int]:
        """(client id, status) of every pending will, and how many wills are armed."""
        pending, armed = [], 0
        for s in self._sessions.values():
            status = self._wills.status(s)
            if status.phase is WillPhase.PENDING:
                pending.append((s.client_id, status))
            elif status.phase is WillPhase.ARMED:
                armed += 1
        return pending, armed

    def known(self, client_id: str) -> bool:
        """Whether the broker has a session or a will timeline for ``client_id``."""
        return client_id in self._sessions or client_id in self._timeline

    def client_ids(self, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` client ids the broker knows (connected first, then the other sessions, then
        those with only a will timeline, latest first), and how many it knows in all."""
        sessions = self._sessions
        out = [cid for cid, s in sessions.items() if s.conn is not None][:limit]
        if len(out) < limit:
            out.extend([cid for cid, s in sessions.items() if s.conn is None][:limit - len(out)])
        extra = 0
        for cid in self._timeline.clients():
            if cid not in sessions:
                extra += 1
                if len(out) < limit:
                    out.append(cid)
        return out, len(sessions) + extra

    def timeline(self, client_id: str) -> list[WillEvent]:
        return self._timeline.events(client_id)

    def retained(self, topic_filter: str, now: float) -> list[RetainedInfo]:
        """The retained messages matching ``topic_filter`` (not expired), by topic."""
        out = [RetainedInfo(m.topic, m.payload, m.qos, m.expiry_at, m.origin, MappingProxyType(dict(m.properties)))
               for m in self._retained.find(topic_filter) if not m.expired(now)]
        out.sort(key=lambda r: r.topic)
        return out

    def client_id_of(self, conn_id: int) -> str | None:
        conn = self._conns.get(conn_id)
        return conn.client_id or None if conn is not None else None

    def peer_of(self, conn_id: int) -> str | None:
        conn = self._conns.get(conn_id)
        return conn.peer if conn is not None else None

    def totals(self) -> Totals:
        held = pending = queued = inflight = 0
        for s in self._sessions.values():
            state = s.will
            if state is not None:
                if state.fire_at is None:
                    held += 1
                else:
                    pending += 1
            queued += s.queued_count()
            inflight += len(s.inflight)
        connections = sum(1 for c in self._conns.values() if c.state == CONNECTED)
        return Totals(connections, len(self._sessions), held, pending, queued, inflight)
