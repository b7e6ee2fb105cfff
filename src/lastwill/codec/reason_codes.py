"""MQTT 5.0 Reason Codes (section 2.4) and their MQTT 3.1.1 counterparts.

Packets always carry MQTT 5 reason codes. For a 3.1 / 3.1.1 connection the encoder maps a
CONNACK reason code to a Connect Return code with :func:`connack_return_code_v311` and writes
every SUBACK failure (>= 0x80) as 0x80; the decoder maps the other way with
:func:`connack_reason_code_from_v311`.
"""

from __future__ import annotations

from enum import IntEnum


class ReasonCode(IntEnum):
    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00  # alias of SUCCESS (DISCONNECT)
    GRANTED_QOS_0 = 0x00  # alias of SUCCESS (SUBACK)
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


RC = ReasonCode

# The spec's names (Table 2-6), for log lines. 0x00 has a different name per packet; see
# reason_name().
REASON_NAMES: dict[int, str] = {
    0x00: "Success",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x04: "Disconnect with Will Message",
    0x10: "No matching subscribers",
    0x11: "No subscription existed",
    0x18: "Continue authentication",
    0x19: "Re-authenticate",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use",
    0x92: "Packet Identifier not found",
    0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}


def reason_name(code: int, packet: str | None = None) -> str:
    """The spec name of ``code``; ``packet`` ("DISCONNECT", "SUBACK") picks the name of 0x00."""
    if code == 0:
        if packet == "DISCONNECT":
            return "Normal disconnection"
        if packet == "SUBACK":
            return "Granted QoS 0"
    return REASON_NAMES.get(code, f"Unknown reason code 0x{code:02X}")


# The reason codes each packet may carry (3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3,
# 3.11.3, 3.14.2.1, 3.15.2.1).
CONNACK_CODES = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
     0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_CODES = PUBACK_CODES
PUBREL_CODES = frozenset({0x00, 0x92})
PUBCOMP_CODES = PUBREL_CODES
SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
# 0x8C (Bad authentication method) is missing from the table of 3.14.2.1 but Table 2-6 of 2.4
# lists it for DISCONNECT (re-authentication, 4.12.1): accepted.
DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
     0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)
AUTH_CODES = frozenset({0x00, 0x18, 0x19})

# MQTT 3.1.1 SUBACK return codes (3.9.3): granted QoS 0-2 or 0x80 Failure [MQTT-3.9.3-2].
SUBACK_CODES_V311 = frozenset({0x00, 0x01, 0x02, 0x80})

# MQTT 3.1.1 Connect Return codes (3.2.2.3, Table 3.1).
RETURN_CODE_ACCEPTED = 0
RETURN_CODE_UNACCEPTABLE_PROTOCOL_VERSION = 1
RETURN_CODE_IDENTIFIER_REJECTED = 2
RETURN_CODE_SERVER_UNAVAILABLE = 3
RETURN_CODE_BAD_USER_NAME_OR_PASSWORD = 4
RETURN_CODE_NOT_AUTHORIZED = 5

_CONNACK_V311 = {
    0x00: RETURN_CODE_ACCEPTED,
    0x84: RETURN_CODE_UNACCEPTABLE_PROTOCOL_VERSION,  # Unsupported Protocol Version
    0x85: RETURN_CODE_IDENTIFIER_REJECTED,  # Client Identifier not valid
    0x86: RETURN_CODE_BAD_USER_NAME_OR_PASSWORD,  # Bad User Name or Password
    0x8C: RETURN_CODE_BAD_USER_NAME_OR_PASSWORD,  # Bad authentication method: credentials refused
    0x87: RETURN_CODE_NOT_AUTHORIZED,  # Not authorized
    0x8A: RETURN_CODE_NOT_AUTHORIZED,  # Banned: the Client is not authorized to connect
    0x88: RETURN_CODE_SERVER_UNAVAILABLE,  # Server unavailable
    0x89: RETURN_CODE_SERVER_UNAVAILABLE,  # Server busy
    0x9C: RETURN_CODE_SERVER_UNAVAILABLE,  # Use another server
    0x9D: RETURN_CODE_SERVER_UNAVAILABLE,  # Server moved
    0x9F: RETURN_CODE_SERVER_UNAVAILABLE,  # Connection rate exceeded
    0x97: RETURN_CODE_SERVER_UNAVAILABLE,  # Quota exceeded
}

# 3.1.1 return code -> the MQTT 5 reason code the decoder puts in Connack.reason_code.
CONNACK_FROM_V311 = {
    RETURN_CODE_ACCEPTED: 0x00,
    RETURN_CODE_UNACCEPTABLE_PROTOCOL_VERSION: 0x84,
    RETURN_CODE_IDENTIFIER_REJECTED: 0x85,
    RETURN_CODE_SERVER_UNAVAILABLE: 0x88,
    RETURN_CODE_BAD_USER_NAME_OR_PASSWORD: 0x86,
    RETURN_CODE_NOT_AUTHORIZED: 0x87,
}


def connack_return_code_v311(reason_code: int) -> int:
    """The MQTT 3.1.1 Connect Return code for an MQTT 5 CONNACK reason code.

    0x00 -> 0; 0x84 -> 1; 0x85 -> 2; 0x86 and 0x8C -> 4; 0x87 and 0x8A (Banned) -> 5;
    0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F -> 3 (Server unavailable). Every other code >= 0x80
    (Unspecified error, Implementation specific error, Malformed Packet, Protocol Error, Packet
    too large, Topic Name invalid, Payload format invalid, Retain / QoS not supported) also maps
    to 3: it is the one 3.1.1 refusal that blames neither the Client's identity nor its
    credentials. Note that for a CONNECT that does not conform to section 3.1 (Malformed Packet,
    Protocol Error) 3.1.1 wants the connection closed *without* a CONNACK [MQTT-3.1.4-1]; see
    :func:`connack_allowed_v311`. A code below 0x80 other than 0x00 is not a CONNACK code:
    ValueError.
    """
    rc = _CONNACK_V311.get(reason_code)
    if rc is not None:
        return rc
    if 0x80 <= reason_code <= 0xFF:
        return RETURN_CODE_SERVER_UNAVAILABLE
    raise ValueError(f"0x{reason_code:02X} is not a CONNACK reason code")


def connack_allowed_v311(reason_code: int) -> bool:
    """Whether a 3.1.1 Server may answer a refused CONNECT with a CONNACK at all.

    A CONNECT that does not conform to section 3.1 must be answered by closing the connection
    without a CONNACK [MQTT-3.1.4-1]; so 0x81 (Malformed Packet) and 0x82 (Protocol Error) ->
    False. Everything else (including 0x84, which 3.1.1 answers with return code 1
    [MQTT-3.1.2-2]) -> True.
    """
    return reason_code not in (0x81, 0x82)


def connack_reason_code_from_v311(return_code: int) -> int | None:
    """The MQTT 5 reason code for a 3.1.1 Connect Return code; None for reserved codes 6-255."""
    return CONNACK_FROM_V311.get(return_code)
