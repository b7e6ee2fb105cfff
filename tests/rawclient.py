"""MQTT over a plain blocking socket, every byte under the test's control: the raw clients of the
tests, in one place. ``RawSocket`` sends bytes (tests/rawbytes.py builds them) and reads whole
packets back as bytes; ``RawClient`` speaks through lastwill's own codec (client side): packets in,
decoded packets out.
"""

from __future__ import annotations

import socket
import time

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Disconnect, Puback, Publish, Subscribe, Subscription, Will

from .rawbytes import read_vbi


def open_socket(port: int, *, timeout: float = 5.0, rcvbuf: int | None = None,
                nodelay: bool = False) -> socket.socket:
    """A blocking TCP connection to 127.0.0.1:``port``. ``rcvbuf`` is set before connecting (a small
    receive window from the start); ``nodelay`` sets TCP_NODELAY."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class RawSocket:
    """Hand-written bytes out, whole packets back as bytes."""

    def __init__(self, port: int, *, timeout: float = 5.0):
        self.sock = open_socket(port, timeout=timeout)
        self.buf = b""  # read, not yet returned by read()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read(self) -> bytes:
        """One whole packet, as bytes (fixed header included); fails if the connection closes first."""
        assert self._fill(2), f"connection closed; got {self.buf!r}"
        i = 1
        while True:  # the Remaining Length: a Variable Byte Integer of up to 4 bytes
            assert self._fill(i + 1), f"connection closed; got {self.buf!r}"
            if not self.buf[i] & 0x80:
                break
            i += 1
        length, rl = read_vbi(self.buf, 1)
        total = 1 + len(rl) + length
        assert self._fill(total), f"connection closed; got {self.buf!r}"
        out, self.buf = self.buf[:total], self.buf[total:]
        return out

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF, or a reset) without sending anything more."""
        try:
            return self.sock.recv(1) == b"" and not self.buf
        except ConnectionResetError:
            return not self.buf

    def close(self) -> None:
        close_quietly(self.sock)


class RawClient:
    """MQTT through lastwill's codec: ``send`` takes a packet, ``send_raw`` / ``send_in_pieces`` bytes.
    ``read`` and ``expect`` hand out the packets received; ``read_until`` collects them in ``received``.
    ``level``: decode at that protocol level from the start (for a CONNECT sent as bytes); otherwise
    ``connect`` sets it."""

    def __init__(self, port: int, *, level: int | None = None, timeout: float = 5.0, rcvbuf: int | None = None,
                 nodelay: bool = False):
        self.sock = open_socket(port, timeout=timeout, rcvbuf=rcvbuf, nodelay=nodelay)
        self.level = level or 4
        self.decoder: Decoder | None = None if level is None else Decoder(server_side=False, protocol_level=level)
        self.pending: list = []  # decoded by expect(), not handed out yet
        self.received: list = []  # read_until(): every packet so far, in order
        self.pid = 0

    def send(self, packet) -> None:
        self.sock.sendall(encode(packet, self.level))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_in_pieces(self, data: bytes, size: int, pause: float = 0.0) -> None:
        """``data`` in writes of ``size`` bytes, ``pause`` seconds apart."""
        for i in range(0, len(data), size):
            self.sock.sendall(data[i:i + size])
            if pause:
                time.sleep(pause)

    def connect(self, client_id: str, level: int = 5, *, will: Will | None = None, keep_alive: int = 60,
                clean_start: bool = True, **props):
        self.level = level
        self.decoder = Decoder(server_side=False, protocol_level=level)
        self.send(Connect(client_id=client_id, clean_start=clean_start, keep_alive=keep_alive,
                          protocol_level=level, protocol_name="MQIsdp" if level == 3 else "MQTT",
                          will=will, properties=props))
        return self.expect("Connack")

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        self.pid += 1
        self.send(Subscribe(self.pid, [Subscription(topic_filter, qos)]))
        return self.expect("Suback").reason_codes

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> int | None:
        pid = None
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
        self.send(Publish(topic, payload, qos, False, False, pid))
        return pid

    def disconnect(self) -> None:
        self.send(Disconnect())
        self.sock.close()

    def read(self, timeout: float | None = None) -> list:
        """Packets received within ``timeout`` (at least one read); [] if the broker closed."""
        if self.pending:
            out, self.pending = self.pending, []
            return out
        if timeout is not None:
            self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the broker")
        return self.decoder.feed(data)

    def expect(self, kind: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.pending):
                if type(p).__name__ == kind:
                    del self.pending[i]
                    return p
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed by the broker while waiting for {kind}")
            self.pending += self.decoder.feed(data)
        raise TimeoutError(f"no {kind} within {timeout}s (got {[type(p).__name__ for p in self.pending]})")

    def read_until(self, count: int, timeout: float = 5.0) -> list:
        """Read until ``received`` holds ``count`` packets, the broker closes, or ``timeout``; ``received``."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            self.received.extend(self.decoder.feed(chunk))
        return self.received

    def closed_within(self, timeout: float) -> tuple[bool, bytes]:
        """Read until EOF or ``timeout``: (closed, the bytes received meanwhile)."""
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return True, got
            if not data:
                return True, got
            got += data
        return False, got

    def ack(self, packets: list) -> None:
        for p in packets:
            if isinstance(p, Publish) and p.qos == 1:
                self.send(Puback(p.packet_id))

    def close(self) -> None:
        close_quietly(self.sock)
