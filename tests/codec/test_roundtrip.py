"""Property tests: encode -> decode round trips, arbitrary chunking, and fuzzing the decoder."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect
from lastwill.codec.primitives import encode_varint
from lastwill.errors import MqttError

from .cases import CASES
from .strategies import client_packets, examples, server_packets

LEVELS = st.sampled_from([3, 4, 5])
SETTINGS = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(LEVELS.flatmap(lambda level: st.tuples(st.just(level), client_packets(level))))
def test_client_packets_round_trip(args):
    level, packet = args
    raw = encode(packet, level)
    assert Decoder(protocol_level=level).feed(raw) == [packet]


@SETTINGS
@given(LEVELS.flatmap(lambda level: st.tuples(st.just(level), server_packets(level))))
def test_server_packets_round_trip(args):
    level, packet = args
    raw = encode(packet, level)
    assert Decoder(server_side=False, protocol_level=level).feed(raw) == [packet]


@SETTINGS
@given(
    LEVELS.flatmap(
        lambda level: st.tuples(
            st.just(level),
            st.lists(client_packets(level).filter(lambda p: not isinstance(p, Connect)), max_size=8),
        )
    ),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_any_chunking_gives_the_same_packets(args, cuts):
    level, packets = args
    stream = b"".join(encode(p, level) for p in packets)
    connect = encode(Connect(client_id="c", protocol_level=level), level)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    decoder = Decoder()
    out = decoder.feed(connect)
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += decoder.feed(stream[a:b])
    assert out[1:] == packets
    assert decoder.buffered == 0


# ------------------------------------------------------------------------------------------------
# Fuzzing: a Decoder only ever raises MqttError, and what it accepts re-encodes to itself.


def _accepting_roundtrip(decoder: Decoder, data: bytes) -> None:
    level_before = decoder.protocol_level
    try:
        packets = decoder.feed(data)
    except MqttError:
        return
    level = decoder.protocol_level if level_before is None else level_before
    for p in packets:
        enc_level = p.protocol_level if isinstance(p, Connect) else level
        again = Decoder(server_side=decoder.server_side, protocol_level=enc_level)
        assert again.feed(encode(p, enc_level)) == [p]


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, 3, 4, 5]), st.booleans())
def test_fuzz_arbitrary_bytes(data, level, server_side):
    if not server_side and level is None:
        level = 5
    _accepting_roundtrip(Decoder(server_side=server_side, protocol_level=level), data)


@st.composite
def mutated_cases(draw):
    case = draw(st.sampled_from(CASES))
    raw = bytearray(case.raw)
    # find the body after the fixed header, mutate it, and usually fix up the Remaining Length
    i = 1
    while i < len(raw) and raw[i] & 0x80 and i < 5:
        i += 1
    header, body = bytes(raw[:1]), bytearray(raw[i + 1 :])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "first"]))
        pos = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and body:
            del body[pos]
        elif op == "truncate":
            del body[pos:]
        elif op == "first":
            header = bytes((draw(st.integers(0, 255)),))
    if draw(st.booleans()) or len(body) > 250:
        out = header + encode_varint(len(body)) + bytes(body)
    else:
        out = header + bytes(raw[1 : i + 1]) + bytes(body)  # the original, now wrong, length
    return case, out


@settings(max_examples=examples(500), deadline=None)
@given(mutated_cases(), st.integers(1, 8))
def test_fuzz_mutated_golden_packets(mutated, chunk):
    case, data = mutated
    _accepting_roundtrip(case.decoder(), data)
    # and the same bytes fed in small chunks behave the same
    decoder = case.decoder()
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
    except MqttError:
        pass


@settings(max_examples=examples(200), deadline=None)
@given(mutated_cases(), st.integers(1, 40))
def test_fuzz_one_feed_and_chunked_feeds_agree(mutated, chunk):
    case, data = mutated

    def run(pieces):
        decoder = case.decoder()
        out = []
        try:
            for piece in pieces:
                out += decoder.feed(piece)
        except MqttError as exc:
            return out + exc.packets, (type(exc), exc.rule)
        return out, None

    whole = run([data])
    chunked = run([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert whole == chunked
