"""What a connection's asyncio protocol (tcp.py, websocket.py) may ask of the server: the core's entry
points for one connection, carried out the way the server carries out every action (once per loop
turn, after the group commit). ``Server`` implements it; the protocols see nothing else of it."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..config import Config
from ..core.causes import ConnectionEnded
from .budget import ReadBudget


class ConnectionHost(Protocol):
    config: Config
    reads: ReadBudget
    loop: asyncio.AbstractEventLoop
    upgrades: set  # WebSocket connections whose HTTP upgrade is under way (they count toward max_connections)

    def admit_pending(self, peer: str) -> bool:
        """A TLS handshake or a WebSocket upgrade may start; False: refused and counted (max_connections)."""

    def handshake_deadline(self) -> tuple[float, str]:
        """(seconds, the setting) a handshake or an upgrade may take."""

    def handshake_timed_out(self) -> None: ...

    def open_connection(self, transport, peer: str, sockport: int, cert_username: str | None) -> int:
        """A connection is ready for MQTT (``transport`` is what the server writes to): its id."""

    def feed(self, conn_id: int, data: bytes) -> bool:
        """Bytes read from the connection. False: an internal error; the caller closes the connection."""

    def ending(self, conn_id: int, ended: ConnectionEnded) -> None:
        """How the connection is ending, known before the transport reports it lost (the first one counts)."""

    def lost(self, conn_id: int, exc: BaseException | None) -> None:
        """The transport is gone (``exc`` as asyncio reports it)."""

    def writing_paused(self, conn_id: int) -> None: ...

    def writing_resumed(self, conn_id: int) -> None: ...

    def reading_enough(self, conn_id: int, transport) -> bool:
        """False if the client keeps sending while it does not read what it is sent: then the server
        has closed it (``transport.abort()``), and what it sent is not processed."""
