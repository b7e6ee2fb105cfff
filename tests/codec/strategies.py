"""Hypothesis strategies producing valid packets for a protocol level and a direction.

Valid means: what a compliant peer may send, in the canonical form the decoder produces (so
``decode(encode(p)) == p``): no properties and 3.1.1-representable reason codes before MQTT 5.0,
no wildcard in topic names, packet identifiers only where they belong, and so on.
"""

from __future__ import annotations

import os

from hypothesis import strategies as st

from lastwill.codec import reason_codes as rc
from lastwill.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from lastwill.codec.properties import ALLOWED, BINARY, BYTE, PAIR, U16, U32, UTF8, VARINT

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def examples(n: int) -> int:
    """``n`` normally; 20 times more under HYPOTHESIS_PROFILE=long."""
    return n * 20 if LONG else n


# Text: any Unicode scalar value except U+0000 (surrogates cannot be encoded as UTF-8 anyway).
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
nonempty_text = text.filter(bool)
topic_name = nonempty_text.filter(lambda t: "+" not in t and "#" not in t)
topic_filter = nonempty_text
small_bytes = st.binary(max_size=24)
packet_id = st.integers(1, 0xFFFF)

_RANGES = {
    "receive_maximum": (1, 0xFFFF),
    "maximum_packet_size": (1, 0xFFFFFFFF),
    "topic_alias": (1, 0xFFFF),
    "subscription_identifier": (1, 268_435_455),
}


def _value(d):
    if d.name in _RANGES:
        lo, hi = _RANGES[d.name]
        return st.integers(lo, hi)
    if d.name == "response_topic":
        return topic_name
    return {
        BYTE: st.integers(0, 1),
        U16: st.integers(0, 0xFFFF),
        U32: st.integers(0, 0xFFFFFFFF),
        VARINT: st.integers(1, 268_435_455),
        UTF8: text,
        BINARY: small_bytes,
        PAIR: st.lists(st.tuples(text, text), min_size=1, max_size=3),
    }[d.type]


@st.composite
def properties(draw, kind: str, exclude: frozenset[str] = frozenset()):
    """A valid property dict for ``kind``; each property at most once (User Property: a list)."""
    defs = [d for d in ALLOWED[kind].values() if d.name not in exclude]
    chosen = draw(st.lists(st.sampled_from(defs), unique=True, max_size=4)) if defs else []
    props = {}
    for d in chosen:
        value = draw(_value(d))
        if d.name == "subscription_identifier" and kind == "PUBLISH":
            value = draw(st.lists(st.integers(1, 268_435_455), min_size=1, max_size=3))
        props[d.name] = value
    if "authentication_data" in props and "authentication_method" not in props and kind == "CONNECT":
        props["authentication_method"] = draw(text)
    return props


def _props(level: int, kind: str, **kw):
    return properties(kind, **kw) if level == 5 else st.just({})


@st.composite
def connects(draw, level: int):
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_name), draw(small_bytes), draw(st.integers(0, 2)), draw(st.booleans()),
            draw(_props(level, "WILL")),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | small_bytes)
    if level != 5 and username is None:
        password = None  # 3.1.1 forbids a password without a user name [MQTT-3.1.2-22]
    return Connect(
        client_id=draw(text), clean_start=draw(st.booleans()), keep_alive=draw(st.integers(0, 0xFFFF)),
        protocol_level=level, protocol_name="MQIsdp" if level == 3 else "MQTT", will=will,
        username=username, password=password, properties=draw(_props(level, "CONNECT")),
    )


@st.composite
def publishes(draw, level: int, server_side: bool):
    qos = draw(st.integers(0, 2))
    exclude = frozenset({"subscription_identifier"}) if server_side else frozenset()
    props = draw(_props(level, "PUBLISH", exclude=exclude))
    topic = draw(topic_name)
    if "topic_alias" in props and draw(st.booleans()):
        topic = ""
    return Publish(
        topic, draw(st.binary(max_size=300)), qos, draw(st.booleans()),
        draw(st.booleans()) if qos else False, draw(packet_id) if qos else None, props,
    )


def _acks(level: int, cls, kind: str, codes):
    if level != 5:
        return st.builds(cls, packet_id)
    return st.builds(cls, packet_id, st.sampled_from(sorted(codes)), properties(kind))


@st.composite
def subscribes(draw, level: int):
    subs = draw(st.lists(
        st.builds(
            Subscription, topic_filter, st.integers(0, 2),
            *((st.booleans(), st.booleans(), st.integers(0, 2)) if level == 5 else ()),
        ),
        min_size=1, max_size=4,
    ))
    return Subscribe(draw(packet_id), subs, draw(_props(level, "SUBSCRIBE")))


def client_packets(level: int):
    """Packets a Client sends (what a server-side Decoder reads)."""
    strategies = [
        connects(level),
        publishes(level, server_side=True),
        _acks(level, Puback, "PUBACK", rc.PUBACK_CODES),
        _acks(level, Pubrec, "PUBREC", rc.PUBREC_CODES),
        _acks(level, Pubrel, "PUBREL", rc.PUBREL_CODES),
        _acks(level, Pubcomp, "PUBCOMP", rc.PUBCOMP_CODES),
        subscribes(level),
        st.builds(
            Unsubscribe, packet_id, st.lists(topic_filter, min_size=1, max_size=4), _props(level, "UNSUBSCRIBE")
        ),
        st.just(Pingreq()),
        st.builds(Disconnect, st.sampled_from(sorted(rc.DISCONNECT_CODES)), properties("DISCONNECT"))
        if level == 5 else st.just(Disconnect()),
    ]
    if level == 5:
        strategies.append(st.builds(Auth, st.sampled_from(sorted(rc.AUTH_CODES)), properties("AUTH")))
    return st.one_of(strategies)


def server_packets(level: int):
    """Packets a Server sends (what a client-side Decoder reads)."""
    if level == 5:
        connack = st.builds(Connack, st.sampled_from(sorted(rc.CONNACK_CODES)), st.booleans(), properties("CONNACK"))
        suback_codes = sorted(rc.SUBACK_CODES)
    else:
        connack = st.builds(Connack, st.sampled_from(sorted(rc.CONNACK_FROM_V311.values())), st.booleans())
        suback_codes = sorted(rc.SUBACK_CODES_V311)
    connack = connack.map(lambda c: Connack(c.reason_code, c.session_present and not c.reason_code and level != 3, c.properties))
    strategies = [
        connack,
        publishes(level, server_side=False),
        _acks(level, Puback, "PUBACK", rc.PUBACK_CODES),
        _acks(level, Pubrec, "PUBREC", rc.PUBREC_CODES),
        _acks(level, Pubrel, "PUBREL", rc.PUBREL_CODES),
        _acks(level, Pubcomp, "PUBCOMP", rc.PUBCOMP_CODES),
        st.builds(Suback, packet_id, st.lists(st.sampled_from(suback_codes), min_size=1, max_size=4), _props(level, "SUBACK")),
        st.builds(
            Unsuback, packet_id, st.lists(st.sampled_from(sorted(rc.UNSUBACK_CODES)), min_size=1, max_size=4),
            properties("UNSUBACK"),
        )
        if level == 5 else st.builds(Unsuback, packet_id),
        st.just(Pingresp()),
    ]
    if level == 5:
        strategies.append(
            st.builds(
                Disconnect, st.sampled_from(sorted(rc.DISCONNECT_CODES)),
                properties("DISCONNECT", exclude=frozenset({"session_expiry_interval"})),
            )
        )
        strategies.append(st.builds(Auth, st.sampled_from(sorted(rc.AUTH_CODES)), properties("AUTH")))
    return st.one_of(strategies)
