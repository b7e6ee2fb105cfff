"""One TCP connection: an ``asyncio.Protocol`` that feeds bytes to the core. No coroutine per read."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

log = logging.getLogger("lastwill")


class MqttProtocol(asyncio.Protocol):
    __slots__ = ("server", "transport", "conn_id", "paused")

    def __init__(self, server: Server):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        self.conn_id = server.core.new_conn_id()
        server.transports[self.conn_id] = transport
        peer = transport.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        server.run(server.core.open(self.conn_id, server.loop.time(), peer_text))

    def data_received(self, data: bytes) -> None:
        server = self.server
        try:
            actions = server.core.data_received(self.conn_id, data, server.loop.time())
        except Exception:  # a bug in the core must cost one connection, never the broker
            log.exception("internal error handling data from connection %s; closing it", self.conn_id)
            server.lost_causes[self.conn_id] = "internal error in the broker"
            self.transport.close()
            return
        server.run(actions)

    def eof_received(self) -> bool:
        # a half-close ends the MQTT connection: returning False closes our side too, and
        # connection_lost follows with the cause recorded here
        self.server.lost_causes.setdefault(self.conn_id, "EOF (peer closed its side)")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.transports.pop(self.conn_id, None)
        cause = server.lost_causes.pop(self.conn_id, None)
        if cause is None:
            cause = f"{type(exc).__name__}: {exc}" if exc is not None else "EOF"
        try:
            actions = server.core.connection_lost(self.conn_id, cause, server.loop.time())
        except Exception:
            log.exception("internal error handling the end of connection %s", self.conn_id)
            actions = []
        server.run(actions)

    def pause_writing(self) -> None:
        self.server.paused.add(self.conn_id)

    def resume_writing(self) -> None:
        self.server.paused.discard(self.conn_id)
