"""One TCP connection: an asyncio (buffered) protocol that feeds bytes to the core through its host
(edge/host.py). No coroutine per read; reads go through the server's ReadBudget (edge/budget.py)."""

from __future__ import annotations

import asyncio

from ..core.causes import PEER_CLOSED
from .budget import READ_BUFFER, READ_CHUNK
from .host import ConnectionHost
from .tls import cert_username

WRITE_HIGH_WATER = 1024 * 1024
# A connection that keeps sending while this much (plus max_packet_size) waits unsent to it is closed:
# a slow subscriber's deliveries stop at WRITE_HIGH_WATER (the core queues them), so only a client
# that does not read the answers to its own requests (PINGRESP, PUBACK, ...) gets here; without this
# the broker would buffer them without bound (docs/security.md "Slow subscribers")
UNSENT_HARD_LIMIT = 8 * WRITE_HIGH_WATER


def peer_and_port(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """The peer as "host:port" and the local port a connection came in on."""
    peer = transport.get_extra_info("peername")
    peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
    local = transport.get_extra_info("sockname")
    return peer_text, local[1] if isinstance(local, tuple) and len(local) >= 2 else 0


class BudgetedProtocol(asyncio.BufferedProtocol):
    """What MqttProtocol and WebSocketProtocol share: reads into the shared buffer, handed to the
    host's ReadBudget."""

    __slots__ = ("throttled", "deferred", "view")

    def __init__(self) -> None:
        self.throttled = False  # paused by ReadBudget, queued for its next turn
        self.deferred: list[bytes] | None = None  # read, not yet processed (ReadBudget)
        self.view = READ_BUFFER  # what the next read may fill (ReadBudget sizes it)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        view = self.view
        self.host.reads.received(self, bytes(view[:nbytes]), nbytes == len(view))

    def resize(self, size: int) -> None:
        self.view = READ_BUFFER if size >= READ_CHUNK else READ_BUFFER[:size]


class MqttProtocol(BudgetedProtocol):
    __slots__ = ("host", "transport", "conn_id", "tls")

    def __init__(self, host: ConnectionHost, tls: bool = False):
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.tls = tls  # a tls_listen connection: called once the TLS handshake is done
        super().__init__()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        cert_user = None
        if self.tls:
            accepted, cert_user = cert_username(self.host.config, transport)
            if not accepted:  # a certificate without a CN when tls_cert_cn_as_username is on
                transport.abort()
                return
        # a subscriber may have this much unsent before it counts as slow (see core: Conn.paused)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        peer, sockport = peer_and_port(transport)
        self.conn_id = self.host.open_connection(transport, peer, sockport, cert_user)

    def data_received(self, data: bytes) -> None:
        host = self.host
        if not host.reading_enough(self.conn_id, self.transport):
            return
        if not host.feed(self.conn_id, data):  # a bug in the core must cost one connection, never the broker
            self.transport.close()

    def eof_received(self) -> bool:
        # a half-close ends the MQTT connection: returning False closes our side too, and
        # connection_lost follows with the cause recorded here
        self.host.ending(self.conn_id, PEER_CLOSED)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deferred is not None:  # what it sent before it went (a DISCONNECT, say) counts first
            self.host.reads.process_deferred(self)
        self.host.lost(self.conn_id, exc)

    def pause_writing(self) -> None:
        self.host.writing_paused(self.conn_id)

    def resume_writing(self) -> None:
        self.host.writing_resumed(self.conn_id)
