"""When the server ends a connection after a last packet (a DISCONNECT with its reason code), the
client can read that packet even while it is still sending: the server half-closes and ignores the
rest instead of resetting the connection, which would throw the reason code away."""

from __future__ import annotations

import socket

import pytest

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import PROTOCOL_5, Connack, Connect, Disconnect
from lastwill.codec.reason_codes import ReasonCode

pytestmark = pytest.mark.integration


def test_disconnect_reason_readable_while_client_still_sends_v5_MQTT_3_14_4_2(broker):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    try:
        hello = encode(Connect(client_id="chatty", protocol_level=PROTOCOL_5), PROTOCOL_5)
        bad = bytes((0x36, 0x05)) + b"\x00\x01ab\x00"  # PUBLISH with QoS 3: malformed [MQTT-3.3.1-4]
        trailing = b"\xc0\x00" * (256 * 1024)  # PINGREQs the client sent before it saw the DISCONNECT
        sock.sendall(hello + bad + trailing)  # a reset would make this fail with EPIPE / ECONNRESET
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    packets = Decoder(server_side=False, protocol_level=PROTOCOL_5).feed(received)
    assert [type(p) for p in packets] == [Connack, Disconnect]
    assert packets[1].reason_code == ReasonCode.MALFORMED_PACKET  # sent, then closed [MQTT-3.14.4-2]: the reason reaches the client
