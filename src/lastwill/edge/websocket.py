"""MQTT over WebSockets (ws_listen, wss_listen): an asyncio protocol around wsproto (sans-IO).

The HTTP upgrade is answered here; from then on the payload of every binary frame goes to the same
core calls as a TCP connection's bytes (``open``, ``data_received``, ``connection_lost``), and the
server's flush path writes to a ``WebSocketTransport``, which sends each write as one binary frame.
No coroutine per connection; backpressure comes from the TCP (or TLS) transport underneath, as for
``listen``.

Rules: the server selects and returns the subprotocol "mqtt" [MQTT-6.0.0-4] (a client that does not
offer it [MQTT-6.0.0-3] is refused with HTTP 400; "mqttv3.1", which MQTT 3.1 clients offer, is
accepted too, as mosquitto does); a text frame closes the connection [MQTT-6.0.0-1]; frame and
packet boundaries are independent [MQTT-6.0.0-2]. No compression extension is negotiated.
"""

from __future__ import annotations

import asyncio
import http
import logging

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..core.causes import PEER_CLOSED, Cause, lost_because
from .host import ConnectionHost
from .tcp import WRITE_HIGH_WATER, BudgetedProtocol, peer_and_port
from .tls import cert_username

log = logging.getLogger("lastwill")


SUBPROTOCOL = "mqtt"
SUBPROTOCOL_V31 = "mqttv3.1"  # what MQTT 3.1 clients (before the WebSocket section of 3.1.1) offer


class WebSocketTransport:
    """What the server's flush path (``Server._flush``) and ``stop()`` see for a WebSocket connection:
    ``write`` sends one binary frame [MQTT-6.0.0-1]; the rest is the transport underneath."""

    __slots__ = ("proto",)

    def __init__(self, proto: WebSocketProtocol):
        self.proto = proto

    def write(self, data: bytes) -> None:
        proto = self.proto
        if proto.closing:
            return
        try:
            frame = proto.ws.send(BytesMessage(data=data))  # [MQTT-6.0.0-1] binary frames only
        except LocalProtocolError:  # the WebSocket is closing: nothing more can be sent
            return
        proto.transport.write(frame)

    def is_closing(self) -> bool:
        return self.proto.closing or self.proto.transport.is_closing()

    def close(self) -> None:
        self.proto.close(1000)

    def abort(self) -> None:
        self.proto.closing = True
        self.proto.transport.abort()

    def pause_reading(self) -> None:  # e.g. while a password is checked (edge/security.py)
        self.proto.transport.pause_reading()

    def resume_reading(self) -> None:
        self.proto.transport.resume_reading()

    def get_extra_info(self, name: str, default=None):
        return self.proto.transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.proto.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.proto.transport.get_write_buffer_size()


class WebSocketProtocol(BudgetedProtocol):
    """One WebSocket connection. The core knows it (``conn_id`` != 0) once the upgrade is accepted;
    before that, an upgrade that does not complete within connect_timeout is aborted."""

    __slots__ = ("host", "tls", "transport", "ws", "conn_id", "closing", "peer", "sockport",
                 "cert_user", "_timer")

    def __init__(self, host: ConnectionHost, tls: bool = False):
        self.host = host
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.ws = WSConnection(ConnectionType.SERVER)
        self.conn_id = 0
        self.closing = False
        self.peer = ""
        self.sockport = 0
        self.cert_user: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        super().__init__()

    # ---- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        self.peer, self.sockport = peer_and_port(transport)
        if self.tls:
            accepted, self.cert_user = cert_username(self.host.config, transport)
            if not accepted:
                self.closing = True
                transport.abort()
                return
        host = self.host
        if not host.admit_pending(self.peer):  # max_connections counts upgrades under way
            self.closing = True
            transport.abort()
            return
        host.upgrades.add(self)
        self._timer = host.loop.call_later(host.handshake_deadline()[0], self._upgrade_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.conn_id == 0:
            self._handshake(data)
        else:
            self._frames(data)

    def eof_received(self) -> bool:
        if self.conn_id:
            self.host.ending(self.conn_id, PEER_CLOSED)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deferred is not None:  # what it sent before it went counts first (edge/tcp.py ReadBudget)
            self.host.reads.process_deferred(self)
        self.closing = True
        self.host.upgrades.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.conn_id:
            self.host.lost(self.conn_id, exc)

    def pause_writing(self) -> None:
        if self.conn_id:
            self.host.writing_paused(self.conn_id)

    def resume_writing(self) -> None:
        if self.conn_id:
            self.host.writing_resumed(self.conn_id)

    # ---- the HTTP upgrade --------------------------------------------------------------------
    def _handshake(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Request):
                    self._upgrade(event)
                    return
        except (RemoteProtocolError, LocalProtocolError) as e:
            self._refuse(400, f"not a WebSocket upgrade request: {e}")

    def _upgrade(self, request: Request) -> None:
        config = self.host.config
        path = request.target.split("?", 1)[0]
        if path not in (config.ws_path, "/"):
            self._refuse(404, f"no WebSocket endpoint at {path!r}: MQTT is at {config.ws_path!r}")
            return
        offered = request.subprotocols
        if SUBPROTOCOL in offered:
            subprotocol = SUBPROTOCOL  # [MQTT-6.0.0-4] the server selects and returns "mqtt"
        elif SUBPROTOCOL_V31 in offered:
            subprotocol = SUBPROTOCOL_V31
        else:
            # the client must offer "mqtt" [MQTT-6.0.0-3]; the server could select nothing else [MQTT-6.0.0-4]
            self._refuse(400, f"the WebSocket subprotocol 'mqtt' must be offered (Sec-WebSocket-Protocol: mqtt), "
                              f"offered: {', '.join(offered) or 'none'} [MQTT-6.0.0-3]")
            return
        self.transport.write(self.ws.send(AcceptConnection(subprotocol=subprotocol)))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.host.upgrades.discard(self)  # (its place in max_connections is now the core's connection)
        self.conn_id = self.host.open_connection(WebSocketTransport(self), self.peer, self.sockport, self.cert_user)
        log.debug("WebSocket connection %s from %s: path %s, subprotocol %s", self.conn_id, self.peer, path,
                  subprotocol)

    def _refuse(self, status: int, why: str) -> None:
        log.info("WebSocket upgrade from %s refused: %s %s", self.peer, status, why)
        body = (why + "\n").encode("utf-8", "replace")
        phrase = http.HTTPStatus(status).phrase
        self.transport.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii") + body)
        self.closing = True
        self.transport.close()

    def _upgrade_timeout(self) -> None:
        self._timer = None
        if self.conn_id == 0 and not self.closing:
            seconds, setting = self.host.handshake_deadline()
            log.info("WebSocket connection from %s closed: no upgrade request within %ss (%s)",
                     self.peer, seconds, setting)
            self.host.handshake_timed_out()
            self.closing = True
            self.transport.abort()

    # ---- frames ------------------------------------------------------------------------------
    def _frames(self, data: bytes) -> None:
        ws = self.ws
        try:
            ws.receive_data(data)
        except LocalProtocolError:  # data after our Close frame: nothing more is read
            return
        chunks: list[bytes] = []
        for event in ws.events():
            if type(event) is BytesMessage:
                # a binary frame's payload, whole or in part: the core's decoder does not care where
                # frames begin or end [MQTT-6.0.0-2]
                chunks.append(event.data)
                continue
            if chunks:  # what came before this event first, in order
                self._feed(b"".join(chunks))
                chunks = []
            if self.closing:
                return
            if isinstance(event, TextMessage):
                # [MQTT-6.0.0-1] MQTT Control Packets only in binary frames: anything else closes
                self._fail(1003, "protocol error: a WebSocket text frame (MQTT is sent in binary frames)",
                           "MQTT-6.0.0-1")
                return
            if isinstance(event, Ping):
                self.transport.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:  # the peer sent a Close frame
                    self.host.ending(self.conn_id, lost_because(
                        Cause.EOF, f"EOF (WebSocket Close frame from the peer, code {event.code})"))
                    self.transport.write(ws.send(event.response()))
                    self.closing = True
                    self.transport.close()
                else:  # wsproto could not parse a frame (masking, a bad opcode, ...)
                    self._fail(event.code, f"protocol error: bad WebSocket frame: {event.reason}")
                return
        if chunks and not self.closing:
            self._feed(b"".join(chunks))

    def _feed(self, data: bytes) -> None:
        host = self.host
        if not host.reading_enough(self.conn_id, self.transport):  # sends, never reads (tcp.py)
            self.closing = True
            return
        if not host.feed(self.conn_id, data):  # a bug in the core must cost one connection, never the broker
            self.close(1011)

    def _fail(self, code: int, cause: str, rule: str | None = None) -> None:
        """A WebSocket protocol error: Close frame with ``code``; the MQTT connection ends (its will follows)."""
        log.info("connection %s from %s closed: %s%s", self.conn_id, self.peer, cause, f" [{rule}]" if rule else "")
        self.host.ending(self.conn_id, lost_because(Cause.PROTOCOL_ERROR, cause, rule))
        self.close(code)

    def close(self, code: int) -> None:
        """Send a Close frame (when the connection is still open) and close the transport: the server
        closes TCP first (RFC 6455 7.1.1)."""
        if self.closing:
            return
        self.closing = True
        if self.ws.state is ConnectionState.OPEN:
            try:
                self.transport.write(self.ws.send(CloseConnection(code=code)))
            except LocalProtocolError:
                pass
        self.transport.close()
