"""MQTT 5.0 sections 3.14-3.15 and 4: DISCONNECT and AUTH, sessions, the QoS delivery protocols,
message ordering, topic names and filters, shared subscriptions, flow control, enhanced
authentication refused, error handling.

Timers run on the harness's fake clock. Where the order of what the broker does matters (a
DISCONNECT must be the last packet on its connection, a PUBACK must follow the message being
stored), the test records every action the core returns, in order.
"""

from __future__ import annotations

import unicodedata

from lastwill.codec.encoder import encode
from lastwill.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from lastwill.core.actions import Close, Send
from tests.core.harness import Harness, will


def _record(h: Harness) -> list:
    """From now on, every action the core returns to the harness, in order."""
    log: list = []
    dispatch = h.dispatch

    def recording(actions):
        log.extend(actions)
        dispatch(actions)

    h.dispatch = recording
    return log


def _sends(log: list, conn_id: int) -> list:
    return [a.packet for a in log if isinstance(a, Send) and a.conn_id == conn_id]


def _packet(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((first, len(body))) + body


def _utf8(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


# ==== 3.14 DISCONNECT ==============================================================================


def _refusals_before_connack(h: Harness) -> list:
    """Open connections that end before a successful CONNACK, every way the broker knows."""
    clients = []
    c = h.open()  # first packet is not CONNECT
    c.send_bytes(encode(Publish("t", b"x"), 5))
    clients.append(c)
    c = h.open()  # malformed CONNECT (reserved flag set)
    raw = bytearray(encode(Connect(client_id="m", protocol_level=5), 5))
    raw[9] |= 0x01
    c.send_bytes(bytes(raw))
    clients.append(c)
    c = h.open()  # refused CONNECT (authentication method), more packets behind it
    c.send_bytes(encode(Connect(client_id="a", protocol_level=5, properties={"authentication_method": "X"}), 5)
                 + encode(Pingreq(), 5) + encode(Publish("t", b"y", 1, False, False, 1), 5))
    clients.append(c)
    c = h.connect("q", will=will(qos=2), expect=0x9B)  # will QoS above the maximum
    clients.append(c)
    clients.append(h.open())  # silent: the connect timeout closes it
    clients.append(h.open())  # silent until the server shuts down
    return clients


def test_no_disconnect_before_successful_connack_v5_MQTT_3_14_0_1():
    h = Harness(maximum_qos=1, connect_timeout=5)
    log = _record(h)
    clients = _refusals_before_connack(h)
    h.advance(5)
    h.dispatch(h.core.shutdown(h.now))
    for c in clients:
        sent = _sends(log, c.conn_id)
        assert not any(isinstance(p, Disconnect) for p in sent), f"conn {c.conn_id} got {sent}"
        assert all(isinstance(p, Connack) and p.reason_code >= 0x80 for p in sent), sent
        assert c.closed


def test_disconnect_reserved_flags_are_malformed_v5_MQTT_3_14_1_1():
    for flags in (0x1, 0x2, 0x4, 0x8, 0xF):
        h = Harness()
        watcher = h.subscriber("dead/#")
        c = h.connect("dev", will=will())
        c.send_bytes(bytes((0xE0 | flags, 0)))
        (d,) = c.take("Disconnect")
        assert d.reason_code == 0x81 and c.closed
        # not a valid DISCONNECT 0x00: the will is not discarded
        assert [m.topic for m in watcher.messages()] == ["dead/c"]
    h = Harness()
    watcher = h.subscriber("dead/#")
    c = h.connect("dev", will=will())
    c.send_bytes(b"\xe0\x00")
    assert c.closed and c.take("Disconnect") == [] and watcher.messages() == []


def _server_disconnects(h: Harness, **props) -> list:
    """Clients that the server ends with a DISCONNECT, every way it does so."""
    out = []
    old = h.connect("taken", **props)
    h.connect("taken", **props)  # takeover: 0x8E
    out.append(old)
    c = h.connect("bad", **props)  # protocol error: 0x82
    c.send(Auth(0x18))
    out.append(c)
    c = h.connect("alias", **props)  # topic alias above the maximum: 0x94
    c.publish("t", b"x", topic_alias=60000)
    out.append(c)
    c = h.connect("rm", **props)  # more QoS 2 messages than the Receive Maximum: 0x93
    for pid in (1, 2, 3):
        c.send(Publish("t", b"x", 2, False, False, pid))
    out.append(c)
    c = h.connect("big", **props)  # packet too large: 0x95
    c.send_bytes(b"\x30\xff\x7f" + b"\x00" * 10)
    out.append(c)
    ka = h.connect("sleepy", keep_alive=10, **props)  # keep-alive timeout: 0x8D
    h.advance(15)
    out.append(ka)
    out.append(h.connect("last", **props))  # server shutting down: 0x8B
    h.dispatch(h.core.shutdown(h.now))
    return out


def test_server_disconnect_never_carries_session_expiry_v5_MQTT_3_14_2_2():
    h = Harness(receive_maximum=2, topic_alias_maximum=5, max_packet_size=1024)
    clients = _server_disconnects(h, session_expiry_interval=300)
    codes = []
    for c in clients:
        (d,) = c.take("Disconnect")
        codes.append(d.reason_code)
        assert "session_expiry_interval" not in d.properties, d
    assert codes == [0x8E, 0x82, 0x94, 0x93, 0x95, 0x8D, 0x8B]


def test_server_disconnect_properties_never_exceed_client_maximum_packet_size_v5_MQTT_3_14_2_3_MQTT_3_14_2_4():
    limit = 16  # room for the reason code, none for a Reason String
    h = Harness(receive_maximum=2, topic_alias_maximum=5, max_packet_size=1024)
    clients = _server_disconnects(h, maximum_packet_size=limit, request_problem_information=1)
    for c in clients:
        (d,) = c.take("Disconnect")
        size = len(encode(d, 5))
        assert size <= limit, f"DISCONNECT 0x{d.reason_code:02X} of {size} bytes > {limit}: {d.properties}"
    # with room to spare the Reason String is still sent (the limit only drops what does not fit)
    h = Harness()
    c = h.connect("c", maximum_packet_size=1000)
    c.send(Auth(0x18))
    (d,) = c.take("Disconnect")
    assert d.reason_code == 0x82 and d.properties.get("reason_string")


def _assert_disconnect_is_last_then_closed(log: list, conn_id: int) -> None:
    mine = [a for a in log if a.conn_id == conn_id]
    idx = [i for i, a in enumerate(mine) if isinstance(a, Send) and isinstance(a.packet, Disconnect)]
    assert idx, f"no DISCONNECT to connection {conn_id}"
    after = mine[idx[0] + 1:]
    assert not any(isinstance(a, Send) for a in after), f"sent after DISCONNECT: {after}"
    assert any(isinstance(a, Close) for a in after), "the connection was not closed after DISCONNECT"


def test_nothing_sent_after_server_disconnect_and_connection_closed_v5_MQTT_3_14_4_1_MQTT_3_14_4_2():
    h = Harness(receive_maximum=2, topic_alias_maximum=5, max_packet_size=1024)
    log = _record(h)
    # every client subscribes to everything and holds a will: the ends of the others' connections
    # (and their wills) are traffic that must not reach a connection after its DISCONNECT
    clients = _server_disconnects(h, will=will(topic="dead/x"), session_expiry_interval=60)
    for c in clients:
        _assert_disconnect_is_last_then_closed(log, c.conn_id)
        assert h.core.data_received(c.conn_id, encode(Pingreq(), 5), h.now) == []
    # the same with subscriptions: a protocol error inside a chunk that has more packets after it
    h = Harness()
    log = _record(h)
    a = h.connect("a", will=will(topic="t/will"))
    a.subscribe("t/#", qos=1)
    b = h.connect("b")
    b.subscribe("t/#", qos=1)
    a.send_bytes(encode(Publish("t/1", b"ok", 1, False, False, 1), 5) + encode(Auth(0x18), 5)
                 + encode(Pingreq(), 5) + encode(Publish("t/2", b"late", 1, False, False, 2), 5))
    _assert_disconnect_is_last_then_closed(log, a.conn_id)
    assert [p.payload for p in b.messages()] == [b"ok", b"gone"]  # the PUBLISH before, then the will


# ==== 3.15 AUTH =====================================================================================


def test_auth_reserved_flags_are_malformed_v5_MQTT_3_15_1_1():
    for flags in (0x1, 0x2, 0x4, 0x8, 0xF):
        h = Harness()
        c = h.connect("c")
        c.send_bytes(bytes((0xF0 | flags, 0)))
        (d,) = c.take("Disconnect")
        assert d.reason_code == 0x81 and c.closed


# ==== 4.1 Session State =============================================================================


def test_session_state_kept_while_connection_open_v5_MQTT_4_1_0_1():
    for expiry in (0, 5):
        h = Harness()
        s = h.connect("s", session_expiry_interval=expiry)
        s.subscribe("t", qos=1)
        p = h.connect("p", session_expiry_interval=expiry)
        p.publish("t", b"one", qos=1)
        (m,) = s.messages()
        p.send(Publish("q2", b"x", 2, False, False, 9))  # inbound QoS 2, awaiting PUBREL
        h.advance(10_000)  # far past any Session Expiry Interval, connections open (no keep-alive)
        assert p.take("Pubrec") and p.closed is None and s.closed is None
        p.send(Pubrel(9))
        assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(9, 0x00)]
        s.send(Puback(m.packet_id))
        assert h.core.sessions["s"].inflight == {}
        p.publish("t", b"two", qos=1)
        assert s.payloads() == [b"two"]


def test_session_state_discarded_after_expiry_once_closed_v5_MQTT_4_1_0_2():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=30)
    s.subscribe("t", qos=1)
    s.send(Publish("x", b"in", 2, False, False, 7))  # inbound QoS 2 awaiting PUBREL
    p = h.connect("p")
    p.publish("t", b"inflight", qos=1)
    s.drop()
    p.publish("t", b"queued", qos=1)
    h.advance(29.9)
    assert "s" in h.core.sessions
    h.advance(0.1)
    assert "s" not in h.core.sessions and len(h.core.tree) == 0
    s2 = h.connect("s", clean_start=False, session_expiry_interval=30)
    assert not s2.connack.session_present
    assert s2.messages() == [] and s2.take("Pubrel") == []
    s2.send(Pubrel(7))
    assert [c.reason_code for c in s2.take("Pubcomp")] == [0x92]
    p.publish("t", b"after", qos=1)
    assert s2.messages() == []


# ==== 4.3 QoS delivery protocols ====================================================================


def test_qos0_sent_with_qos0_and_dup_0_v5_MQTT_4_3_1_1():
    h = Harness()
    h.connect("r").publish("keep", b"retained", qos=1, retain=True)
    s = h.connect("s")
    s.subscribe("t", "keep", "dead/#", qos=0)
    p = h.connect("p")
    p.send(Publish("t", b"resent", 1, False, True, 3))  # the publisher's retransmission: DUP 1
    p.send(Publish("t", b"two", 2, False, True, 4))
    h.connect("w", will=will()).drop()
    msgs = s.messages()
    assert sorted(m.payload for m in msgs) == [b"gone", b"resent", b"retained", b"two"]
    for m in msgs:
        assert (m.qos, m.dup, m.packet_id) == (0, False, None), m


def test_qos1_sender_assigns_unused_packet_ids_v5_MQTT_4_3_2_1():
    h = Harness()
    s = h.connect("s", receive_maximum=20)
    s.subscribe("a", qos=1)
    s.subscribe("b", qos=2)
    p = h.connect("p")
    p.publish("b", b"held", qos=2)
    (held,) = s.messages()
    s.send(Pubrec(held.packet_id))  # stays in use until PUBCOMP
    for i in range(10):
        p.publish("a", str(i).encode(), qos=1)
    first = s.messages()
    ids = [m.packet_id for m in first]
    assert len(set(ids)) == 10 and held.packet_id not in ids and 0 not in ids
    for m in first[:5]:
        s.send(Puback(m.packet_id))
    # near the wrap-around of the 16-bit counter (jumped there rather than sending 65,530 messages)
    h.core.sessions["s"].next_packet_id = 65534
    for i in range(10):
        p.publish("a", b"w%d" % i, qos=1)
    more = [m.packet_id for m in s.messages()]
    in_use = {held.packet_id} | {m.packet_id for m in first[5:]}
    assert len(set(more)) == 10 and not set(more) & in_use and all(1 <= i <= 65535 for i in more)


def test_qos1_publish_sent_with_packet_id_qos1_dup_0_v5_MQTT_4_3_2_2():
    h = Harness()
    s = h.connect("s")
    s.subscribe("t", qos=1)
    p = h.connect("p")
    p.send(Publish("t", b"x", 1, False, True, 5))  # arrives as a retransmission (DUP 1)
    p.send(Publish("t", b"y", 2, False, False, 6))  # QoS 2, downgraded to the granted QoS 1
    msgs = s.messages()
    assert [(m.payload, m.qos, m.dup) for m in msgs] == [(b"x", 1, False), (b"y", 1, False)]
    assert all(m.packet_id for m in msgs)


def test_qos1_publish_unacknowledged_until_puback_v5_MQTT_4_3_2_3():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=1)
    h.connect("p").publish("t", b"x", qos=1)
    (m,) = s.messages()
    s.send(Puback(m.packet_id + 1))  # another id: not this message's acknowledgement
    s.send(Pubcomp(m.packet_id))  # not a PUBACK
    s.drop()
    s2 = h.connect("s", clean_start=False, session_expiry_interval=100)
    (again,) = s2.messages()
    assert (again.packet_id, again.dup, again.payload) == (m.packet_id, True, b"x")
    s2.send(Puback(m.packet_id))
    s2.drop()
    assert h.connect("s", clean_start=False).messages() == []


def test_qos1_receiver_pubacks_with_packet_id_after_taking_ownership_v5_MQTT_4_3_2_4():
    h = Harness()
    online = h.connect("online")
    online.subscribe("t", qos=1)
    h.connect("offline", clean_start=False, session_expiry_interval=100).subscribe("t", qos=1)
    h.clients[2].drop()
    log = _record(h)
    p = h.connect("p")
    p.send(Publish("t", b"x", 1, False, False, 0x4321))
    acks = [a for a in log if isinstance(a, Send) and isinstance(a.packet, Puback)]
    assert [(a.conn_id, a.packet.packet_id) for a in acks] == [(p.conn_id, 0x4321)]
    # ownership first: the message went to the online subscriber before the PUBACK ...
    first_publish = next(i for i, a in enumerate(log) if isinstance(a, Send) and isinstance(a.packet, Publish))
    assert first_publish < log.index(acks[0])
    # ... and is in the offline subscriber's session
    assert [d.message.payload for d in h.core.sessions["offline"].queue] == [b"x"]


def test_qos1_same_packet_id_after_puback_is_a_new_message_v5_MQTT_4_3_2_5():
    h = Harness()
    s = h.connect("s")
    s.subscribe("t", qos=1)
    p = h.connect("p")
    p.send(Publish("t", b"a", 1, False, False, 8))
    p.send(Publish("t", b"a", 1, False, True, 8))  # DUP 1, same id, after the PUBACK: new
    p.send(Publish("t", b"b", 1, False, False, 8))
    assert [a.packet_id for a in p.take("Puback")] == [8, 8, 8]
    assert [m.payload for m in s.messages()] == [b"a", b"a", b"b"]


def test_qos2_sender_assigns_unused_packet_ids_v5_MQTT_4_3_3_1():
    h = Harness()
    s = h.connect("s", receive_maximum=50)
    s.subscribe("t", qos=2)
    p = h.connect("p")
    for i in range(6):
        p.publish("t", str(i).encode(), qos=2)
    first = s.messages()
    for m in first[:3]:
        s.send(Pubrec(m.packet_id))  # these stay in use until PUBCOMP
    h.core.sessions["s"].next_packet_id = 65533
    for i in range(6):
        p.publish("t", b"n%d" % i, qos=2)
    later = s.messages()
    ids = [m.packet_id for m in first + later]
    assert len(set(ids)) == 12 and 0 not in ids


def test_qos2_publish_sent_with_packet_id_qos2_dup_0_v5_MQTT_4_3_3_2():
    h = Harness()
    s = h.connect("s")
    s.subscribe("t", qos=2)
    p = h.connect("p")
    p.send(Publish("t", b"x", 2, False, True, 5))  # the publisher's copy has DUP 1
    (m,) = s.messages()
    assert (m.qos, m.dup) == (2, False) and m.packet_id


def test_qos2_publish_unacknowledged_until_pubrec_v5_MQTT_4_3_3_3():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=2)
    h.connect("p").publish("t", b"x", qos=2)
    (m,) = s.messages()
    # neither acknowledges it; each is also a protocol error that ends the connection (tests/core/test_ack_kind.py)
    s.send(Puback(m.packet_id))  # not a PUBREC
    assert s.closed
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.messages()
    s.send(Pubcomp(m.packet_id))  # not a PUBREC
    assert s.closed
    s2 = h.connect("s", clean_start=False)
    (again,) = s2.messages()
    assert (again.packet_id, again.qos, again.dup) == (m.packet_id, 2, True)
    assert s2.take("Pubrel") == []
    s2.send(Pubrec(m.packet_id))
    assert [r.packet_id for r in s2.take("Pubrel")] == [m.packet_id]


def test_qos2_pubrel_unacknowledged_until_pubcomp_v5_MQTT_4_3_3_5():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=2)
    h.connect("p").publish("t", b"x", qos=2)
    (m,) = s.messages()
    s.send(Pubrec(m.packet_id))
    s.take("Pubrel")
    s.send(Puback(m.packet_id))  # not a PUBCOMP
    s.drop()
    s2 = h.connect("s", clean_start=False, session_expiry_interval=100)
    assert [r.packet_id for r in s2.take("Pubrel")] == [m.packet_id]
    s2.send(Pubcomp(m.packet_id))
    s2.drop()
    s3 = h.connect("s", clean_start=False)
    assert s3.take("Pubrel") == [] and s3.messages() == []


def test_qos2_publish_never_resent_after_pubrel_v5_MQTT_4_3_3_6():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=2)
    h.connect("p").publish("t", b"x", qos=2)
    (m,) = s.messages()
    s.send(Pubrec(m.packet_id))
    s.send(Pubrec(m.packet_id))  # a repeated PUBREC: PUBREL again, never the PUBLISH
    assert len(s.take("Pubrel")) == 2 and s.messages() == []
    for _ in range(2):
        s.drop()
        s = h.connect("s", clean_start=False, session_expiry_interval=100)
        assert s.messages() == [] and [r.packet_id for r in s.take("Pubrel")] == [m.packet_id]


def test_qos2_message_expiry_not_applied_once_publish_sent_v5_MQTT_4_3_3_7():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=1000)
    s.subscribe("t", qos=2)
    s.subscribe("u", qos=2)
    p = h.connect("p")
    p.publish("t", b"before-pubrec", qos=2, message_expiry_interval=5)
    p.publish("u", b"after-pubrec", qos=2, message_expiry_interval=5)
    m1, m2 = s.messages()
    s.send(Pubrec(m2.packet_id))
    s.drop()
    h.advance(60)  # both messages are long expired
    s2 = h.connect("s", clean_start=False)
    (again,) = s2.messages()
    assert (again.payload, again.packet_id, again.dup) == (b"before-pubrec", m1.packet_id, True)
    assert [r.packet_id for r in s2.take("Pubrel")] == [m2.packet_id]


def test_qos2_receiver_pubrecs_with_packet_id_after_taking_ownership_v5_MQTT_4_3_3_8():
    h = Harness()
    online = h.connect("online")
    online.subscribe("t", qos=2)
    h.connect("offline", clean_start=False, session_expiry_interval=100).subscribe("t", qos=1)
    h.clients[2].drop()
    log = _record(h)
    p = h.connect("p")
    p.send(Publish("t", b"x", 2, False, False, 0xABCD))
    recs = [a for a in log if isinstance(a, Send) and isinstance(a.packet, Pubrec)]
    assert [(a.conn_id, a.packet.packet_id, a.packet.reason_code) for a in recs] == [(p.conn_id, 0xABCD, 0)]
    first_publish = next(i for i, a in enumerate(log) if isinstance(a, Send) and isinstance(a.packet, Publish))
    assert first_publish < log.index(recs[0])
    assert [d.message.payload for d in h.core.sessions["offline"].queue] == [b"x"]


def test_qos2_same_packet_id_after_pubcomp_is_a_new_message_v5_MQTT_4_3_3_12():
    h = Harness()
    s = h.connect("s")
    s.subscribe("t", qos=1)
    p = h.connect("p")
    for payload, dup in ((b"a", False), (b"a", True), (b"b", False)):
        p.send(Publish("t", payload, 2, False, dup, 21))
        assert [r.packet_id for r in p.take("Pubrec")] == [21]
        p.send(Pubrel(21))
        assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(21, 0)]
    assert [m.payload for m in s.messages()] == [b"a", b"a", b"b"]


def test_qos2_acknowledgement_sequence_continues_after_message_expiry_v5_MQTT_4_3_3_13():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100)
    s.subscribe("t", qos=1)
    s.drop()
    p = h.connect("p")
    p.send(Publish("t", b"x", 2, False, False, 3, {"message_expiry_interval": 2}))
    assert [r.packet_id for r in p.take("Pubrec")] == [3]
    h.advance(10)  # the message expires while the handshake is still open
    p.send(Publish("t", b"x", 2, False, True, 3, {"message_expiry_interval": 2}))
    assert [r.packet_id for r in p.take("Pubrec")] == [3]
    p.send(Pubrel(3))
    assert [(c.packet_id, c.reason_code) for c in p.take("Pubcomp")] == [(3, 0x00)]
    assert h.connect("s", clean_start=False).messages() == []  # expired: not delivered


# ==== 4.4 Message delivery retry ====================================================================


def test_error_puback_or_pubrec_acknowledges_and_is_never_retransmitted_v5_MQTT_4_4_0_2():
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100, receive_maximum=2)
    s.subscribe("one", qos=1)
    s.subscribe("two", qos=2)
    p = h.connect("p")
    p.publish("one", b"a", qos=1)
    p.publish("two", b"b", qos=2)
    p.publish("one", b"c", qos=1)  # queued: the send quota is used up
    m1, m2 = s.messages()
    s.send(Puback(m1.packet_id, 0x80))
    s.send(Pubrec(m2.packet_id, 0x87))
    assert s.take("Pubrel") == []
    # both count as acknowledged: the send quota is back, the queued message goes out
    (m3,) = s.messages()
    assert m3.payload == b"c"
    s.send(Puback(m3.packet_id))
    s.drop()
    s2 = h.connect("s", clean_start=False)
    assert s2.messages() == [] and s2.take("Pubrel") == []


# ==== 4.5 Message receipt ===========================================================================


def test_owned_message_added_to_every_matching_session_v5_MQTT_4_5_0_1():
    h = Harness()
    online = h.connect("online")
    online.subscribe("a/+", qos=1)
    off = h.connect("off", clean_start=False, session_expiry_interval=100)
    off.subscribe("a/#", qos=2)
    off.drop()
    other = h.connect("other")
    other.subscribe("b/#", qos=1)
    p = h.connect("p")
    p.publish("a/x", b"m", qos=2)
    assert p.take("Pubrec")
    assert [m.payload for m in online.messages()] == [b"m"]
    assert other.messages() == []
    assert [(m.payload, m.qos) for m in h.connect("off", clean_start=False).messages()] == [(b"m", 2)]


# ==== 4.6 Message ordering ==========================================================================


def test_messages_forwarded_in_order_received_per_topic_and_qos_v5_MQTT_4_6_0_5_MQTT_4_6_0_6():
    h = Harness()
    live = h.connect("live", receive_maximum=2)
    live.subscribe("t/#", qos=2)
    slow = h.connect("slow", clean_start=False, session_expiry_interval=100, receive_maximum=3)
    slow.subscribe("t/+", "t/a", qos=2)  # overlapping subscriptions
    slow.drop()
    p1, p2 = h.connect("p1"), h.connect("p2")
    sent = []
    for i in range(12):
        for p, topic in ((p1, "t/a"), (p2, "t/a"), (p1, "t/b")):
            qos = i % 3
            payload = f"{p.client_id}:{topic}:{qos}:{i}".encode()
            pid = p.publish(topic, payload, qos=qos)
            if qos == 2:
                p.send(Pubrel(pid))
            sent.append(payload)

    def drain(c) -> list[bytes]:
        got = []
        for _ in range(200):
            msgs = c.messages()
            if not msgs:
                break
            got += [m.payload for m in msgs]
            for m in msgs:
                if m.qos == 1:
                    c.send(Puback(m.packet_id))
                elif m.qos == 2:
                    c.send(Pubrec(m.packet_id))
                    c.send(Pubcomp(m.packet_id))
        return got

    got_live = drain(live)
    slow2 = h.connect("slow", clean_start=False, receive_maximum=1)
    got_slow = drain(slow2)
    queued = [p for p in sent if p.split(b":")[2] != b"0"]  # QoS 0 is not queued for an offline session
    for got, expected in ((got_live, sent), (got_slow, queued)):
        assert sorted(got) == sorted(expected)
        for key in {p.rsplit(b":", 1)[0] for p in expected}:  # publisher, topic, QoS
            want = [p for p in expected if p.rsplit(b":", 1)[0] == key]
            assert [p for p in got if p.rsplit(b":", 1)[0] == key] == want, key


# ==== 4.7 Topic Names and Topic Filters =============================================================


def test_wildcards_never_in_topic_name_v5_MQTT_4_7_0_1():
    for topic in (b"a/+", b"a/#", b"+", b"#", b"a+b", b"a/b#"):
        h = Harness()
        watcher = h.connect("w")
        watcher.subscribe("#")
        c = h.connect("c")  # as the Topic Name of a PUBLISH
        c.send_bytes(_packet(0x30, _utf8(topic) + b"\x00payload"))
        (d,) = c.take("Disconnect")
        assert d.reason_code in (0x82, 0x90) and c.closed, topic
        c = h.connect("d", will=will(topic=topic.decode()), expect=None)  # as a Will Topic
        (ack,) = c.take("Connack")
        assert ack.reason_code >= 0x80 and c.closed, topic
        assert "d" not in h.core.sessions
        c = h.connect("e")  # as a Response Topic (a Topic Name, 3.3.2.3.5)
        c.send_bytes(encode(Publish("ok", b"x", 0, False, False, None, {"response_topic": topic.decode()}), 5))
        (d,) = c.take("Disconnect")
        assert d.reason_code >= 0x80 and c.closed, topic
        assert watcher.messages() == []
    # wildcards in a filter are fine
    h = Harness()
    c = h.connect("c")
    assert c.subscribe("a/+", "a/#", "+", "#", qos=0) == [0, 0, 0, 0]


def test_null_character_refused_in_topic_names_and_filters_v5_MQTT_4_7_3_2():
    bad = b"a\x00b"
    raws = [
        _packet(0x30, _utf8(bad) + b"\x00x"),  # PUBLISH
        _packet(0x82, b"\x00\x01\x00" + _utf8(bad) + b"\x01"),  # SUBSCRIBE
        _packet(0xA2, b"\x00\x01\x00" + _utf8(bad)),  # UNSUBSCRIBE
    ]
    for raw in raws:
        h = Harness()
        watcher = h.connect("w")
        watcher.subscribe("#")
        c = h.connect("c")
        c.send_bytes(raw)
        (d,) = c.take("Disconnect")
        assert d.reason_code in (0x81, 0x82, 0x8F, 0x90) and c.closed
        assert c.take("Suback") == [] and c.take("Unsuback") == [] and watcher.messages() == []
        assert len(h.core.tree) == 1  # only the watcher's subscription
    # a will topic with U+0000: the CONNECT is refused, nothing stored
    h = Harness()
    c = h.open()
    c.send_bytes(encode(Connect(client_id="c", protocol_level=5, will=will(topic="a\x00b")), 5))
    acks = c.take("Connack")
    assert (not acks or acks[0].reason_code >= 0x80) and c.closed and "c" not in h.core.sessions


def test_topic_names_and_filters_up_to_65535_bytes_v5_MQTT_4_7_3_3():
    longest = ("\u20ac" * 21845)  # 3-byte characters: exactly 65,535 bytes
    assert len(longest.encode()) == 65535
    h = Harness(max_packet_size=200_000, max_topic_length=65535)  # the default limit is lower: 4096
    s = h.connect("s")
    assert s.subscribe(longest, qos=1) == [1]
    h.connect("p").publish(longest, b"x", qos=1)
    (m,) = s.messages()
    assert m.topic == longest and len(encode(m, 5)) > 65535
    # a length prefix cannot say more than 65,535; one that points past the packet is malformed
    c = h.connect("c")
    c.send_bytes(_packet(0x30, b"\xff\xff" + b"a" * 20))
    (d,) = c.take("Disconnect")
    assert d.reason_code == 0x81 and c.closed


def test_no_normalisation_in_subscription_matching_v5_MQTT_4_7_3_4():
    nfc = unicodedata.normalize("NFC", "caf\u00e9/\u00c5")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    pairs = [(nfc, nfd), ("a/b", "A/b"), ("a/b", "a/b/"), ("a/b", "a//b"), ("a/b", "\ufeffa/b"),
             ("a/b", "a/b "), ("a/b", "\uff41/b"), ("x/\u212b", "x/\u00c5")]
    h = Harness()
    s = h.connect("s")
    p = h.connect("p")
    for sub, other in pairs:
        assert s.subscribe(sub, qos=0) == [0]
        p.publish(other, b"other")
        assert s.messages() == [], (sub, other)
        p.publish(sub, b"same")
        assert [(m.topic, m.payload) for m in s.messages()] == [(sub, b"same")]
        s.unsubscribe(sub)
    # the wildcard levels match any characters, unaltered
    s.subscribe("+/\u00c5", qos=0)
    p.publish(nfd, b"x")
    assert s.messages() == []
    p.publish(nfc, b"y")
    assert [m.topic for m in s.messages()] == [nfc]


# ==== 4.8 Shared Subscriptions ======================================================================


def _shared_pair(h: Harness, expiry: int):
    members = {}
    for cid in ("m1", "m2"):
        c = h.connect(cid, clean_start=False, session_expiry_interval=expiry)
        assert c.subscribe("$share/g/t", qos=2) == [2]
        members[cid] = c
    return members


def test_shared_qos2_delivery_completed_to_same_member_on_reconnect_v5_MQTT_4_8_2_4():
    h = Harness()
    members = _shared_pair(h, 100)
    p = h.connect("p")
    p.publish("t", b"one", qos=2)
    chosen = next(cid for cid, c in members.items() if c.inbox)
    other = "m2" if chosen == "m1" else "m1"
    (m,) = members[chosen].messages()
    members[chosen].drop()  # before PUBREC
    back = h.connect(chosen, clean_start=False, session_expiry_interval=100)
    (again,) = back.messages()
    assert (again.payload, again.packet_id, again.dup) == (b"one", m.packet_id, True)
    back.send(Pubrec(m.packet_id))
    back.drop()  # after PUBREC, before PUBCOMP
    back = h.connect(chosen, clean_start=False)
    assert [r.packet_id for r in back.take("Pubrel")] == [m.packet_id]
    back.send(Pubcomp(m.packet_id))
    assert members[other].messages() == []
    assert h.core.sessions[chosen].inflight == {}


def test_shared_qos2_message_not_redirected_when_session_ends_v5_MQTT_4_8_2_5():
    h = Harness()
    members = _shared_pair(h, 10)
    p = h.connect("p")
    p.publish("t", b"one", qos=2)
    chosen = next(cid for cid, c in members.items() if c.inbox)
    other = "m2" if chosen == "m1" else "m1"
    members[chosen].messages()
    members[chosen].drop()
    h.advance(10)  # the chosen member's session ends before it reconnects
    assert chosen not in h.core.sessions
    assert members[other].messages() == []
    back = h.connect(chosen, clean_start=False)
    assert back.messages() == [] and not back.connack.session_present


# ==== 4.9 Flow Control ==============================================================================


def _drain_count(c) -> int:
    return len(c.messages())


def test_initial_send_quota_is_the_client_receive_maximum_v5_MQTT_4_9_0_1():
    for receive_maximum, expected in ((1, 1), (3, 3), (None, 40)):
        h = Harness()
        props = {} if receive_maximum is None else {"receive_maximum": receive_maximum}
        s = h.connect("s", **props)
        s.subscribe("t", qos=1)
        p = h.connect("p")
        for i in range(40):
            p.publish("t", b"%d" % i, qos=1)
        assert _drain_count(s) == expected  # non-zero, never above the Receive Maximum
    # a resumed session: the unacknowledged messages re-sent at reconnect count too, against the
    # Receive Maximum of the new connection
    h = Harness()
    s = h.connect("s", clean_start=False, session_expiry_interval=100, receive_maximum=10)
    s.subscribe("t", qos=1)
    p = h.connect("p")
    for i in range(6):
        p.publish("t", b"%d" % i, qos=1)
    first = s.messages()
    assert len(first) == 6
    s.drop()
    s2 = h.connect("s", clean_start=False, receive_maximum=2)
    s2.send(Puback(first[5].packet_id))  # acknowledged (from the old connection) before its re-send
    got = []
    for _ in range(10):
        msgs = s2.messages()
        assert len(msgs) <= 2, f"{len(msgs)} PUBLISH in flight, Receive Maximum is 2"
        if not msgs:
            break
        got += msgs
        for m in msgs:
            s2.send(Puback(m.packet_id))
    assert [(m.payload, m.packet_id, m.dup) for m in got] == [(f.payload, f.packet_id, True) for f in first[:5]]


def test_other_packets_processed_when_send_quota_is_zero_v5_MQTT_4_9_0_3():
    h = Harness()
    s = h.connect("s", receive_maximum=1)
    s.subscribe("t", "u", qos=2)
    p = h.connect("p")
    p.publish("t", b"1", qos=2)
    p.publish("t", b"2", qos=1)
    (m,) = s.messages()  # the quota is now zero
    s.ping()
    assert len(s.take("Pingresp")) == 1
    s.send(Subscribe(50, [Subscription("v", 1)]))
    assert [a.packet_id for a in s.take("Suback")] == [50]
    s.send(Unsubscribe(51, ["v"]))
    assert [a.packet_id for a in s.take("Unsuback")] == [51]
    s.send(Publish("x", b"q1", 1, False, False, 60))
    assert [a.packet_id for a in s.take("Puback")] == [60]
    s.send(Publish("x", b"q2", 2, False, False, 61))
    assert [a.packet_id for a in s.take("Pubrec")] == [61]
    s.send(Pubrel(61))
    assert [a.packet_id for a in s.take("Pubcomp")] == [61]
    s.send(Pubrec(m.packet_id))  # PUBREL is sent even though the quota is still zero
    assert [r.packet_id for r in s.take("Pubrel")] == [m.packet_id]
    assert s.messages() == []
    s.send(Pubcomp(m.packet_id))
    assert [x.payload for x in s.messages()] == [b"2"]


# ==== 4.12 Enhanced authentication (refused) ========================================================


def test_server_rejecting_authentication_sends_connack_error_and_closes_v5_MQTT_4_12_0_4():
    h = Harness()
    watcher = h.connect("w")
    watcher.subscribe("#")
    log = _record(h)
    c = h.open()
    c.send_bytes(encode(Connect(client_id="a", protocol_level=5, will=will(topic="w/x"),
                                properties={"authentication_method": "SCRAM-SHA-256",
                                            "authentication_data": b"client-first"}), 5)
                 + encode(Auth(0x18, {"authentication_method": "SCRAM-SHA-256",
                                      "authentication_data": b"client-final"}), 5)
                 + encode(Publish("w/y", b"sneaked", 0), 5))
    sent = _sends(log, c.conn_id)
    assert len(sent) == 1 and isinstance(sent[0], Connack) and sent[0].reason_code >= 0x80
    assert c.closed and any(isinstance(a, Close) and a.conn_id == c.conn_id for a in log)
    assert watcher.messages() == []  # neither the will nor the PUBLISH behind the refusal


def test_no_auth_packet_nor_authentication_method_without_client_method_v5_MQTT_4_12_0_6():
    h = Harness(max_keep_alive=30)
    log = _record(h)
    a = h.connect("a", keep_alive=100, session_expiry_interval=10)
    a.subscribe("t", qos=2)
    b = h.connect("")
    b.publish("t", b"x", qos=2)
    a.send(Auth(0x19))  # the client must not send AUTH: refused, and never answered with AUTH
    h.connect("b2", clean_start=False, session_expiry_interval=10)
    h.advance(100)
    h.dispatch(h.core.shutdown(h.now))
    sent = [x.packet for x in log if isinstance(x, Send)]
    assert not any(isinstance(x, Auth) for x in sent)
    connacks = [x for x in sent if isinstance(x, Connack)]
    assert len(connacks) == 3
    for ack in connacks:
        assert "authentication_method" not in ack.properties and "authentication_data" not in ack.properties


# ==== 4.13 Handling errors ==========================================================================


def test_connection_closed_after_every_error_connack_or_disconnect_v5_MQTT_4_13_2_1():
    refusals = Harness(maximum_qos=1, connect_timeout=5)
    disconnects = Harness(receive_maximum=2, topic_alias_maximum=5, max_packet_size=1024)
    logs = [_record(refusals), _record(disconnects)]
    _refusals_before_connack(refusals)
    refusals.advance(5)
    refusals.dispatch(refusals.core.shutdown(refusals.now))
    _server_disconnects(disconnects, session_expiry_interval=30)
    total = 0
    for h, log in zip((refusals, disconnects), logs, strict=True):
        errors = [(i, a) for i, a in enumerate(log) if isinstance(a, Send)
                  and isinstance(a.packet, (Connack, Disconnect)) and a.packet.reason_code >= 0x80]
        total += len(errors)
        for i, a in errors:
            assert any(isinstance(x, Close) and x.conn_id == a.conn_id for x in log[i + 1:]), a
            assert a.conn_id not in h.core.conns
    assert total >= 9
