"""One connection on a TLS listener (tls_listen, wss_listen): the TLS layer between the TCP transport
and the listener's protocol (``MqttProtocol``, ``WebSocketProtocol``), on an ``ssl.SSLObject`` over
memory BIOs.

Why not ``loop.start_tls``: when a handshake fails, asyncio's TLS layer and uvloop's close the socket
without sending what OpenSSL wrote for the peer, the fatal alert (CPython gh-98078). A client refused
for its certificate then sees a plain end of file and cannot tell its user why. Here every byte
OpenSSL writes is sent: on a refusal the alert (RFC 8446 6.2: certificate_required, or
handshake_failure in TLS 1.2, for no certificate; certificate_expired; unknown_ca; protocol_version
...), then the sending side is shut (FIN) and the connection closed when the client closes its side,
or after CLOSE_LINGER seconds. The refusal is logged with the peer and the reason, as before.

After the handshake, ``TlsTransport`` is what the listener's protocol sees: an asyncio Transport
whose writes are encrypted at once (so the TCP transport's write buffer and flow control are the
TLS connection's), whose reads fill the protocol's buffer (``BufferedProtocol``) with as much
plaintext as is there, and whose ``close`` sends close_notify before the half-close.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from enum import Enum
from typing import Protocol

from ..config import Config
from .tls import HINTS

log = logging.getLogger("lastwill")

# Seconds a connection stays half-closed after the server's last bytes (an alert, close_notify), so
# that the client reads them before the socket closes (a close with unread input would reset it)
CLOSE_LINGER = 2.0



class TlsState(Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"  # our close_notify or an alert sent; waiting for the client to close
    CLOSED = "closed"


HANDSHAKE, OPEN, CLOSING, CLOSED = TlsState.HANDSHAKE, TlsState.OPEN, TlsState.CLOSING, TlsState.CLOSED


class TlsHost(Protocol):
    """What a TLS connection needs of the server."""

    config: Config
    loop: asyncio.AbstractEventLoop
    handshakes: set  # the TlsAcceptors whose handshake is under way (cancel() ends one)

    def admit_pending(self, peer: str) -> bool:
        """A TLS handshake or a WebSocket upgrade may start (they count toward max_connections); False:
        refused and counted, the caller closes the connection."""

    def handshake_deadline(self) -> tuple[float, str]:
        """(seconds, the setting) a handshake or an upgrade may take: handshake_timeout, or
        connect_timeout if shorter."""

    def handshake_timed_out(self) -> None:
        """Count one (the handshake_timeout limit)."""


def _why(e: BaseException) -> str:
    """The reason of a failed handshake as the log line gives it: OpenSSL's reason, the verification
    message, and what it usually means."""
    reason = getattr(e, "reason", None)
    why = reason or getattr(e, "strerror", None) or str(e) or type(e).__name__
    if getattr(e, "verify_message", None):
        why += f" ({e.verify_message})"
    if reason in HINTS:
        why += f": {HINTS[reason]}"
    return why


class TlsAcceptor(asyncio.Protocol):
    """The protocol of the TCP transport of one TLS connection, for its whole life: the handshake
    (bounded by handshake_timeout; ``server.handshakes`` holds the ones under way, counted toward
    max_connections), then the records
    of the listener's protocol, made by ``make_protocol`` once the handshake is done (the core never
    hears of a connection whose handshake failed)."""

    __slots__ = ("server", "make_protocol", "raw", "sslobj", "incoming", "outgoing", "app", "transport",
                 "state", "timer", "peer", "error", "reading_paused", "context")

    def __init__(self, server: TlsHost, make_protocol, context):
        self.server = server
        self.make_protocol = make_protocol
        # the listener's SSLContext as it is now: a reload (SIGHUP) changes what new handshakes get
        self.context = context
        self.raw: asyncio.Transport | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.app: asyncio.BufferedProtocol | None = None
        self.transport: TlsTransport | None = None
        self.state = HANDSHAKE
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""
        self.error: Exception | None = None  # a TLS error that ended an open connection (for its cause)
        self.reading_paused = False  # by the listener's protocol (TlsTransport.pause_reading)

    # ---- the TCP transport's callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        server = self.server
        if not server.admit_pending(self.peer):  # max_connections counts handshakes under way
            self.state = CLOSING
            transport.abort()
            return
        self.sslobj = self.context().wrap_bio(self.incoming, self.outgoing, server_side=True)
        server.handshakes.add(self)
        self.timer = server.loop.call_later(server.handshake_deadline()[0], self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == OPEN:
            self.incoming.write(data)
            self._read()
        elif state == HANDSHAKE:
            self.incoming.write(data)
            self._handshake()
        # CLOSING: what the client still sends after our last bytes is not read any more

    def eof_received(self) -> bool:
        if self.state == HANDSHAKE:
            self._refused("the client closed the connection during the handshake")
        elif self.state == OPEN:
            # the TCP connection ended without close_notify: the end of the stream all the same
            self._peer_closed()
        return False  # our side closes too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.server.handshakes.discard(self)
        self.state = CLOSED
        app, self.app = self.app, None
        if app is not None:
            app.connection_lost(self.error or exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def cancel(self) -> None:
        """The broker is stopping (``Server.stop``): a handshake under way ends here."""
        if self.state == HANDSHAKE:
            self.state = CLOSING
            self.raw.abort()

    # ---- the handshake ---------------------------------------------------------------------------------
    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as e:
            self._flush()  # the fatal alert OpenSSL wrote for the client (RFC 8446 6.2)
            self._refused(_why(e))
            return
        except Exception as e:  # never let a handshake take the listener down
            log.warning("TLS handshake with %s failed, connection closed: %s: %s", self.peer, type(e).__name__, e)
            self._stop_timer()
            self.server.handshakes.discard(self)
            self.state = CLOSING
            self.raw.abort()
            return
        self._flush()  # the server's last handshake messages (TLS 1.2: Finished; 1.3: session tickets)
        self._stop_timer()
        self.server.handshakes.discard(self)
        self.state = OPEN
        self.transport = TlsTransport(self)
        self.app = self.make_protocol()
        self.app.connection_made(self.transport)
        if self.state == OPEN:
            self._read()  # what came with the client's last handshake flight (a CONNECT, say)

    def _refused(self, why: str) -> None:
        log.info("TLS handshake with %s failed, connection closed: %s", self.peer, why)
        self._stop_timer()
        self.server.handshakes.discard(self)
        self._shut()

    def _handshake_timeout(self) -> None:
        self.timer = None
        if self.state == HANDSHAKE:
            seconds, setting = self.server.handshake_deadline()
            log.info("TLS handshake with %s failed, connection closed: no TLS handshake within %ss (%s)",
                     self.peer, seconds, setting)
            self.server.handshake_timed_out()
            self.server.handshakes.discard(self)
            self.state = CLOSING
            self.raw.abort()

    # ---- records ---------------------------------------------------------------------------------------
    def _read(self) -> None:
        """Hand the plaintext there is to the listener's protocol, a buffer at a time, while it reads."""
        app = self.app
        sslobj = self.sslobj
        while self.state == OPEN and not self.reading_paused:
            buf = app.get_buffer(-1)
            size = len(buf)
            got = 0
            try:
                while got < size:
                    n = sslobj.read(size - got, buf[got:])
                    if not n:
                        break
                    got += n
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the client's close_notify
                if got:
                    app.buffer_updated(got)
                self._flush()
                if self.state == OPEN:
                    self._peer_closed()
                return
            except ssl.SSLError as e:  # a bad record: OpenSSL wrote an alert (bad_record_mac, ...)
                if got:
                    app.buffer_updated(got)
                self._flush()
                self._failed(e)
                return
            if got:
                app.buffer_updated(got)
            if got < size:
                break
        self._flush()  # what reading made OpenSSL write (a KeyUpdate answer, an alert)

    def _peer_closed(self) -> None:
        """The stream from the client ended (close_notify, or TCP EOF): its protocol decides."""
        keep_open = self.app.eof_received()
        if not keep_open and self.state == OPEN:
            self.transport.close()

    def _failed(self, e: ssl.SSLError) -> None:
        if self.state != OPEN:
            return
        log.info("TLS connection from %s closed: %s", self.peer, _why(e))
        self.error = e
        self._shut()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.state != CLOSING and not self.raw.is_closing():  # (CLOSING: FIN sent, or about to be)
            self.raw.write(data)

    def _shut(self) -> None:
        """After the last bytes (an alert, close_notify): FIN once they are sent, then close when the
        client closes its side, or after CLOSE_LINGER."""
        self.state = CLOSING
        raw = self.raw
        if raw.is_closing():
            return
        if raw.can_write_eof():
            raw.write_eof()
            self._stop_timer()
            self.timer = self.server.loop.call_later(CLOSE_LINGER, raw.abort)
        else:  # pragma: no cover - TCP transports can
            raw.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TlsTransport(asyncio.Transport):
    """What the listener's protocol (and ``Server._flush``) sees of an established TLS connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: TlsAcceptor):
        super().__init__()
        self.conn = conn

    def write(self, data) -> None:
        conn = self.conn
        if conn.state != OPEN or not data:
            return
        try:
            conn.sslobj.write(data)
        except ssl.SSLError as e:
            conn._failed(e)
            return
        conn._flush()

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close: close() sends close_notify

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def is_closing(self) -> bool:
        return self.conn.state != OPEN

    def close(self) -> None:
        """close_notify after what was written, then the half-close (``TlsAcceptor._shut``)."""
        conn = self.conn
        if conn.state != OPEN:
            return
        try:
            conn.sslobj.unwrap()  # writes close_notify; the client's answer is not waited for
        except ssl.SSLError:  # (SSLWantReadError: its close_notify has not come)
            pass
        conn._flush()
        conn._shut()

    def abort(self) -> None:
        conn = self.conn
        if conn.state == CLOSED:
            return
        conn.state = CLOSING
        conn.raw.abort()

    def pause_reading(self) -> None:
        conn = self.conn
        conn.reading_paused = True
        if not conn.raw.is_closing():
            conn.raw.pause_reading()

    def resume_reading(self) -> None:
        conn = self.conn
        if not conn.reading_paused:
            return
        conn.reading_paused = False
        if conn.state == OPEN:
            conn.raw.resume_reading()
            if conn.sslobj.pending() or conn.incoming.pending:  # read before the pause, not handed on yet
                conn.server.loop.call_soon(conn._read)

    def is_reading(self) -> bool:
        return not self.conn.reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.conn.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.conn.raw.get_write_buffer_limits()

    def get_write_buffer_size(self) -> int:
        return self.conn.raw.get_write_buffer_size()

    def get_extra_info(self, name: str, default=None):
        conn = self.conn
        if name == "peercert":
            return conn.sslobj.getpeercert()
        if name == "ssl_object":
            return conn.sslobj
        if name == "cipher":
            return conn.sslobj.cipher()
        if name == "compression":
            return conn.sslobj.compression()
        if name == "sslcontext":
            return conn.sslobj.context
        return conn.raw.get_extra_info(name, default)

    def set_protocol(self, protocol) -> None:
        self.conn.app = protocol

    def get_protocol(self):
        return self.conn.app
