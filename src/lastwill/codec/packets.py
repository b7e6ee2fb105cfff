"""One slotted dataclass per MQTT control packet, with the spec's field names.

Packets are protocol-version neutral: the decoder fills them from 3.1, 3.1.1 or 5.0 bytes and
the encoder writes them for the version of the connection (dropping properties and mapping
reason codes for 3.1.1). ``properties`` is a dict keyed by the property's snake_case name
(see ``codec.properties``); ``user_property`` is a list of (name, value) pairs kept in order,
``subscription_identifier`` in a PUBLISH is a list of ints. An absent property is absent from
the dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class ProtocolLevel(IntEnum):
    """The Protocol Level byte of CONNECT (3.1.2.2)."""

    V31 = 3  # MQTT 3.1, protocol name "MQIsdp"
    V311 = 4
    V5 = 5


PROTOCOL_31 = ProtocolLevel.V31
PROTOCOL_311 = ProtocolLevel.V311
PROTOCOL_5 = ProtocolLevel.V5


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


Properties = dict  # name -> value; see codec.properties for names and types


@dataclass(slots=True)
class Will:
    """The Will Message carried by a CONNECT (3.1.2.5, 3.1.3.2-3.1.3.4)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    client_id: str = ""
    clean_start: bool = True  # "Clean Session" in 3.1.1
    keep_alive: int = 60
    protocol_level: int = PROTOCOL_311
    protocol_name: str = "MQTT"
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=dict)
    type = PacketType.CONNECT


@dataclass(slots=True)
class Connack:
    reason_code: int = 0  # MQTT 5 reason code; mapped to a 3.1.1 return code by the encoder
    session_present: bool = False
    properties: Properties = field(default_factory=dict)
    type = PacketType.CONNACK


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present iff qos > 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.PUBLISH


@dataclass(slots=True)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.PUBACK


@dataclass(slots=True)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.PUBREC


@dataclass(slots=True)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.PUBREL


@dataclass(slots=True)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.PUBCOMP


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its Subscription Options (3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: list[Subscription] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)
    type = PacketType.SUBSCRIBE


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)  # 0x80 is "Failure" in 3.1.1
    properties: Properties = field(default_factory=dict)
    type = PacketType.SUBACK


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)
    type = PacketType.UNSUBSCRIBE


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)  # not encoded in 3.1.1
    properties: Properties = field(default_factory=dict)
    type = PacketType.UNSUBACK


@dataclass(slots=True)
class Pingreq:
    type = PacketType.PINGREQ


@dataclass(slots=True)
class Pingresp:
    type = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.DISCONNECT


@dataclass(slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type = PacketType.AUTH


Packet = (
    Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
    | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth
)
