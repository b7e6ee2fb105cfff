"""Fuzzing the broker core, not only the decoder: arbitrary bytes, mutated golden packets and mutated
valid sessions go through ``BrokerCore.data_received`` (the Harness's ``send_bytes``), next to
well-behaved clients.

What must hold for every input (checked after each example):

* no exception leaves the core (the Harness would raise it): only protocol errors, which close the
  connection with a reason code (MQTT 5: CONNACK or DISCONNECT >= 0x80, except after a second
  CONNECT [MQTT-3.1.0-2]; 3.1.1: closed without a word);
* nothing is sent to a closed connection (the Harness asserts it), every packet sent to the fuzzed
  connection encodes and decodes again at its protocol level, a CONNACK is the first packet sent and
  the only one [MQTT-3.2.0-1] [MQTT-3.2.0-2];
* other clients are unharmed: a bystander subscriber stays connected and still receives a fresh
  client's QoS 1 message;
* a will is published only if its CONNECT was accepted (CONNACK 0x00) [MQTT-3.1.2-7], at most once.

``HYPOTHESIS_PROFILE=long`` runs 20 times more examples.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connack, Connect, Disconnect, Publish, Will
from lastwill.codec.reason_codes import CONNACK_CODES, DISCONNECT_CODES
from tests.codec.cases import CASES
from tests.codec.strategies import client_packets, examples
from tests.core.harness import Harness

FUZZ_SETTINGS = settings(max_examples=examples(300), deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# small limits, so that fuzzed inputs reach them too
LIMITS = {"max_topic_levels": 8, "max_topic_length": 200, "max_subscriptions_per_client": 4,
          "max_publish_rate": 50, "receive_maximum": 4, "topic_alias_maximum": 4, "max_packet_size": 4096,
          "max_queued_messages": 8}
WILL_MARK = b"fuzzwill:"


class World:
    """A Harness with a bystander subscriber on '#', and the fuzzed connections."""

    def __init__(self) -> None:
        self.h = Harness(**LIMITS)
        self.bystander = self.h.subscriber("#", client_id="bystander", qos=1)
        self.received: list[Publish] = []
        self.fuzzed = []  # (client, will marker or None)

    def feed(self, client, chunks: list[bytes]) -> None:
        for chunk in chunks:
            if client.closed is not None:
                break
            client.send_bytes(chunk)  # an exception other than a handled protocol error fails the test
            self._collect()

    def _collect(self) -> None:
        self.received += self.bystander.messages()

    def check(self) -> None:
        h = self.h
        for client, marker in self.fuzzed:
            check_sent(client)
            if marker is not None:
                accepted = any(isinstance(p, Connack) and p.reason_code == 0 for p in client.sent_log)
                wills = [m for m in self.received if m.payload == marker]
                assert len(wills) <= 1, f"will {marker!r} published {len(wills)} times"
                if wills:
                    assert accepted, f"will {marker!r} published without an accepted CONNECT [MQTT-3.1.2-7]"
        # the bystander is unharmed: still connected, still receiving
        assert self.bystander.closed is None
        probe = h.connect("probe-client")
        probe.publish("probe/t", b"probe", qos=1)
        assert probe.take("Puback")[0].reason_code == 0
        self.received += self.bystander.messages()
        assert any(m.topic == "probe/t" and m.payload == b"probe" for m in self.received)


def instrument(client) -> None:
    """Keep a log of every packet sent to ``client`` (the inbox is drained by take())."""
    client.sent_log = []
    original = client.inbox

    class Log(list):
        def append(self, item):
            client.sent_log.append(item)
            super().append(item)
    client.inbox = Log(original)


def check_sent(client) -> None:
    sent = client.sent_log
    connacks = [i for i, p in enumerate(sent) if isinstance(p, Connack)]
    assert len(connacks) <= 1, "more than one CONNACK [MQTT-3.2.0-2]"
    if connacks:
        assert connacks[0] == 0, "CONNACK is not the first packet sent [MQTT-3.2.0-1]"
        assert sent[0].reason_code == 0 or sent[0].reason_code in CONNACK_CODES - {0}
        if sent[0].reason_code >= 0x80:
            assert client.closed is not None and len(sent) == 1, "a refused CONNECT must be closed [MQTT-3.2.2-7]"
    level = client.conn.protocol_level  # what the CONNECT said (4 if none was read)
    for p in sent:
        if isinstance(p, Disconnect):
            # only DISCONNECT reason codes >= 0x80 [MQTT-3.14.2-1], and the last packet sent
            assert level == 5 and p.reason_code >= 0x80 and p.reason_code in DISCONNECT_CODES and p is sent[-1]
        if isinstance(p, Connack):
            continue
        raw = encode(p, level)  # every packet sent is valid at the connection's level
        decoded = Decoder(server_side=False, protocol_level=level).feed(raw)
        assert len(decoded) == 1 and (decoded == [p] or level != 5)  # 3.1.1: reason codes mapped
    accepted_v5 = level == 5 and sent and isinstance(sent[0], Connack) and sent[0].reason_code == 0
    if accepted_v5 and client.closed and client.closed.startswith("protocol error") and \
            "MQTT-3.1.0-2" not in client.closed:
        # a protocol error after CONNACK in MQTT 5: DISCONNECT with the reason code first [MQTT-4.13.1-1]
        assert isinstance(sent[-1], Disconnect) and sent[-1].reason_code >= 0x80, client.closed


def open_fuzzed(world: World, marker: bytes | None):
    client = world.h.open()
    client.conn = world.h.core.conns[client.conn_id]  # the core's Conn (kept after it is closed)
    instrument(client)
    world.fuzzed.append((client, marker))
    return client


def valid_connect(level: int, n: int, with_will: bool) -> tuple[bytes, bytes | None]:
    marker = WILL_MARK + str(n).encode() if with_will else None
    will = Will(f"fuzz/will/{n}", marker, 1, False, {}) if with_will else None
    props = {"session_expiry_interval": 0} if level == 5 else {}
    c = Connect(client_id=f"fuzz-{n}", clean_start=True, keep_alive=0, protocol_level=level,
                protocol_name="MQIsdp" if level == 3 else "MQTT", will=will, properties=props)
    return encode(c, level), marker


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# ---- mutations ------------------------------------------------------------------------------------


@st.composite
def mutate(draw, data: bytes) -> bytes:
    """Bit flips, byte changes, insertions, deletions, truncation, a random Remaining Length."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[pos:pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "length" and len(buf) > 1:
            buf[1:2] = draw(st.sampled_from([b"\x00", b"\x7f", b"\xff\x7f", b"\xff\xff\xff\x7f", b"\x80\x80\x80\x80"]))
    return bytes(buf)


@st.composite
def mutated_session(draw):
    """A valid session (CONNECT, then client packets), encoded, then mutated (most of the time)."""
    level = draw(st.sampled_from([3, 4, 5]))
    packets = draw(st.lists(client_packets(level).filter(lambda p: not isinstance(p, Connect)), max_size=8))
    body = b"".join(encode(p, level) for p in packets)
    if draw(st.booleans()):
        body = draw(mutate(body))
    return level, body


# ---- the tests ------------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_core_survives_arbitrary_bytes_before_connect(data, cuts):
    world = World()
    client = open_fuzzed(world, None)
    world.feed(client, chunked(data, cuts))
    if client.closed is None:  # whatever was accepted: end the connection the hard way
        client.drop()
    world.check()


@FUZZ_SETTINGS
@given(st.sampled_from([3, 4, 5]), st.booleans(), st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_core_survives_arbitrary_bytes_after_a_valid_connect(level, with_will, data, cuts):
    world = World()
    connect, marker = valid_connect(level, 1, with_will)
    client = open_fuzzed(world, marker)
    world.feed(client, [connect])
    assert client.sent_log and client.sent_log[0].reason_code == 0
    world.feed(client, chunked(data, cuts))
    if client.closed is None:
        client.drop()
    world.check()


@st.composite
def mutated_golden(draw):
    case = draw(st.sampled_from([c for c in CASES if c.server_side]))
    return case, draw(mutate(case.raw))


@FUZZ_SETTINGS
@given(st.lists(mutated_golden(), min_size=1, max_size=6), st.sampled_from([3, 4, 5]), st.booleans(),
       st.lists(st.integers(0, 2000), max_size=8))
def test_core_survives_mutated_golden_packets(cases, level, connect_first, cuts):
    """Mutations of the golden table's packets (tests/codec/cases.py), concatenated, sometimes after a
    valid CONNECT with a will, in random pieces."""
    world = World()
    stream = b"".join(raw for _, raw in cases)
    marker = None
    if connect_first:
        connect, marker = valid_connect(level, 2, True)
        stream = connect + stream
    client = open_fuzzed(world, marker)
    world.feed(client, chunked(stream, cuts))
    if client.closed is None:
        client.drop()
    world.check()


@FUZZ_SETTINGS
@given(st.lists(mutated_session(), min_size=1, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4),
       st.lists(st.integers(0, 3000), max_size=8), st.integers(0, 3))
def test_core_survives_mutated_sessions_from_several_connections(sessions, wills, cuts, drop_how):
    """Several connections at once, each a valid CONNECT (some with a will) followed by a mutated
    stream of valid client packets, interleaved piece by piece; then each ends (EOF, or left open
    and ended by a restart of nothing: the harness drops it)."""
    world = World()
    streams = []
    for n, (level, body) in enumerate(sessions):
        connect, marker = valid_connect(level, 10 + n, wills[n])
        client = open_fuzzed(world, marker)
        streams.append((client, chunked(connect + body, cuts)))
    while any(chunks for _, chunks in streams):
        for client, chunks in streams:
            if chunks:
                world.feed(client, [chunks.pop(0)])
    for i, (client, _) in enumerate(streams):
        if client.closed is None:
            if (drop_how + i) % 2:
                client.drop(ConnectionResetError("fuzz"))
            else:
                world.h.advance(0)  # timers due now
                client.drop()
    world.check()


def test_core_fuzz_world_detects_a_will_without_connack():
    """The checker can fail: a will marker published for a connection never accepted is caught."""
    world = World()
    client = open_fuzzed(world, b"fuzzwill:x")
    client.send_bytes(b"\xe0\x00")  # DISCONNECT before CONNECT: refused, closed
    world.received.append(Publish("fuzz/will/x", b"fuzzwill:x", 1, False, False, 1, {}))
    try:
        world.check()
    except AssertionError as e:
        assert "without an accepted CONNECT" in str(e)
    else:
        raise AssertionError("the checker accepted a will published without CONNACK 0x00")


# ---- what the fuzzing found, as plain regression tests -------------------------------------------


def test_second_connect_then_malformed_bytes_in_one_read_closes_v5_MQTT_3_1_0_2():
    """A read holding a whole second CONNECT and then a malformed packet: the decoder raises with the
    CONNECT in ``err.packets``; dispatching it raised out of ``data_received`` (an internal error at the
    edge) before the fix."""
    world = World()
    connect, marker = valid_connect(5, 1, True)
    client = open_fuzzed(world, marker)
    world.feed(client, [connect])
    world.feed(client, [connect + b"\x00\x00"])  # packet type 0 is malformed
    assert client.closed and "MQTT-3.1.0-2" in client.closed
    assert [m.payload for m in world.received] == [marker]  # a protocol error: the will goes
    world.check()


def test_second_connect_with_unsupported_level_gets_a_disconnect_reason_code_v5_MQTT_3_14_2_1():
    """0x84 Unsupported Protocol Version is a CONNACK code, not a DISCONNECT one: 0x82 instead."""
    world = World()
    connect, marker = valid_connect(5, 1, False)
    client = open_fuzzed(world, marker)
    world.feed(client, [connect, b"\x10\x0e\x00\x04MQTT\x06\x02\x00<\x00\x00\x01a"])
    assert isinstance(client.sent_log[-1], Disconnect) and client.sent_log[-1].reason_code == 0x82
    world.check()
