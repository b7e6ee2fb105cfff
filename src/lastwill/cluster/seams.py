"""The three seams the broker core calls in cluster mode (issue 9 cuts them in the core), as Protocols.

``RedisEngine`` implements all three; single-node mode keeps its in-process implementations. Every call
takes the caller's ``epoch`` (its fencing token) and raises ``Fenced`` when the engine no longer counts
that epoch as live. What the broker calls and when: docs/cluster.md, "The broker side".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..core.topics import SubOptions
from .model import (
    Ack,
    AckResult,
    AuditRecord,
    ConnectResult,
    DisconnectResult,
    DueBatch,
    ExpireResult,
    FetchRequest,
    FireRequest,
    FireResult,
    OutMessage,
    ReapResult,
    Retained,
    RouteChange,
    RouteSnapshot,
    SessionQueue,
    SubscribeResult,
    WillSpec,
)


@runtime_checkable
class SessionOwnership(Protocol):
    """Which node holds a client id, under which generation; takeover; session expiry.

    Arming the will is part of ``connect`` (it must be atomic with taking the session: a will is stored
    with the accepted CONNECT [MQTT-3.1.2-7], and a takeover decides the old will in the same step)."""

    async def connect(self, epoch: int, node_id: str, client_id: str, clean_start: bool, session_expiry: int,
                      will: WillSpec | None, user: str | None = None, user_check: bool = False,
                      recovery_grace_ms: int | None = None) -> ConnectResult: ...

    async def disconnect(self, epoch: int, client_id: str, gen: int, normal: bool,
                         session_expiry: int | None = None, cause: str = "") -> DisconnectResult: ...

    async def expire(self, epoch: int, limit: int = 500) -> ExpireResult: ...


@runtime_checkable
class Router(Protocol):
    """Who subscribes to what (a replica on every node, kept from a versioned change log), and the
    deliveries to sessions on any node (per-session streams, acknowledged)."""

    async def subscribe(self, epoch: int, client_id: str, gen: int,
                        add: Sequence[tuple[str, SubOptions]] = (), remove: Sequence[str] = ()) -> SubscribeResult: ...

    async def snapshot(self) -> RouteSnapshot: ...

    async def changes(self, after: int, count: int = 1000) -> tuple[RouteChange, ...]: ...

    async def publish(self, epoch: int, routever: int, messages: Sequence[OutMessage]) -> tuple[str | None, ...]: ...

    async def fetch(self, epoch: int, requests: Sequence[FetchRequest]) -> tuple[SessionQueue, ...]: ...

    async def ack(self, epoch: int, acks: Sequence[Ack]) -> AckResult: ...

    async def retained(self, topics: Sequence[str] | None = None) -> tuple[Retained, ...]: ...


@runtime_checkable
class WillFiring(Protocol):
    """Defer (``disconnect``), cancel (``disconnect`` normal, ``connect``), reap a dead node's wills, and
    claim + publish + record a due will exactly once (``due`` then ``fire``)."""

    async def reap(self, epoch: int, grace_ms: int | None = None, recovery_grace_ms: int | None = None,
                   batch: int | None = None) -> ReapResult: ...

    async def due(self, epoch: int, limit: int = 100, offset: int = 0) -> DueBatch: ...

    async def fire(self, epoch: int, node_id: str, routever: int,
                   requests: Sequence[FireRequest]) -> tuple[FireResult, ...]: ...

    async def audit(self, after: str = "-", count: int = 1000) -> tuple[AuditRecord, ...]: ...
