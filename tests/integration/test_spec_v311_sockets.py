"""MQTT 3.1.1 requirements that need a real socket: hand-written 3.1.1 bytes against a real lastwill."""

from __future__ import annotations

import socket

import pytest

from lastwill.codec.packets import Pingreq
from lastwill.core.broker import BrokerCore
from tests.rawbytes import packet, s, u16

pytestmark = pytest.mark.integration


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_v311(client_id: str, *, flags: int = 0x02, will: tuple[str, bytes] | None = None) -> bytes:
    payload = s(client_id)
    if will is not None:
        flags |= 0x04 | 0x08  # Will Flag, Will QoS 1
        payload += s(will[0]) + s(will[1])
    return packet(0x10, s("MQTT") + bytes((4, flags)) + u16(0) + payload)


def subscribe_v311(packet_id: int, topic_filter: str, qos: int) -> bytes:
    return packet(0x82, u16(packet_id) + s(topic_filter) + bytes((qos,)))


def publish_v311(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None) -> bytes:
    return packet(0x30 | (qos << 1), s(topic) + (u16(packet_id) if qos else b"") + payload)


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_OK = b"\x20\x02\x00\x00"


class Raw:
    """A TCP connection that speaks MQTT 3.1.1 from hand-written bytes, reading whole packets back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

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
        """One whole packet, as bytes (fixed header included)."""
        assert self._fill(2), f"connection closed; got {self.buf!r}"
        i, rl, shift = 1, 0, 0
        while True:
            assert self._fill(i + 1)
            byte = self.buf[i]
            rl |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
        assert self._fill(i + rl)
        out, self.buf = self.buf[: i + rl], self.buf[i + rl:]
        return out

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF) without sending anything more."""
        try:
            return self.sock.recv(1) == b"" and not self.buf
        except ConnectionResetError:
            return not self.buf

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(broker):
    made: list[Raw] = []

    def make(client_id: str | None = None, **kw) -> Raw:
        c = Raw(broker.port)
        made.append(c)
        if client_id is not None:
            c.send(connect_v311(client_id, **kw))
            assert c.read() == CONNACK_OK
        return c
    yield make
    for c in made:
        c.close()


def test_ordered_lossless_byte_stream_over_tcp_v311_MQTT_7_1_1_1(raw):
    c = raw()
    for byte in connect_v311("bytewise"):  # a CONNECT dribbled in one byte at a time
        c.send(bytes((byte,)))
    assert c.read() == CONNACK_OK
    big = bytes(range(256)) * 1024  # 256 KiB: several TCP segments each way
    # three packets in one write: they are answered in the order they were sent
    c.send(subscribe_v311(1, "t/#", 1) + publish_v311("t/big", big) + PINGREQ)
    assert c.read() == b"\x90\x03\x00\x01\x01"
    assert c.read() == publish_v311("t/big", big)  # every byte, in order
    assert c.read() == PINGRESP


def test_plain_client_needs_no_extension_to_interoperate_v311_MQTT_7_0_0_2(raw):
    """Nothing but the packets 3.1.1 defines, with no properties, no $share, no user name: all of it works."""
    sub = raw("plainsub", flags=0x00)
    sub.send(subscribe_v311(10, "plain/+", 1))
    assert sub.read() == b"\x90\x03\x00\x0a\x01"
    pub = raw("plainpub")
    pub.send(publish_v311("plain/x", b"hello", qos=1, packet_id=7))
    assert pub.read() == b"\x40\x02\x00\x07"
    delivered = sub.read()
    assert delivered[0] == 0x32 and delivered.endswith(b"hello")
    packet_id = delivered[2 + 2 + len("plain/x"):][:2]
    sub.send(b"\x40\x02" + packet_id + PINGREQ)
    assert sub.read() == PINGRESP
    sub.send(DISCONNECT)
    assert sub.closed_by_server()
    again = raw()
    again.send(connect_v311("plainsub", flags=0x00))
    assert again.read() == b"\x20\x02\x01\x00"  # the session was kept, as 3.1.1 says


def test_transient_error_closes_only_that_connection_v311_MQTT_4_8_0_2(broker, raw):
    """An error while processing one client's packet (here: simulated memory exhaustion in the PINGREQ
    handler, for that client only) closes that client's connection; the others carry on."""
    core = broker.broker.core
    original = BrokerCore._handlers[Pingreq]

    def flaky(self, conn, packet, now):
        if conn.client_id == "victim":
            raise MemoryError("simulated transient error")
        return original(self, conn, packet, now)

    broker.call(lambda: setattr(core, "_handlers", {**BrokerCore._handlers, Pingreq: flaky}))
    watcher = raw("watcher")
    watcher.send(subscribe_v311(1, "dead/#", 1))
    assert watcher.read() == b"\x90\x03\x00\x01\x01"
    victim = raw("victim", will=("dead/victim", b"gone"))
    other = raw("other")
    victim.send(PINGREQ)
    assert victim.closed_by_server()  # no PINGRESP, just the close
    will = watcher.read()
    assert will[0] & 0xF0 == 0x30 and will.endswith(b"gone")  # closed as a failure: the will goes out
    other.send(PINGREQ)
    assert other.read() == PINGRESP
    watcher.send(PINGREQ)
    assert watcher.read() == PINGRESP  # the watcher's connection is alive too
