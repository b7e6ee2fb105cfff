"""The close after a last packet (edge/server.py close_after_last_packet), on a fake loop.

When the server ends a connection right after writing to it (a DISCONNECT with its reason code, a
refusing CONNACK), it half-closes: the packet, then write_eof (FIN), what the client still sends is
ignored, and the socket is aborted after CLOSE_LINGER (2 s) unless the client closes first. A close
with nothing written in that turn is a plain close()."""

from __future__ import annotations

from lastwill.codec.packets import Auth, Pingreq, Subscribe, Subscription
from lastwill.edge.server import CLOSE_LINGER

from .fakes import Edge


def test_takeover_disconnect_written_then_half_close_then_abort_after_linger_v5_MQTT_3_14_4_2():
    e = Edge()
    old = e.connected("same", 5)
    new = e.peer("new")
    new.connect("same", 5)
    e.loop.run()
    assert new.kinds() == ["Connack"]
    assert old.kinds() == ["Connack", "Disconnect"] and old.received[-1].reason_code == 0x8E
    assert old.transport.calls == ["write", "write", "write_eof"]  # not close(): no reset over the DISCONNECT
    e.loop.advance(CLOSE_LINGER - 0.01)
    assert old.transport.calls[-1] == "write_eof" and not old.transport.closing
    e.loop.advance(0.02)
    assert old.transport.calls[-1] == "abort" and old.transport.lost


def test_protocol_error_disconnect_then_input_ignored_during_the_linger_v5_MQTT_3_14_4_1():
    e = Edge()
    c = e.connected("c", 5)
    c.packet(Auth(0x18))  # no enhanced authentication in progress: Protocol Error
    e.loop.run()
    assert c.kinds() == ["Connack", "Disconnect"] and c.received[-1].reason_code == 0x82
    written = len(c.transport.written)
    c.packet(Pingreq())
    c.packet(Subscribe(1, [Subscription("t", 0)]))
    e.loop.advance(1.0)
    assert len(c.transport.written) == written  # no PINGRESP, no SUBACK: the connection has ended
    assert c.transport.calls == ["write", "write", "write_eof"]
    e.loop.advance(CLOSE_LINGER)
    assert c.transport.calls[-1] == "abort"


def test_refusing_connack_then_half_close_later_input_not_processed_v311_MQTT_3_1_4_5():
    e = Edge()
    watcher = e.connected("watcher")
    watcher.packet(Subscribe(1, [Subscription("#", 0)]))
    e.loop.run()
    c = e.peer("c")
    c.connect("", 4, clean_start=False)  # a zero-byte client id needs clean session 1 in 3.1.1
    c.send(b"\x30\x07\x00\x01tabcd")  # a PUBLISH right behind the CONNECT
    e.loop.run()
    assert c.kinds() == ["Connack"] and c.received[0].reason_code != 0
    assert c.transport.calls == ["write", "write_eof"]
    c.send(b"\x30\x07\x00\x01tabcd")
    e.loop.advance(CLOSE_LINGER + 0.1)
    assert c.transport.calls == ["write", "write_eof", "abort"]
    assert watcher.publishes() == []


def test_client_closing_its_side_during_the_linger_closes_at_once():
    e = Edge()
    old = e.connected("same", 5)
    e.connected("same", 5)  # takes over: DISCONNECT 0x8E to the old connection, half-closed
    assert old.transport.calls[-1] == "write_eof"
    t0 = e.clock.now
    old.eof()  # the client read the DISCONNECT and closed: eof_received() says close ours too
    assert old.transport.calls[-1] == "close"
    e.loop.run()
    assert old.transport.lost and e.clock.now == t0  # no wait for the linger


def test_close_with_nothing_written_in_that_turn_is_a_plain_close_v311_MQTT_3_1_0_2():
    e = Edge()
    c = e.connected("c", 4)
    c.connect("c", 4)  # a second CONNECT: closed, no packet first
    e.loop.run()
    assert c.transport.calls == ["write", "close"]
    assert not c.transport.eof_written


def test_transport_that_cannot_half_close_is_closed_after_the_packet():
    e = Edge()
    old = e.connected("same", 5)
    old.transport.half_close = False  # asyncio's TLS transport: can_write_eof() is False
    e.connected("same", 5)
    assert old.kinds() == ["Connack", "Disconnect"]
    assert old.transport.calls == ["write", "write", "close"]
