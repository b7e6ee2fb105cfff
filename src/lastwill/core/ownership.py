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
    def get(self, client_id: str) -> Session | None: ...

    def create(self, client_id: str) -> Session:
        """A new, empty session for ``client_id``, owned here from now on."""

    def resumed(self, session: Session) -> None:
        """A new connection took the session up: it no longer expires."""

    def disconnected(self, session: Session, now: float, ended: ConnectionEnded | None = None) -> None:
        """Its connection ended (``ended``: how): it expires after its Session Expiry Interval (ended now
        if 0)."""

    def end(self, session: Session, now: float, why: str, rule: str) -> None:
        """The session ends: its pending will is published, its subscriptions and messages go."""


class LocalSessions:
    __slots__ = ("by_id", "router", "wills", "timers", "recorder", "get", "changes")

    def __init__(self, by_id: dict[str, Session], router: Router, wills: WillKeeper, timers: TimerQueue,
                 recorder: Recorder) -> None:
        self.by_id = by_id  # (the router reads it too: subscribers' sessions)
        self.router = router
        self.wills = wills
        self.timers = timers
        self.recorder = recorder
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

    def resumed(self, session: Session) -> None:
        self.timers.cancel((_SESSION, session.client_id))

    def disconnected(self, session: Session, now: float, ended: ConnectionEnded | None = None) -> None:
        if session.expiry_interval == 0:
            self.end(session, now, "session expired at disconnect (Session Expiry Interval 0)", "MQTT-3.1.2-23")
        elif session.expiry_interval != NEVER:
            self.expire_at(session, now + session.expiry_interval)

    def expire_at(self, session: Session, deadline: float) -> None:
        self.timers.schedule((_SESSION, session.client_id), deadline)

    def _expired(self, client_id: str, now: float) -> None:
        session = self.by_id.get(client_id)
        if session is None or session.conn is not None:
            return
        self.end(session, now, "session expired", "MQTT-3.1.2-23")  # [MQTT-3.1.2-23]

    def end(self, session: Session, now: float, why: str, rule: str) -> None:
        # the session's end publishes a pending will first [MQTT-3.1.2-8]
        self.wills.session_ending(session, now, why, rule)
        self.timers.cancel((_SESSION, session.client_id))
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session.client_id, topic_filter)
        session.clear_subscriptions()
        if session.queue or session.inflight:
            log.info("session client_id=%s ended with %d queued and %d in-flight message(s) discarded",
                     session.client_id, len(session.queue), len(session.inflight))
        if self.by_id.get(session.client_id) is session:
            del self.by_id[session.client_id]
            self.recorder.session_deleted(session.client_id, session)
        changes = self.changes
        if changes is not None and changes.changed is not None:  # a dashboard watches
            changes.changed.setdefault(session.client_id, None)
