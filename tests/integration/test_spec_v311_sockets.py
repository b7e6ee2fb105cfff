"""MQTT 3.1.1 requirements that need a real socket: hand-written 3.1.1 bytes against a real lastwill."""

from __future__ import annotations

from functools import partial

import pytest

from lastwill.codec.packets import Pingreq
from tests.rawbytes import DISCONNECT, PINGREQ, PINGRESP, connect_packet, publish_packet, subscribe_packet
from tests.rawclient import RawSocket

pytestmark = pytest.mark.integration


# this file's CONNECTs: MQTT 3.1.1, keep-alive 0, a will (when given) at QoS 1
connect_v311 = partial(connect_packet, version=4, will_qos=1, keep_alive=0)
CONNACK_OK = b"\x20\x02\x00\x00"


@pytest.fixture
def raw(broker):
    made: list[RawSocket] = []

    def make(client_id: str | None = None, **kw) -> RawSocket:
        c = RawSocket(broker.port)
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
    c.send(subscribe_packet(1, "t/#", 1) + publish_packet("t/big", big) + PINGREQ)
    assert c.read() == b"\x90\x03\x00\x01\x01"
    assert c.read() == publish_packet("t/big", big)  # every byte, in order
    assert c.read() == PINGRESP


def test_plain_client_needs_no_extension_to_interoperate_v311_MQTT_7_0_0_2(raw):
    """Nothing but the packets 3.1.1 defines, with no properties, no $share, no user name: all of it works."""
    sub = raw("plainsub", flags=0x00)
    sub.send(subscribe_packet(10, "plain/+", 1))
    assert sub.read() == b"\x90\x03\x00\x0a\x01"
    pub = raw("plainpub")
    pub.send(publish_packet("plain/x", b"hello", qos=1, packet_id=7))
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
    handlers = broker.broker.core.connections.handlers
    original = handlers[Pingreq]

    def flaky(conn, packet, now):
        if conn.client_id == "victim":
            raise MemoryError("simulated transient error")
        return original(conn, packet, now)

    broker.call(lambda: handlers.__setitem__(Pingreq, flaky))
    watcher = raw("watcher")
    watcher.send(subscribe_packet(1, "dead/#", 1))
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
