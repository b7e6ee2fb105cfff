"""One TCP connection: an asyncio (buffered) protocol that feeds bytes to the core. No coroutine per read."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .tls import cert_username

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

log = logging.getLogger("lastwill")

WRITE_HIGH_WATER = 1024 * 1024
# A connection that keeps sending while this much (plus max_packet_size) waits unsent to it is closed:
# a slow subscriber's deliveries stop at WRITE_HIGH_WATER (the core queues them), so only a client
# that does not read the answers to its own requests (PINGRESP, PUBACK, ...) gets here; without this
# the broker would buffer them without bound (docs/security.md "Slow subscribers")
UNSENT_HARD_LIMIT = 8 * WRITE_HIGH_WATER
# At most this much is read from one socket per callback, into one buffer shared by every
# connection (copied out at once): under a flood, each event-loop turn does a bounded amount of
# work per publisher, so accepts, CONNACKs, writes and timers are not starved.
READ_CHUNK = 32 * 1024
_read_buffer = memoryview(bytearray(READ_CHUNK))


class MqttProtocol(asyncio.BufferedProtocol):
    __slots__ = ("server", "transport", "conn_id", "tls")

    def __init__(self, server: Server, tls: bool = False):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.tls = tls  # a tls_listen connection: called once the TLS handshake is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        cert_user = None
        if self.tls:
            accepted, cert_user = cert_username(self.server, transport)
            if not accepted:  # a certificate without a CN when tls_cert_cn_as_username is on
                transport.abort()
                return
        # a subscriber may have this much unsent before it counts as slow (see core: Conn.paused)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        server = self.server
        self.conn_id = server.core.new_conn_id()
        server.transports[self.conn_id] = transport
        peer = transport.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        local = transport.get_extra_info("sockname")
        sockport = local[1] if isinstance(local, tuple) and len(local) >= 2 else 0
        server.run(server.core.open(self.conn_id, server.loop.time(), peer_text, sockport, cert_username=cert_user))

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_read_buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        server = self.server
        unsent = self.transport.get_write_buffer_size()
        if unsent > UNSENT_HARD_LIMIT and unsent > UNSENT_HARD_LIMIT + server.config.max_packet_size:
            not_reading(server, self.conn_id, self.transport, unsent)
            return
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
        self.server.core.writing_paused(self.conn_id)

    def resume_writing(self) -> None:
        server = self.server
        server.run(server.core.writing_resumed(self.conn_id, server.loop.time()))


def not_reading(server: Server, conn_id: int, transport, unsent: int) -> None:
    """Close a connection that keeps sending but does not read: its unsent bytes are dropped (abort)."""
    conn = server.core.conns.get(conn_id)
    who = conn.client_id if conn is not None and conn.client_id else f"<conn {conn_id}>"
    hits = server.core.limit_hits
    hits["unsent_bytes"] = hits.get("unsent_bytes", 0) + 1
    log.warning("client_id=%s from %s closed: it keeps sending but does not read (%d bytes unsent to it)",
                who, conn.peer if conn is not None else "?", unsent)
    server.lost_causes[conn_id] = f"not reading its socket ({unsent} bytes unsent)"
    transport.abort()
