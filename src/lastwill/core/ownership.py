"""Session ownership: which sessions this broker holds, their expiry, and their end.

``SessionOwnership`` is the seam the CONNECT handler and the connection rules use; ``LocalSessions``
is the one-process implementation (a dict by client id). A cluster adds one in which a client id is
owned by one node at a time and taken over across nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..logs import fast_logger
from .causes import ConnectionEnded
from .limits import Limits
from .persistence import Recorder
from .routing import Router
from .sessions import NEVER, Session
from .timers import TimerKind, TimerQueue
from .will import WillKeeper

log = fast_logger("lastwill")

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_SESSION = TimerKind.SESSION.value


class SessionOwnership(Protocol):
    # the sessions kept for clients that are not connected, the one disconnected longest ago first
    offline: dict[str, None]

    def get(self, client_id: str) -> Session | None: ...

    def __len__(self) -> int: ...

    def end_oldest_offline(self, now: float, limit: str) -> bool:
        """End the offline session disconnected longest ago to make room. False if there is none."""

    def create(self, client_id: str) -> Session:
        """A new, empty session for ``client_id``, owned here from now on."""

    def resumed(self, session: Session) -> None:
        """A new connection took the session up: it no longer expires."""

    def disconnected(self, session: Session, now: float, ended: ConnectionEnded | None = None) -> None:
        """Its connection ended (``ended``: how): it expires after its Session Expiry Interval (ended now
        if 0)."""

    def end(self, session: Session, now: float, why: str, rule: str | None) -> None:
        """The session ends: its pending will is published, its subscriptions and messages go."""


class LocalSessions:
    __slots__ = ("by_id", "router", "wills", "timers", "recorder", "get", "changes", "limits", "offline",
                 "expire_oldest")

    def __init__(self, by_id: dict[str, Session], router: Router, wills: WillKeeper, timers: TimerQueue,
                 recorder: Recorder, limits: Limits, expire_oldest: bool = False) -> None:
        self.by_id = by_id  # (the router reads it too: subscribers' sessions)
        self.router = router
        self.wills = wills
        self.timers = timers
        self.recorder = recorder
        self.limits = limits  # the queues' global account; max_offline_sessions
        # the sessions kept for clients that are not connected, the one disconnected longest ago first
        self.offline: dict[str, None] = {}
        # offline_session_overflow = "expire_oldest": beyond max_offline_sessions the oldest ends
        self.expire_oldest = expire_oldest
        self.get = by_id.get  # client id -> its session, or None (SessionOwnership.get)
        self.changes = None  # core/changes.py ChangeFeed: told of ended sessions while someone watches
        timers.register(TimerKind.SESSION, self._expired)

    def __iter__(self) -> Iterator[Session]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def create(self, client_id: str) -> Session:
        session = self.by_id[client_id] = Session(client_id)
        return session

    def adopt(self, session: Session) -> None:
        """A session restored from the store (start-up)."""
        self.by_id[session.client_id] = session

    def restored(self) -> None:
        """Start-up is over: the offline sessions in the order they were disconnected."""
        gone = sorted((s for s in self.by_id.values() if s.conn is None),
                      key=lambda s: s.disconnected_at if s.disconnected_at is not None else float("-inf"))
        self.offline = dict.fromkeys(s.client_id for s in gone)

    def resumed(self, session: Session) -> None:
        self.timers.cancel((_SESSION, session.client_id))
        self.offline.pop(session.client_id, None)

    def disconnected(self, session: Session, now: float, ended: ConnectionEnded | None = None) -> None:
        if session.expiry_interval == 0:
            self.end(session, now, "session expired at disconnect (Session Expiry Interval 0)", "MQTT-3.1.2-23")
            return
        if session.expiry_interval != NEVER:
            self.expire_at(session, now + session.expiry_interval)
        self.offline[session.client_id] = None
        if self.expire_oldest and len(self.offline) > self.limits.bounds.offline_sessions:
            self.end_oldest_offline(now, "max_offline_sessions")

    def end_oldest_offline(self, now: float, limit: str) -> bool:
        """offline_session_overflow = "expire_oldest": the offline session disconnected longest ago ends
        now, as if it had expired (its pending will is published first). False if there is none."""
        client_id = next(iter(self.offline), None)
        session = self.by_id.get(client_id) if client_id is not None else None
        if session is None:
            return False
        self.limits.refused(limit, now, "client_id=%s: the offline session disconnected longest ago ends to make "
                            "room (%s, offline_session_overflow = expire_oldest)", client_id, limit)
        self.end(session, now, f"session ended early to make room: {limit} reached and offline_session_overflow "
                               f"is expire_oldest (this one was disconnected longest ago)", None)
        return True

    def expire_at(self, session: Session, deadline: float) -> None:
        self.timers.schedule((_SESSION, session.client_id), deadline)

    def _expired(self, client_id: str, now: float) -> None:
        session = self.by_id.get(client_id)
        if session is None or session.conn is not None:
            return
        self.end(session, now, "session expired", "MQTT-3.1.2-23")  # [MQTT-3.1.2-23]

    def end(self, session: Session, now: float, why: str, rule: str | None) -> None:
        # the session's end publishes a pending will first [MQTT-3.1.2-8]
        self.wills.session_ending(session, now, why, rule)
        self.offline.pop(session.client_id, None)
        self.timers.cancel((_SESSION, session.client_id))
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session.client_id, topic_filter)
        session.clear_subscriptions()
        if session.queue or session.inflight or session.backlog is not None:
            log.info("session client_id=%s ended with %d queued and %d in-flight message(s) discarded",
                     session.client_id, session.queued_count(), len(session.inflight))
        if self.by_id.get(session.client_id) is session:
            self.limits.session_gone(session)  # what its queue held leaves the global account
            del self.by_id[session.client_id]
            self.recorder.session_deleted(session.client_id, session)
        changes = self.changes
        if changes is not None and changes.changed is not None:  # a dashboard watches
            changes.changed.setdefault(session.client_id, None)
