"""Helpers for the TLS and WebSocket tests: a paho-mqtt client over any transport (TCP, TLS,
WebSockets, WebSockets over TLS) driven step by step, a raw WebSocket client (wsproto) for the
frame-level rules, and waiting for a broker log line. The MQTT bytes they send by hand come from
tests/rawbytes.py."""

from __future__ import annotations

import logging
import socket
import ssl
import time

import paho.mqtt.client as mqtt
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError


class Client:
    """paho-mqtt, looped by hand (so that it can 'crash': close its socket with no DISCONNECT).

    ``transport``: "tcp" or "websockets"; ``tls``: None or a dict with ``ca`` and optionally ``cert``,
    ``key`` (paths) for ``tls_set``."""

    def __init__(self, port: int, client_id: str, version: int = 5, transport: str = "tcp",
                 tls: dict | None = None, will: tuple | None = None, username: str | None = None,
                 ws_path: str = "/mqtt", host: str = "127.0.0.1", expect_connack: bool = True):
        proto = {4: mqtt.MQTTv311, 5: mqtt.MQTTv5}[version]
        self.client = c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
                                      transport=transport)
        self.connack = None
        self.messages: list = []
        self.subacks: list = []
        c.on_connect = lambda cl, u, flags, rc, props: setattr(self, "connack", rc)
        c.on_message = lambda cl, u, m: self.messages.append(m)
        c.on_subscribe = lambda cl, u, mid, rcs, props: self.subacks.append(rcs)
        if transport == "websockets":
            c.ws_set_options(path=ws_path)
        if tls is not None:
            c.tls_set(ca_certs=str(tls["ca"]), certfile=str(tls["cert"]) if tls.get("cert") else None,
                      keyfile=str(tls["key"]) if tls.get("key") else None)
        if will is not None:
            c.will_set(*will)
        if username is not None:
            c.username_pw_set(username, "irrelevant")
        c.connect(host, port, keepalive=60)
        if expect_connack:
            self.loop_until(lambda: self.connack is not None, "no CONNACK")

    def loop_until(self, cond, what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            self.client.loop(0.02)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        n = len(self.subacks)
        self.client.subscribe(topic, qos)
        self.loop_until(lambda: len(self.subacks) > n, "no SUBACK")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        self.loop_until(info.is_published, "PUBLISH not acknowledged")

    def wait_message(self, timeout: float = 5.0):
        self.loop_until(lambda: self.messages, "no message", timeout)
        return self.messages.pop(0)

    def crash(self) -> None:
        """Close the socket with no DISCONNECT (and, over WebSockets, no Close frame)."""
        self.client.socket().close()

    def disconnect(self) -> None:
        self.client.disconnect()
        for _ in range(5):
            self.client.loop(0.02)


def wait_log(caplog, text: str, timeout: float = 5.0) -> logging.LogRecord:
    """The first broker log record containing ``text`` (the broker logs from its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        assert time.monotonic() < deadline, f"no log line with {text!r}; got: " + "\n".join(
            r.getMessage() for r in caplog.records)
        time.sleep(0.02)


def client_tls_context(certs, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca))
    if cert:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


class RawWebSocket:
    """A WebSocket client on a plain socket, with wsproto: sends exactly the frames a test asks for."""

    def __init__(self, port: int, path: str = "/mqtt", subprotocols=("mqtt",), sock: socket.socket | None = None,
                 host: str = "127.0.0.1"):
        self.sock = sock or socket.create_connection((host, port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list = []
        self.closed = False  # the server closed the TCP connection
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path, subprotocols=list(subprotocols))))
        self.accept: AcceptConnection | None = None
        self.reject: RejectConnection | None = None
        self.reject_body = b""
        deadline = time.monotonic() + 5
        while self.accept is None and self.reject is None and not self.closed:
            assert time.monotonic() < deadline, "no handshake response"
            self._read()
        if self.reject is not None:  # read the body to its end
            while not self.closed and not any(isinstance(e, RejectData) and e.body_finished for e in self.events):
                assert time.monotonic() < deadline, "no end of the rejection"
                self._read()
            self.reject_body = b"".join(e.data for e in self.events if isinstance(e, RejectData))

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
        try:
            self.ws.receive_data(data or None)
        except LocalProtocolError:  # bytes after a Close frame
            return
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accept = event
            elif isinstance(event, RejectConnection):
                self.reject = event
            self.events.append(event)

    def send_frame(self, data: bytes, *, text: bool = False, fin: bool = True) -> None:
        """One data frame (``fin=False``: a fragment; continuation frames follow with the next calls)."""
        event = TextMessage(data=data.decode(), message_finished=fin) if text else BytesMessage(data=data,
                                                                                               message_finished=fin)
        self.sock.sendall(self.ws.send(event))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def received(self) -> bytes:
        """The payload of every binary frame received so far, concatenated."""
        return b"".join(e.data for e in self.events if isinstance(e, BytesMessage))

    def wait_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.received()) < n and not self.closed:
            assert time.monotonic() < deadline, f"expected {n} bytes, got {self.received()!r}"
            self._read()
        return self.received()

    def wait_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            assert time.monotonic() < deadline, "the server did not close the connection"
            self._read()

    def close_frames(self) -> list[CloseConnection]:
        """The Close frames received (not wsproto's own 1006, which stands for "closed without one")."""
        return [e for e in self.events if isinstance(e, CloseConnection) and e.code != 1006]

    def pongs(self) -> list[Pong]:
        return [e for e in self.events if isinstance(e, Pong)]

    def close(self) -> None:
        self.sock.close()
