"""MQTT 5.0 rules about the bytes on the wire, checked on a real socket with a hand-written client.

The core tests check the packets the broker decides to send; these read what the edge actually
writes: the CONNACK flags byte, Property Lengths, Variable Byte Integers, packet sizes, and the
DISCONNECT reason code before the close.
"""

from __future__ import annotations

from functools import partial

import pytest

from lastwill.codec.primitives import encode_varint
from tests.rawbytes import connect_packet, packet, props, read_vbi, s, u16
from tests.rawclient import RawSocket

# this file's CONNECTs: MQTT 5.0, keep-alive 0
connect = partial(connect_packet, version=5, keep_alive=0)


def session_expiry(seconds: int) -> bytes:
    return b"\x11" + seconds.to_bytes(4, "big")


def assert_minimal(encoded: bytes) -> None:
    value, _ = read_vbi(encoded, 0)
    assert encoded == encode_varint(value), f"{encoded.hex()} is not the minimal encoding of {value}"


@pytest.fixture
def wires(broker):
    made = []

    def make() -> RawSocket:
        w = RawSocket(broker.port)
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def test_wire_connack_flags_reserved_bits_zero_v5_MQTT_3_2_2_1(wires):
    a = wires()
    a.send(connect("wire-a", flags=0x00, properties=props(session_expiry(60))))
    ack = a.read()
    assert ack[0] == 0x20 and ack[2] == 0x00 and ack[3] == 0x00  # no session yet: flags 0
    a.send(b"\xe0\x00")
    assert a.closed_by_server()
    b = wires()
    b.send(connect("wire-a", flags=0x00))
    ack = b.read()
    assert ack[0] == 0x20 and ack[2] == 0x01 and ack[3] == 0x00  # Session Present only; bits 7-1 zero


def test_wire_property_length_zero_when_no_properties_v5_MQTT_2_2_2_1(wires):
    c = wires()
    c.send(connect("wire-c"))
    assert c.read()[0] == 0x20
    c.send(packet(0x82, u16(10) + b"\x00" + s("t") + b"\x01"))
    assert c.read() == b"\x90\x04\x00\x0a\x00\x01"  # Property Length 0, then the Reason Code
    c.send(packet(0xA2, u16(11) + b"\x00" + s("none")))
    assert c.read() == b"\xb0\x04\x00\x0b\x00\x11"
    c.send(packet(0x32, s("t") + u16(5) + b"\x00" + b"hi"))  # QoS 1 to itself
    got = sorted([c.read(), c.read()])
    assert got[0] == b"\x32\x08" + s("t") + got[0][5:7] + b"\x00" + b"hi"  # the PUBLISH, no properties
    assert got[1] == b"\x40\x02\x00\x05"  # PUBACK: the short form, allowed without properties


@pytest.mark.parametrize("payload_size", [118, 119, 120, 16_370, 16_380])
def test_wire_variable_byte_integers_minimal_v5_MQTT_1_5_5_1(wires, payload_size):
    c = wires()
    c.send(connect("wire-v"))
    assert c.read()[0] == 0x20
    c.send(packet(0x82, u16(1) + props(b"\x0b" + encode_varint(200)) + s("t") + b"\x01"))
    assert c.read()[0] == 0x90
    c.send(packet(0x30, s("t") + b"\x00" + b"z" * payload_size))
    m = c.read()
    length, rl = read_vbi(m, 1)
    assert_minimal(rl)
    assert len(m) == 1 + len(rl) + length
    off = 1 + len(rl) + 3  # topic "t"; QoS 0, so no packet identifier
    plen, pl = read_vbi(m, off)
    assert_minimal(pl)
    assert m[off + len(pl)] == 0x0B
    sub_id, enc = read_vbi(m, off + len(pl) + 1)
    assert sub_id == 200 and enc == b"\xc8\x01"
    assert m[off + len(pl) + plen:] == b"z" * payload_size


def test_wire_ill_formed_utf8_gets_disconnect_0x81_then_close_v5_MQTT_1_5_4_1(wires):
    c = wires()
    c.send(connect("wire-u"))
    assert c.read()[0] == 0x20
    c.send(packet(0x32, s(b"a\xed\xa0\x80") + u16(1) + b"\x00" + b"x"))
    d = c.read()
    assert d[0] == 0xE0 and d[2] == 0x81  # DISCONNECT, Malformed Packet
    assert c.closed_by_server()


def test_wire_never_beyond_client_maximum_packet_size_v5_MQTT_3_1_2_24_MQTT_3_2_2_19(wires):
    c = wires()
    limit = 12
    c.send(connect("wire-m", properties=props(b"\x27" + limit.to_bytes(4, "big"), b"\x15" + s("SCRAM-SHA-1"))))
    ack = c.read()
    assert ack[0] == 0x20 and ack[3] == 0x8C and len(ack) <= limit
    assert c.closed_by_server()
    d = wires()
    limit = 60
    d.send(connect("wire-n", properties=props(b"\x27" + limit.to_bytes(4, "big"))))
    ack = d.read()
    assert ack[3] == 0 and len(ack) <= limit
    d.send(packet(0x82, u16(1) + b"\x00" + s("t") + b"\x01"))
    assert d.read()[0] == 0x90
    for n in (10, 100, 40):
        d.send(packet(0x30, s("t") + b"\x00" + b"p" * n))
    got = [d.read(), d.read()]
    assert [len(m) for m in got] == [2 + 3 + 1 + 10, 2 + 3 + 1 + 40]  # the 100-byte one is not sent
    d.send(b"\x62\x02\x00\x07")  # PUBREL for an unknown id: PUBCOMP 0x92
    comp = d.read()
    assert comp[0] == 0x70 and len(comp) <= limit
    d.send(b"\x41\x02\x00\x01")  # PUBACK with a reserved flag set: DISCONNECT 0x81, small enough
    disc = d.read()
    assert disc[0] == 0xE0 and disc[2] == 0x81 and len(disc) <= limit
    assert d.closed_by_server()
