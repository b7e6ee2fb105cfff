"""The golden table: packets as bytes on the wire, with what they decode to or the error.

Each :class:`Case` has the raw bytes written out field by field. Good cases (``packet`` set)
must decode to ``packet`` and, unless ``encodes=False``, ``encode(packet, level)`` must give
back exactly ``raw``. Bad cases (``error`` set) must raise that MqttError subclass with
``reason_code`` and ``rule``.

``level`` is the protocol level of the connection (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0). A CONNECT
is decoded by a fresh server-side Decoder (the CONNECT itself sets the level); ``level=None``
also means a fresh server-side Decoder that has seen nothing yet. ``server_side=False`` marks
server->client packets (CONNACK, SUBACK, ...), decoded by a client-side Decoder.

Case names carry the id of the requirement a bad case breaks (dots and dashes as
underscores; ``v311`` where the id is the 3.1.1 one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lastwill.codec.decoder import Decoder
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
from lastwill.errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)


@dataclass(frozen=True)
class Case:
    name: str
    level: int | None
    raw: bytes
    packet: Any = None
    error: type[MqttError] | None = None
    reason_code: int | None = None
    rule: str | None = None
    server_side: bool = True
    encodes: bool = True
    max_packet_size: int | None = None
    match: str | None = None  # a substring the error message must contain

    @property
    def good(self) -> bool:
        return self.error is None

    @property
    def encode_level(self) -> int:
        return self.packet.protocol_level if isinstance(self.packet, Connect) else self.level

    def decoder(self) -> Decoder:
        kwargs = {} if self.max_packet_size is None else {"max_packet_size": self.max_packet_size}
        fresh = self.server_side and (self.level is None or self.raw[0] >> 4 == 1)
        if fresh:
            return Decoder(**kwargs)
        return Decoder(server_side=self.server_side, protocol_level=self.level, **kwargs)


def good(name, level, raw, packet, **kw) -> Case:
    return Case(name, level, raw, packet=packet, **kw)


def bad(name, level, raw, error, reason_code, rule=None, **kw) -> Case:
    return Case(name, level, raw, error=error, reason_code=reason_code, rule=rule, **kw)


M, P = MalformedPacket, ProtocolError

GOOD: list[Case] = [
    # ----------------------------------------------------------------- MQTT 3.1.1, client->server
    good(
        "connect_v311_minimal", 4,
        b"\x10"  # CONNECT, flags 0
        b"\x10"  # remaining length 16
        b"\x00\x04MQTT"  # protocol name "MQTT"
        b"\x04"  # protocol level 4
        b"\x02"  # connect flags: clean session
        b"\x00\x3c"  # keep alive 60
        b"\x00\x04abcd",  # client identifier "abcd"
        Connect(client_id="abcd", clean_start=True, keep_alive=60, protocol_level=4),
    ),
    good(
        "connect_v311_will_user_password", 4,
        b"\x10"  # CONNECT
        b"\x33"  # remaining length 51
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # protocol level 4
        b"\xee"  # flags: user name, password, will retain, will QoS 1, will, clean session
        b"\x00\x0a"  # keep alive 10
        b"\x00\x03cid"  # client identifier "cid"
        b"\x00\x0bclients/cid"  # will topic "clients/cid"
        b"\x00\x07offline"  # will payload b"offline"
        b"\x00\x04user"  # user name "user"
        b"\x00\x06secret",  # password b"secret"
        Connect(
            client_id="cid", clean_start=True, keep_alive=10, protocol_level=4,
            will=Will("clients/cid", b"offline", qos=1, retain=True), username="user", password=b"secret",
        ),
    ),
    good(
        "connect_v311_empty_client_id_keep_alive_0", 4,
        b"\x10"  # CONNECT
        b"\x0c"  # remaining length 12
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # protocol level 4
        b"\x00"  # flags: none (clean session 0)
        b"\x00\x00"  # keep alive 0
        b"\x00\x00",  # client identifier ""
        Connect(client_id="", clean_start=False, keep_alive=0, protocol_level=4),
    ),
    good(
        "connect_v311_bom_kept_v311_MQTT_1_5_3_3", 4,
        b"\x10"  # CONNECT
        b"\x11"  # remaining length 17
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # protocol level 4
        b"\x02"  # flags: clean session
        b"\x00\x3c"  # keep alive 60
        b"\x00\x05\xef\xbb\xbfid",  # client identifier U+FEFF "id": the BOM is kept
        Connect(client_id="\ufeffid", protocol_level=4),
    ),
    good(
        "connect_v31_mqisdp", 3,
        b"\x10"  # CONNECT
        b"\x12"  # remaining length 18
        b"\x00\x06MQIsdp"  # protocol name "MQIsdp" (MQTT 3.1)
        b"\x03"  # protocol level 3
        b"\x02"  # flags: clean session
        b"\x00\x3c"  # keep alive 60
        b"\x00\x04paho",  # client identifier "paho"
        Connect(client_id="paho", protocol_level=3, protocol_name="MQIsdp"),
    ),
    good(
        "connect_v31_with_will", 3,
        b"\x10"  # CONNECT
        b"\x18"  # remaining length 24
        b"\x00\x06MQIsdp"  # protocol name
        b"\x03"  # protocol level 3
        b"\x0e"  # flags: will QoS 1, will, clean session
        b"\x00\x1e"  # keep alive 30
        b"\x00\x02go"  # client identifier "go"
        b"\x00\x01w"  # will topic "w"
        b"\x00\x03bye",  # will payload
        Connect(client_id="go", keep_alive=30, protocol_level=3, protocol_name="MQIsdp", will=Will("w", b"bye", qos=1)),
    ),
    good(
        "publish_v311_qos0", 4,
        b"\x30"  # PUBLISH, QoS 0
        b"\x0a"  # remaining length 10
        b"\x00\x03a/b"  # topic name "a/b"
        b"hello",  # payload
        Publish("a/b", b"hello"),
    ),
    good(
        "publish_v311_qos1_dup_retain", 4,
        b"\x3b"  # PUBLISH, DUP 1, QoS 1, RETAIN 1
        b"\x08"  # remaining length 8
        b"\x00\x03a/b"  # topic name
        b"\x00\x07"  # packet identifier 7
        b"x",  # payload
        Publish("a/b", b"x", qos=1, retain=True, dup=True, packet_id=7),
    ),
    good(
        "publish_v311_qos2_empty_payload", 4,
        b"\x34"  # PUBLISH, QoS 2
        b"\x05"  # remaining length 5
        b"\x00\x01t"  # topic name "t"
        b"\x01\x02",  # packet identifier 258, no payload
        Publish("t", b"", qos=2, packet_id=258),
    ),
    good(
        "publish_v311_to_client", 4,
        b"\x32"  # PUBLISH, QoS 1
        b"\x07"  # remaining length 7
        b"\x00\x01t"  # topic name
        b"\xff\xff"  # packet identifier 65535
        b"!!",  # payload
        Publish("t", b"!!", qos=1, packet_id=65535), server_side=False,
    ),
    good("puback_v311", 4, b"\x40\x02" b"\x00\x07", Puback(7)),  # PUBACK, length 2, packet id 7
    good("pubrec_v311", 4, b"\x50\x02" b"\x00\x07", Pubrec(7)),  # PUBREC, length 2, packet id 7
    good("pubrel_v311", 4, b"\x62\x02" b"\x00\x07", Pubrel(7)),  # PUBREL (flags 0010), packet id 7
    good("pubcomp_v311", 4, b"\x70\x02" b"\x00\x07", Pubcomp(7)),  # PUBCOMP, length 2, packet id 7
    good(
        "subscribe_v311_two_filters", 4,
        b"\x82"  # SUBSCRIBE, flags 0010
        b"\x0e"  # remaining length 14
        b"\x00\x0a"  # packet identifier 10
        b"\x00\x03a/b" b"\x01"  # topic filter "a/b", requested QoS 1
        b"\x00\x03c/#" b"\x02",  # topic filter "c/#", requested QoS 2
        Subscribe(10, [Subscription("a/b", 1), Subscription("c/#", 2)]),
    ),
    good(
        "unsubscribe_v311", 4,
        b"\xa2"  # UNSUBSCRIBE, flags 0010
        b"\x0c"  # remaining length 12
        b"\x00\x0a"  # packet identifier 10
        b"\x00\x03a/b"  # topic filter "a/b"
        b"\x00\x03c/#",  # topic filter "c/#"
        Unsubscribe(10, ["a/b", "c/#"]),
    ),
    good("pingreq_v311", 4, b"\xc0\x00", Pingreq()),  # PINGREQ, remaining length 0
    good("disconnect_v311", 4, b"\xe0\x00", Disconnect()),  # DISCONNECT, remaining length 0
    good(
        "subscribe_v31_dup_flag", 3,
        b"\x8a"  # SUBSCRIBE with DUP: MQTT 3.1 set it on retransmission
        b"\x06"  # remaining length 6
        b"\x00\x01"  # packet identifier 1
        b"\x00\x01a" b"\x00",  # topic filter "a", QoS 0
        Subscribe(1, [Subscription("a", 0)]), encodes=False,
    ),
    # ----------------------------------------------------------------- MQTT 3.1.1, server->client
    good(
        "connack_v311_session_present", 4,
        b"\x20\x02"  # CONNACK, remaining length 2
        b"\x01"  # acknowledge flags: session present
        b"\x00",  # return code 0 (accepted)
        Connack(0, session_present=True), server_side=False,
    ),
    good(
        "connack_v311_not_authorized", 4,
        b"\x20\x02"  # CONNACK
        b"\x00"  # acknowledge flags
        b"\x05",  # return code 5 <- reason code 0x87 Not authorized
        Connack(0x87), server_side=False,
    ),
    good(
        "connack_v311_unacceptable_protocol_version", 4,
        b"\x20\x02" b"\x00" b"\x01",  # CONNACK, flags 0, return code 1 <- 0x84
        Connack(0x84), server_side=False,
    ),
    good(
        "connack_v311_identifier_rejected", 4,
        b"\x20\x02" b"\x00" b"\x02",  # CONNACK, flags 0, return code 2 <- 0x85
        Connack(0x85), server_side=False,
    ),
    good(
        "connack_v311_server_unavailable", 4,
        b"\x20\x02" b"\x00" b"\x03",  # CONNACK, flags 0, return code 3 <- 0x88
        Connack(0x88), server_side=False,
    ),
    good(
        "connack_v311_bad_user_name_or_password", 4,
        b"\x20\x02" b"\x00" b"\x04",  # CONNACK, flags 0, return code 4 <- 0x86
        Connack(0x86), server_side=False,
    ),
    good(
        "connack_v31_no_session_present_bit", 3,
        b"\x20\x02" b"\x00" b"\x00",  # CONNACK, reserved byte, return code 0
        Connack(0), server_side=False,
    ),
    good(
        "suback_v311_with_failure", 4,
        b"\x90"  # SUBACK
        b"\x05"  # remaining length 5
        b"\x00\x0a"  # packet identifier 10
        b"\x01\x02\x80",  # granted QoS 1, granted QoS 2, failure
        Suback(10, [1, 2, 0x80]), server_side=False,
    ),
    good("unsuback_v311", 4, b"\xb0\x02" b"\x00\x0a", Unsuback(10), server_side=False),  # UNSUBACK, id 10
    good("pingresp_v311", 4, b"\xd0\x00", Pingresp(), server_side=False),  # PINGRESP
    # ----------------------------------------------------------------- MQTT 5.0, client->server
    good(
        "connect_v5_minimal", 5,
        b"\x10"  # CONNECT
        b"\x11"  # remaining length 17
        b"\x00\x04MQTT"  # protocol name
        b"\x05"  # protocol version 5
        b"\x02"  # flags: clean start
        b"\x00\x3c"  # keep alive 60
        b"\x00"  # property length 0
        b"\x00\x04abcd",  # client identifier "abcd"
        Connect(client_id="abcd", protocol_level=5),
    ),
    good(
        "connect_v5_all_connect_properties", 5,
        b"\x10"  # CONNECT
        b"\x43"  # remaining length 67
        b"\x00\x04MQTT"  # protocol name
        b"\x05"  # protocol version 5
        b"\x02"  # flags: clean start
        b"\x00\x3c"  # keep alive 60
        b"\x34"  # property length 52
        b"\x11\x00\x00\x0e\x10"  # session_expiry_interval 3600 (Four Byte Integer)
        b"\x21\x00\x14"  # receive_maximum 20 (Two Byte Integer)
        b"\x27\x00\x10\x00\x00"  # maximum_packet_size 1048576
        b"\x22\x00\x0a"  # topic_alias_maximum 10
        b"\x19\x01"  # request_response_information 1 (Byte)
        b"\x17\x00"  # request_problem_information 0
        b"\x26\x00\x06region\x00\x02eu"  # user_property ("region", "eu") (UTF-8 String Pair)
        b"\x15\x00\x0bSCRAM-SHA-1"  # authentication_method "SCRAM-SHA-1" (UTF-8 string)
        b"\x16\x00\x02\x01\x02"  # authentication_data b"\x01\x02" (Binary Data)
        b"\x00\x02c1",  # client identifier "c1"
        Connect(
            client_id="c1", protocol_level=5,
            properties={
                "session_expiry_interval": 3600, "receive_maximum": 20, "maximum_packet_size": 1048576,
                "topic_alias_maximum": 10, "request_response_information": 1,
                "request_problem_information": 0, "user_property": [("region", "eu")],
                "authentication_method": "SCRAM-SHA-1", "authentication_data": b"\x01\x02",
            },
        ),
    ),
    good(
        "connect_v5_will_properties", 5,
        b"\x10"  # CONNECT
        b"\x5d"  # remaining length 93
        b"\x00\x04MQTT"  # protocol name
        b"\x05"  # protocol version 5
        b"\x96"  # flags: user name, will QoS 2, will, clean start
        b"\x00\x3c"  # keep alive 60
        b"\x00"  # property length 0
        b"\x00\x04dev1"  # client identifier "dev1"
        b"\x35"  # will property length 53
        b"\x18\x00\x00\x00\x1e"  # will_delay_interval 30
        b"\x01\x01"  # payload_format_indicator 1 (UTF-8)
        b"\x02\x00\x00\x00\x3c"  # message_expiry_interval 60
        b"\x03\x00\x0atext/plain"  # content_type "text/plain"
        b"\x08\x00\x06resp/x"  # response_topic "resp/x"
        b"\x09\x00\x02\xca\xfe"  # correlation_data b"\xca\xfe"
        b"\x26\x00\x01a\x00\x011"  # user_property ("a", "1")
        b"\x26\x00\x01a\x00\x012"  # user_property ("a", "2"): repeated, order kept
        b"\x00\x0bstatus/dev1"  # will topic "status/dev1"
        b"\x00\x04gone"  # will payload
        b"\x00\x01u",  # user name "u"
        Connect(
            client_id="dev1", protocol_level=5, username="u",
            will=Will(
                "status/dev1", b"gone", qos=2,
                properties={
                    "will_delay_interval": 30, "payload_format_indicator": 1, "message_expiry_interval": 60,
                    "content_type": "text/plain", "response_topic": "resp/x", "correlation_data": b"\xca\xfe",
                    "user_property": [("a", "1"), ("a", "2")],
                },
            ),
        ),
    ),
    good(
        "connect_v5_password_without_user_name", 5,
        b"\x10"  # CONNECT
        b"\x13"  # remaining length 19
        b"\x00\x04MQTT"  # protocol name
        b"\x05"  # protocol version 5
        b"\x42"  # flags: password, clean start (no user name: allowed in 5.0)
        b"\x00\x3c"  # keep alive 60
        b"\x00"  # property length 0
        b"\x00\x01x"  # client identifier "x"
        b"\x00\x03tok",  # password b"tok"
        Connect(client_id="x", protocol_level=5, password=b"tok"),
    ),
    good(
        "publish_v5_qos0", 5,
        b"\x30"  # PUBLISH, QoS 0
        b"\x08"  # remaining length 8
        b"\x00\x03a/b"  # topic name "a/b"
        b"\x00"  # property length 0
        b"hi",  # payload
        Publish("a/b", b"hi"),
    ),
    good(
        "publish_v5_qos1_publish_properties", 5,
        b"\x32"  # PUBLISH, QoS 1
        b"\x2d"  # remaining length 45
        b"\x00\x03a/b"  # topic name
        b"\x00\x09"  # packet identifier 9
        b"\x23"  # property length 35
        b"\x01\x01"  # payload_format_indicator 1
        b"\x02\x00\x00\x00\x78"  # message_expiry_interval 120
        b"\x23\x00\x05"  # topic_alias 5
        b"\x08\x00\x03r/1"  # response_topic "r/1"
        b"\x09\x00\x02id"  # correlation_data b"id"
        b"\x26\x00\x01k\x00\x01v"  # user_property ("k", "v")
        b"\x03\x00\x04json"  # content_type "json"
        b"{}",  # payload
        Publish(
            "a/b", b"{}", qos=1, packet_id=9,
            properties={
                "payload_format_indicator": 1, "message_expiry_interval": 120, "topic_alias": 5,
                "response_topic": "r/1", "correlation_data": b"id", "user_property": [("k", "v")],
                "content_type": "json",
            },
        ),
    ),
    good(
        "publish_v5_alias_with_empty_topic", 5,
        b"\x30"  # PUBLISH, QoS 0
        b"\x07"  # remaining length 7
        b"\x00\x00"  # topic name "" (the Topic Alias stands for it)
        b"\x03"  # property length 3
        b"\x23\x00\x01"  # topic_alias 1
        b"z",  # payload
        Publish("", b"z", properties={"topic_alias": 1}),
    ),
    good(
        "publish_v5_two_byte_remaining_length", 5,
        b"\x30"  # PUBLISH, QoS 0
        b"\xcc\x01"  # remaining length 204 (Variable Byte Integer, two bytes)
        b"\x00\x01t"  # topic name "t"
        b"\x00"  # property length 0
        + b"A" * 200,  # payload: 200 bytes
        Publish("t", b"A" * 200),
    ),
    good(
        "puback_v5_short", 5,
        b"\x40\x02" b"\x00\x01",  # PUBACK, length 2 (reason 0x00 and no properties omitted), id 1
        Puback(1),
    ),
    good(
        "puback_v5_reason_only", 5,
        b"\x40\x03" b"\x00\x01" b"\x10",  # PUBACK, length 3, id 1, reason 0x10 No matching subscribers
        Puback(1, 0x10), server_side=False,
    ),
    good(
        "puback_v5_reason_and_properties", 5,
        b"\x40"  # PUBACK
        b"\x12"  # remaining length 18
        b"\x00\x01"  # packet identifier 1
        b"\x87"  # reason code Not authorized
        b"\x0e"  # property length 14
        b"\x1f\x00\x04nope"  # reason_string "nope"
        b"\x26\x00\x01x\x00\x01y",  # user_property ("x", "y")
        Puback(1, 0x87, {"reason_string": "nope", "user_property": [("x", "y")]}),
    ),
    good(
        "pubrec_v5_reason", 5,
        b"\x50\x03" b"\x00\x02" b"\x91",  # PUBREC, length 3, id 2, Packet Identifier in use
        Pubrec(2, 0x91),
    ),
    good(
        "pubrel_v5_not_found", 5,
        b"\x62\x03" b"\x00\x03" b"\x92",  # PUBREL, length 3, id 3, Packet Identifier not found
        Pubrel(3, 0x92),
    ),
    good(
        "pubcomp_v5_properties", 5,
        b"\x70"  # PUBCOMP
        b"\x09"  # remaining length 9
        b"\x00\x04"  # packet identifier 4
        b"\x00"  # reason code Success
        b"\x05"  # property length 5
        b"\x1f\x00\x02ok",  # reason_string "ok"
        Pubcomp(4, 0, {"reason_string": "ok"}),
    ),
    good(
        "subscribe_v5_options_and_properties", 5,
        b"\x82"  # SUBSCRIBE
        b"\x1f"  # remaining length 31
        b"\x00\x01"  # packet identifier 1
        b"\x09"  # property length 9
        b"\x0b\x05"  # subscription_identifier 5 (Variable Byte Integer)
        b"\x26\x00\x01s\x00\x01t"  # user_property ("s", "t")
        b"\x00\x03a/+" b"\x2d"  # "a/+": QoS 1, no local, retain as published, retain handling 2
        b"\x00\x0a$share/g/x" b"\x10",  # "$share/g/x": QoS 0, retain handling 1
        Subscribe(
            1,
            [
                Subscription("a/+", qos=1, no_local=True, retain_as_published=True, retain_handling=2),
                Subscription("$share/g/x", qos=0, retain_handling=1),
            ],
            {"subscription_identifier": 5, "user_property": [("s", "t")]},
        ),
    ),
    good(
        "unsubscribe_v5", 5,
        b"\xa2"  # UNSUBSCRIBE
        b"\x12"  # remaining length 18
        b"\x00\x02"  # packet identifier 2
        b"\x07"  # property length 7
        b"\x26\x00\x01u\x00\x01v"  # user_property ("u", "v")
        b"\x00\x03a/+"  # topic filter "a/+"
        b"\x00\x01b",  # topic filter "b"
        Unsubscribe(2, ["a/+", "b"], {"user_property": [("u", "v")]}),
    ),
    good("pingreq_v5", 5, b"\xc0\x00", Pingreq()),  # PINGREQ
    good("disconnect_v5_short", 5, b"\xe0\x00", Disconnect()),  # DISCONNECT, length 0: Normal disconnection
    good(
        "disconnect_v5_with_will_message", 5,
        b"\xe0\x01" b"\x04",  # DISCONNECT, length 1, reason Disconnect with Will Message
        Disconnect(0x04),
    ),
    good(
        "disconnect_v5_properties", 5,
        b"\xe0"  # DISCONNECT
        b"\x0e"  # remaining length 14
        b"\x00"  # reason Normal disconnection
        b"\x0c"  # property length 12
        b"\x11\x00\x00\x00\x00"  # session_expiry_interval 0
        b"\x1f\x00\x04bye!",  # reason_string "bye!"
        Disconnect(0, {"session_expiry_interval": 0, "reason_string": "bye!"}),
    ),
    good(
        "auth_v5_continue", 5,
        b"\xf0"  # AUTH
        b"\x16"  # remaining length 22
        b"\x18"  # reason Continue authentication
        b"\x14"  # property length 20
        b"\x15\x00\x05SCRAM"  # authentication_method "SCRAM"
        b"\x16\x00\x02\x00\x01"  # authentication_data b"\x00\x01"
        b"\x1f\x00\x04step",  # reason_string "step"
        Auth(0x18, {"authentication_method": "SCRAM", "authentication_data": b"\x00\x01", "reason_string": "step"}),
    ),
    # ----------------------------------------------------------------- MQTT 5.0, server->client
    good(
        "connack_v5_all_properties", 5,
        b"\x20"  # CONNACK
        b"\x4e"  # remaining length 78
        b"\x00"  # acknowledge flags: no session present
        b"\x00"  # reason code Success
        b"\x4b"  # property length 75
        b"\x11\x00\x00\x00\x3c"  # session_expiry_interval 60
        b"\x21\x00\x64"  # receive_maximum 100
        b"\x24\x01"  # maximum_qos 1
        b"\x25\x01"  # retain_available 1
        b"\x27\x00\x01\x00\x00"  # maximum_packet_size 65536
        b"\x12\x00\x06auto-1"  # assigned_client_identifier "auto-1"
        b"\x22\x00\x10"  # topic_alias_maximum 16
        b"\x1f\x00\x07welcome"  # reason_string "welcome"
        b"\x26\x00\x01a\x00\x01b"  # user_property ("a", "b")
        b"\x28\x01"  # wildcard_subscription_available 1
        b"\x29\x01"  # subscription_identifier_available 1
        b"\x2a\x00"  # shared_subscription_available 0
        b"\x13\x00\x1e"  # server_keep_alive 30
        b"\x1a\x00\x04resp"  # response_information "resp"
        b"\x1c\x00\x02s2"  # server_reference "s2"
        b"\x15\x00\x01m"  # authentication_method "m"
        b"\x16\x00\x01d",  # authentication_data b"d"
        Connack(
            0, False,
            {
                "session_expiry_interval": 60, "receive_maximum": 100, "maximum_qos": 1, "retain_available": 1,
                "maximum_packet_size": 65536, "assigned_client_identifier": "auto-1", "topic_alias_maximum": 16,
                "reason_string": "welcome", "user_property": [("a", "b")], "wildcard_subscription_available": 1,
                "subscription_identifier_available": 1, "shared_subscription_available": 0,
                "server_keep_alive": 30, "response_information": "resp", "server_reference": "s2",
                "authentication_method": "m", "authentication_data": b"d",
            },
        ),
        server_side=False,
    ),
    good(
        "connack_v5_session_present", 5,
        b"\x20\x03" b"\x01" b"\x00" b"\x00",  # CONNACK, session present, Success, property length 0
        Connack(0, True), server_side=False,
    ),
    good(
        "connack_v5_refused", 5,
        b"\x20\x03" b"\x00" b"\x87" b"\x00",  # CONNACK, flags 0, Not authorized, property length 0
        Connack(0x87), server_side=False,
    ),
    good(
        "publish_v5_subscription_identifiers_to_client", 5,
        b"\x30"  # PUBLISH, QoS 0
        b"\x0c"  # remaining length 12
        b"\x00\x03a/b"  # topic name
        b"\x05"  # property length 5
        b"\x0b\x01"  # subscription_identifier 1
        b"\x0b\xc8\x01"  # subscription_identifier 200 (two byte Variable Byte Integer)
        b"p",  # payload
        Publish("a/b", b"p", properties={"subscription_identifier": [1, 200]}), server_side=False,
    ),
    good(
        "suback_v5", 5,
        b"\x90"  # SUBACK
        b"\x0a"  # remaining length 10
        b"\x00\x01"  # packet identifier 1
        b"\x04"  # property length 4
        b"\x1f\x00\x01r"  # reason_string "r"
        b"\x01\x00\xa2",  # Granted QoS 1, Granted QoS 0, Wildcard Subscriptions not supported
        Suback(1, [1, 0, 0xA2], {"reason_string": "r"}), server_side=False,
    ),
    good(
        "unsuback_v5", 5,
        b"\xb0"  # UNSUBACK
        b"\x05"  # remaining length 5
        b"\x00\x02"  # packet identifier 2
        b"\x00"  # property length 0
        b"\x00\x11",  # Success, No subscription existed
        Unsuback(2, [0, 0x11]), server_side=False,
    ),
    good("pingresp_v5", 5, b"\xd0\x00", Pingresp(), server_side=False),  # PINGRESP
    good(
        "disconnect_v5_server_reference_to_client", 5,
        b"\xe0"  # DISCONNECT
        b"\x0f"  # remaining length 15
        b"\x9c"  # reason Use another server
        b"\x0d"  # property length 13
        b"\x1c\x00\x0aother:1883",  # server_reference "other:1883"
        Disconnect(0x9C, {"server_reference": "other:1883"}), server_side=False,
    ),
    good("auth_v5_success_short", 5, b"\xf0\x00", Auth(), server_side=False),  # AUTH, length 0: Success
]


def _connect5(flags: bytes, rest: bytes, props: bytes = b"\x00", level: bytes = b"\x05") -> bytes:
    """A CONNECT with the fixed header computed: for bad cases about later fields only."""
    body = b"\x00\x04MQTT" + level + flags + b"\x00\x3c" + props + rest
    assert len(body) < 128
    return b"\x10" + bytes((len(body),)) + body


def _connect4(flags: bytes, rest: bytes) -> bytes:
    return _connect5(flags, rest, props=b"", level=b"\x04")


BAD: list[Case] = [
    # ----------------------------------------------------------------- data representations
    bad(
        "publish_topic_null_MQTT_1_5_4_2", 5,
        b"\x30\x06"  # PUBLISH, remaining length 6
        b"\x00\x03a\x00b"  # topic name "a" U+0000 "b"
        b"\x00",  # property length 0
        M, 0x81, "MQTT-1.5.4-2", match="PUBLISH topic name contains the null character",
    ),
    bad(
        "publish_topic_null_v311_MQTT_1_5_3_2", 4,
        b"\x30\x05"  # PUBLISH, remaining length 5
        b"\x00\x03a\x00b",  # topic name with U+0000
        M, 0x81, "MQTT-1.5.3-2",
    ),
    bad(
        "publish_topic_surrogate_MQTT_1_5_4_1", 5,
        b"\x30\x06"  # PUBLISH, remaining length 6
        b"\x00\x03\xed\xa0\x80"  # topic name: U+D800 encoded as UTF-8
        b"\x00",  # property length 0
        M, 0x81, "MQTT-1.5.4-1", match="surrogate",
    ),
    bad(
        "connect_client_id_bad_utf8_MQTT_1_5_4_1", None,
        _connect5(b"\x02", b"\x00\x02\xc3\x28"),  # client identifier: 0xC3 then a non-continuation byte
        M, 0x81, "MQTT-1.5.4-1", match="client identifier",
    ),
    bad(
        "subscribe_filter_overlong_null_v311_MQTT_1_5_3_1", 4,
        b"\x82\x07"  # SUBSCRIBE, remaining length 7
        b"\x00\x01"  # packet identifier 1
        b"\x00\x02\xc0\x80"  # topic filter: overlong encoding of U+0000
        b"\x00",  # QoS 0
        M, 0x81, "MQTT-1.5.3-1",
    ),
    bad(
        "user_property_value_null_MQTT_1_5_4_2", 5,
        b"\x30\x0d"  # PUBLISH, remaining length 13
        b"\x00\x01t"  # topic name
        b"\x09"  # property length 9
        b"\x26\x00\x01k\x00\x03v\x00w",  # user_property ("k", "v" U+0000 "w")
        M, 0x81, "MQTT-1.5.4-2", match="user_property value",
    ),
    bad(
        "remaining_length_not_minimal_MQTT_1_5_5_1", 4,
        b"\xc0"  # PINGREQ
        b"\x80\x00",  # remaining length 0 in two bytes
        M, 0x81, "MQTT-1.5.5-1",
    ),
    bad(
        "remaining_length_five_bytes", 5,
        b"\x30"  # PUBLISH
        b"\xff\xff\xff\xff\x7f",  # remaining length: continuation bit on the fourth byte
        M, 0x81, None, match="longer than four bytes",
    ),
    bad(
        "property_length_not_minimal_MQTT_1_5_5_1", 5,
        b"\x30\x05"  # PUBLISH, remaining length 5
        b"\x00\x01t"  # topic name
        b"\x80\x00",  # property length 0 in two bytes
        M, 0x81, "MQTT-1.5.5-1",
    ),
    # ----------------------------------------------------------------- fixed header
    bad("connect_fixed_header_flags_MQTT_2_1_3_1", None, b"\x11\x00", M, 0x81, "MQTT-2.1.3-1"),  # CONNECT, flags 0001
    bad("puback_fixed_header_flags_v311_MQTT_2_2_2_1", 4, b"\x41\x02\x00\x01", M, 0x81, "MQTT-2.2.2-1"),
    bad("pingreq_fixed_header_flags_MQTT_2_1_3_1", 5, b"\xc8\x00", M, 0x81, "MQTT-2.1.3-1"),  # PINGREQ, flags 1000
    bad("pubrel_fixed_header_flags_MQTT_3_6_1_1", 5, b"\x60\x02\x00\x01", M, 0x81, "MQTT-3.6.1-1"),  # PUBREL, flags 0000
    bad(
        "subscribe_fixed_header_flags_MQTT_3_8_1_1", 4,
        b"\x80\x06" b"\x00\x01" b"\x00\x01a" b"\x00",  # SUBSCRIBE with flags 0000
        M, 0x81, "MQTT-3.8.1-1",
    ),
    bad(
        "unsubscribe_fixed_header_flags_MQTT_3_10_1_1", 5,
        b"\xa3\x06" b"\x00\x01" b"\x00" b"\x00\x01a",  # UNSUBSCRIBE with flags 0011
        M, 0x81, "MQTT-3.10.1-1",
    ),
    bad("disconnect_fixed_header_flags_MQTT_3_14_1_1", 5, b"\xe1\x00", M, 0x81, "MQTT-3.14.1-1"),
    bad("auth_fixed_header_flags_MQTT_3_15_1_1", 5, b"\xf2\x00", M, 0x81, "MQTT-3.15.1-1"),
    bad(
        "subscribe_dup_flag_v311_MQTT_3_8_1_1", 4,
        b"\x8a\x06" b"\x00\x01" b"\x00\x01a" b"\x00",  # SUBSCRIBE with DUP: only MQTT 3.1 allowed it
        M, 0x81, "MQTT-3.8.1-1",
    ),
    bad(
        "publish_qos3_MQTT_3_3_1_4", 5,
        b"\x36\x05" b"\x00\x01t" b"\x00\x01",  # PUBLISH with both QoS bits set
        M, 0x81, "MQTT-3.3.1-4",
    ),
    bad(
        "publish_dup_qos0_MQTT_3_3_1_2", 4,
        b"\x38\x03" b"\x00\x01t",  # PUBLISH, DUP 1, QoS 0
        M, 0x81, "MQTT-3.3.1-2",
    ),
    bad("packet_type_0_forbidden", 5, b"\x00\x00", M, 0x81, None, match="type 0"),
    bad("auth_packet_type_reserved_v311", 4, b"\xf0\x00", M, 0x81, None, match="reserved"),
    bad("first_packet_not_connect_MQTT_3_1_0_1", None, b"\xc0\x00", P, 0x82, "MQTT-3.1.0-1"),
    bad("first_packet_publish_MQTT_3_1_0_1", None, b"\x30\x03\x00\x01t", P, 0x82, "MQTT-3.1.0-1"),
    bad("connack_from_client", 5, b"\x20\x03\x00\x00\x00", P, 0x82, None, match="Server to Client"),
    bad("suback_from_client", 4, b"\x90\x03\x00\x01\x00", P, 0x82, None),
    bad("pingresp_from_client", 4, b"\xd0\x00", P, 0x82, None),
    bad("subscribe_from_server", 5, b"\x82\x06\x00\x01\x00\x00\x01a", P, 0x82, None, server_side=False),
    bad("connect_from_server", 5, b"\x10\x00", P, 0x82, None, server_side=False),
    bad(
        "packet_too_large_MQTT_3_2_2_15", 5,
        b"\x30"  # PUBLISH
        b"\xc8\x01",  # remaining length 200: rejected before any of the body arrives
        PacketTooLarge, 0x95, "MQTT-3.2.2-15", max_packet_size=100,
    ),
    bad(
        "packet_too_large_v311", 4,
        b"\x30\xc8\x01",  # PUBLISH, remaining length 200 (no Maximum Packet Size rule in 3.1.1)
        PacketTooLarge, 0x95, None, max_packet_size=100,
    ),
    bad(
        "packet_too_large_to_client_MQTT_3_1_2_24", 5,
        b"\x30\xc8\x01",  # PUBLISH from the Server, remaining length 200
        PacketTooLarge, 0x95, "MQTT-3.1.2-24", max_packet_size=100, server_side=False,
    ),
    bad(
        "packet_too_large_counts_fixed_header_MQTT_3_2_2_15", 5,
        b"\x30\x63",  # PUBLISH, remaining length 99: 101 bytes with the fixed header
        PacketTooLarge, 0x95, "MQTT-3.2.2-15", max_packet_size=100,
    ),
    # ----------------------------------------------------------------- CONNECT
    bad(
        "connect_protocol_name_MQTT_3_1_2_1", None,
        b"\x10\x0d" b"\x00\x04MQTX" b"\x04" b"\x02" b"\x00\x3c" b"\x00\x01a",  # protocol name "MQTX"
        P, 0x82, "MQTT-3.1.2-1",
    ),
    bad(
        "connect_protocol_level_6_MQTT_3_1_2_2", None,
        _connect5(b"\x02", b"\x00\x01a", level=b"\x06"),  # protocol level 6
        UnsupportedProtocolVersion, 0x84, "MQTT-3.1.2-2",
    ),
    bad(
        "connect_mqisdp_level_4_MQTT_3_1_2_2", None,
        b"\x10\x0f" b"\x00\x06MQIsdp" b"\x04" b"\x02" b"\x00\x3c" b"\x00\x01a",  # "MQIsdp" with level 4
        UnsupportedProtocolVersion, 0x84, "MQTT-3.1.2-2",
    ),
    bad(
        "connect_mqtt_level_3_MQTT_3_1_2_2", None,
        b"\x10\x0d" b"\x00\x04MQTT" b"\x03" b"\x02" b"\x00\x3c" b"\x00\x01a",  # "MQTT" with level 3
        UnsupportedProtocolVersion, 0x84, "MQTT-3.1.2-2",
    ),
    bad(
        "connect_reserved_flag_MQTT_3_1_2_3", None,
        _connect5(b"\x03", b"\x00\x01a"),  # connect flags: clean start + reserved bit 0
        M, 0x81, "MQTT-3.1.2-3",
    ),
    bad(
        "connect_reserved_flag_v311_MQTT_3_1_2_3", None,
        _connect4(b"\x01", b"\x00\x01a"),  # connect flags: reserved bit 0
        M, 0x81, "MQTT-3.1.2-3",
    ),
    bad(
        "connect_will_qos_without_will_MQTT_3_1_2_11", None,
        _connect5(b"\x0a", b"\x00\x01a"),  # flags: will QoS 1, clean start, no will flag
        M, 0x81, "MQTT-3.1.2-11",
    ),
    bad(
        "connect_will_qos_without_will_v311_MQTT_3_1_2_13", None,
        _connect4(b"\x0a", b"\x00\x01a"),
        M, 0x81, "MQTT-3.1.2-13",
    ),
    bad(
        "connect_will_retain_without_will_MQTT_3_1_2_13", None,
        _connect5(b"\x22", b"\x00\x01a"),  # flags: will retain, clean start, no will flag
        M, 0x81, "MQTT-3.1.2-13",
    ),
    bad(
        "connect_will_retain_without_will_v311_MQTT_3_1_2_15", None,
        _connect4(b"\x22", b"\x00\x01a"),
        M, 0x81, "MQTT-3.1.2-15",
    ),
    bad(
        "connect_will_qos3_MQTT_3_1_2_12", None,
        _connect5(b"\x1e", b"\x00\x01a" b"\x00" b"\x00\x01w" b"\x00\x00"),  # will flag, will QoS 3
        M, 0x81, "MQTT-3.1.2-12",
    ),
    bad(
        "connect_will_qos3_v311_MQTT_3_1_2_14", None,
        _connect4(b"\x1e", b"\x00\x01a" b"\x00\x01w" b"\x00\x00"),
        M, 0x81, "MQTT-3.1.2-14",
    ),
    bad(
        "connect_password_without_user_name_v311_MQTT_3_1_2_22", None,
        _connect4(b"\x42", b"\x00\x01a" b"\x00\x02pw"),  # flags: password, clean session
        M, 0x81, "MQTT-3.1.2-22",
    ),
    bad(
        "connect_will_fields_missing_MQTT_3_1_2_9", None,
        _connect5(b"\x06", b"\x00\x01a"),  # will flag set, payload ends after the client identifier
        M, 0x81, "MQTT-3.1.2-9",
    ),
    bad(
        "connect_user_name_missing_MQTT_3_1_2_17", None,
        _connect5(b"\x82", b"\x00\x01a"),  # user name flag set, no user name
        M, 0x81, "MQTT-3.1.2-17",
    ),
    bad(
        "connect_user_name_missing_v311_MQTT_3_1_2_19", None,
        _connect4(b"\x82", b"\x00\x01a"),
        M, 0x81, "MQTT-3.1.2-19",
    ),
    bad(
        "connect_password_missing_MQTT_3_1_2_19", None,
        _connect5(b"\x42", b"\x00\x01a"),  # password flag set, no password
        M, 0x81, "MQTT-3.1.2-19",
    ),
    bad(
        "connect_trailing_bytes_MQTT_3_1_4_1", None,
        _connect5(b"\x02", b"\x00\x01a" b"\x00\x01u"),  # a user name the flags do not announce
        M, 0x81, "MQTT-3.1.4-1",
    ),
    bad(
        "connect_truncated_protocol_name", None,
        b"\x10\x04" b"\x00\x04MQ",  # protocol name cut short
        M, 0x81, None,
    ),
    bad(
        "connect_authentication_data_without_method", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x04" b"\x16\x00\x01x"),  # authentication_data only
        P, 0x82, None, match="authentication_method",
    ),
    bad(
        "connect_property_not_valid_topic_alias", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x03" b"\x23\x00\x01"),  # topic_alias in CONNECT
        M, 0x81, None, match="topic_alias",
    ),
    bad(
        "will_property_not_valid_session_expiry", None,
        _connect5(
            b"\x06",
            b"\x00\x01a"  # client identifier
            b"\x05\x11\x00\x00\x00\x01"  # will properties: session_expiry_interval (not valid there)
            b"\x00\x01w\x00\x00",  # will topic, will payload
        ),
        M, 0x81, None, match="Will Properties",
    ),
    bad(
        "connect_duplicate_session_expiry_interval", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x0a" b"\x11\x00\x00\x00\x01" b"\x11\x00\x00\x00\x02"),
        P, 0x82, None, match="more than once",
    ),
    bad(
        "connect_receive_maximum_0", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x03" b"\x21\x00\x00"),
        P, 0x82, None, match="receive_maximum",
    ),
    bad(
        "connect_maximum_packet_size_0", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x05" b"\x27\x00\x00\x00\x00"),
        P, 0x82, None, match="maximum_packet_size",
    ),
    bad(
        "connect_request_problem_information_2", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x02" b"\x17\x02"),
        P, 0x82, None, match="request_problem_information",
    ),
    bad(
        "connect_request_response_information_2", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x02" b"\x19\x02"),
        P, 0x82, None, match="request_response_information",
    ),
    bad(
        "connect_unknown_property", None,
        _connect5(b"\x02", b"\x00\x01a", props=b"\x02" b"\x7f\x00"),  # property identifier 0x7F
        M, 0x81, None, match="unknown property identifier 0x7F",
    ),
    bad(
        "connect_property_length_overruns_packet", None,
        _connect5(b"\x02", b"", props=b"\x30"),  # property length 48, nothing after it
        M, 0x81, None, match="property length",
    ),
    bad(
        "will_response_topic_wildcard_MQTT_3_3_2_14", None,
        _connect5(
            b"\x06",
            b"\x00\x01a"  # client identifier
            b"\x04\x08\x00\x01#"  # will properties: response_topic "#"
            b"\x00\x01w\x00\x00",  # will topic, will payload
        ),
        P, 0x82, "MQTT-3.3.2-14",
    ),
    # ----------------------------------------------------------------- PUBLISH
    bad(
        "publish_topic_wildcard_plus_MQTT_3_3_2_2", 5,
        b"\x30\x06" b"\x00\x03a/+" b"\x00",  # topic name "a/+"
        TopicNameInvalid, 0x90, "MQTT-3.3.2-2", match="wildcard '+'",
    ),
    bad(
        "publish_topic_wildcard_hash_v311_MQTT_3_3_2_2", 4,
        b"\x30\x05" b"\x00\x03a/#",  # topic name "a/#"
        TopicNameInvalid, 0x90, "MQTT-3.3.2-2", match="wildcard '#'",
    ),
    bad(
        "publish_packet_id_0_MQTT_2_2_1_3", 5,
        b"\x32\x06" b"\x00\x01t" b"\x00\x00" b"\x00",  # QoS 1, packet identifier 0
        P, 0x82, "MQTT-2.2.1-3",
    ),
    bad(
        "publish_packet_id_0_v311_MQTT_2_3_1_1", 4,
        b"\x34\x05" b"\x00\x01t" b"\x00\x00",  # QoS 2, packet identifier 0
        P, 0x82, "MQTT-2.3.1-1",
    ),
    bad(
        "publish_packet_id_0_to_client_MQTT_2_2_1_4", 5,
        b"\x32\x06" b"\x00\x01t" b"\x00\x00" b"\x00",
        P, 0x82, "MQTT-2.2.1-4", server_side=False,
    ),
    bad(
        "publish_empty_topic_without_alias_MQTT_4_7_3_1", 5,
        b"\x30\x04" b"\x00\x00" b"\x00" b"x",  # topic name "", no topic_alias
        P, 0x82, "MQTT-4.7.3-1",
    ),
    bad(
        "publish_empty_topic_v311_MQTT_4_7_3_1", 4,
        b"\x30\x03" b"\x00\x00" b"x",
        P, 0x82, "MQTT-4.7.3-1",
    ),
    bad(
        "publish_topic_alias_0_MQTT_3_3_2_8", 5,
        b"\x30\x07" b"\x00\x01t" b"\x03\x23\x00\x00",  # topic_alias 0
        P, 0x82, "MQTT-3.3.2-8",
    ),
    bad(
        "publish_subscription_identifier_from_client_MQTT_3_3_4_6", 5,
        b"\x30\x06" b"\x00\x01t" b"\x02\x0b\x01",  # subscription_identifier 1 in a Client's PUBLISH
        P, 0x82, "MQTT-3.3.4-6",
    ),
    bad(
        "publish_subscription_identifier_0_to_client", 5,
        b"\x30\x06" b"\x00\x01t" b"\x02\x0b\x00",  # subscription_identifier 0
        P, 0x82, None, match="subscription_identifier", server_side=False,
    ),
    bad(
        "publish_duplicate_content_type", 5,
        b"\x30\x0c" b"\x00\x01t" b"\x08" b"\x03\x00\x01a" b"\x03\x00\x01b",  # content_type twice
        P, 0x82, None, match="content_type appears more than once",
    ),
    bad(
        "publish_duplicate_topic_alias", 5,
        b"\x30\x0a" b"\x00\x01t" b"\x06" b"\x23\x00\x01" b"\x23\x00\x02",
        P, 0x82, None, match="more than once",
    ),
    bad(
        "publish_payload_format_indicator_2", 5,
        b"\x30\x06" b"\x00\x01t" b"\x02\x01\x02",
        P, 0x82, None, match="payload_format_indicator",
    ),
    bad(
        "publish_property_not_valid_reason_string", 5,
        b"\x30\x09" b"\x00\x01t" b"\x05\x1f\x00\x02no",  # reason_string is not valid in PUBLISH
        M, 0x81, None, match="reason_string",
    ),
    bad(
        "publish_response_topic_wildcard_MQTT_3_3_2_14", 5,
        b"\x30\x09" b"\x00\x01t" b"\x05\x08\x00\x02a+",  # response_topic "a+"
        P, 0x82, "MQTT-3.3.2-14",
    ),
    bad(
        "publish_property_value_overruns_properties", 5,
        b"\x30\x09" b"\x00\x01t" b"\x02\x02\x00\x00\x00\x01",  # property length 2, then a 4 byte value
        M, 0x81, None,
    ),
    bad(
        "publish_truncated_topic", 5,
        b"\x30\x04" b"\x00\x0aab",  # topic name length 10, 2 bytes in the packet
        M, 0x81, None, match="PUBLISH topic name",
    ),
    bad(
        "publish_missing_packet_id", 4,
        b"\x32\x04" b"\x00\x01t" b"\x00",  # QoS 1, one byte where the packet identifier should be
        M, 0x81, None, match="packet identifier",
    ),
    bad(
        "publish_v5_missing_property_length", 5,
        b"\x30\x03" b"\x00\x01t",  # no property length
        M, 0x81, None, match="property length",
    ),
    # ----------------------------------------------------------------- PUBACK, PUBREC, PUBREL, PUBCOMP
    bad("puback_packet_id_0_MQTT_2_2_1_5", 5, b"\x40\x02\x00\x00", P, 0x82, "MQTT-2.2.1-5"),
    bad("pubrec_packet_id_0_v311_MQTT_2_3_1_6", 4, b"\x50\x02\x00\x00", P, 0x82, "MQTT-2.3.1-6"),
    bad("puback_v311_length_3", 4, b"\x40\x03\x00\x01\x00", M, 0x81, None, match="must be 2"),
    bad("puback_length_1", 5, b"\x40\x01\x00", M, 0x81, None, match="at least 2"),
    bad("puback_reason_MQTT_3_4_2_1", 5, b"\x40\x03\x00\x01\x01", P, 0x82, "MQTT-3.4.2-1"),
    bad("pubrec_reason_MQTT_3_5_2_1", 5, b"\x50\x03\x00\x01\x92", P, 0x82, "MQTT-3.5.2-1"),
    bad("pubrel_reason_MQTT_3_6_2_1", 5, b"\x62\x03\x00\x01\x10", P, 0x82, "MQTT-3.6.2-1"),
    bad("pubcomp_reason_MQTT_3_7_2_1", 5, b"\x70\x03\x00\x01\x80", P, 0x82, "MQTT-3.7.2-1"),
    bad(
        "puback_bytes_after_properties", 5,
        b"\x40\x05" b"\x00\x01" b"\x00" b"\x00" b"\xff",  # id, reason, property length 0, stray byte
        M, 0x81, None, match="unexpected",
    ),
    bad(
        "pubrel_property_not_valid", 5,
        b"\x62\x06" b"\x00\x01" b"\x00" b"\x02\x24\x01",  # maximum_qos is a CONNACK property
        M, 0x81, None, match="maximum_qos",
    ),
    # ----------------------------------------------------------------- SUBSCRIBE
    bad("subscribe_no_filter_MQTT_3_8_3_2", 5, b"\x82\x03\x00\x01\x00", P, 0x82, "MQTT-3.8.3-2"),
    bad("subscribe_no_filter_v311_MQTT_3_8_3_3", 4, b"\x82\x02\x00\x01", P, 0x82, "MQTT-3.8.3-3"),
    bad(
        "subscribe_reserved_option_bits_MQTT_3_8_3_5", 5,
        b"\x82\x07" b"\x00\x01" b"\x00" b"\x00\x01a" b"\x41",  # options: bit 6 set
        M, 0x81, "MQTT-3.8.3-5",
    ),
    bad(
        "subscribe_qos3", 5,
        b"\x82\x07" b"\x00\x01" b"\x00" b"\x00\x01a" b"\x03",  # options: maximum QoS 3
        P, 0x82, None, match="maximum QoS",
    ),
    bad(
        "subscribe_retain_handling_3", 5,
        b"\x82\x07" b"\x00\x01" b"\x00" b"\x00\x01a" b"\x30",  # options: retain handling 3
        P, 0x82, None, match="retain handling",
    ),
    bad(
        "subscribe_reserved_qos_bits_v311_MQTT_3_8_3_4", 4,
        b"\x82\x06" b"\x00\x01" b"\x00\x01a" b"\x04",  # requested QoS byte 0x04
        M, 0x81, "MQTT-3-8.3-4",
    ),
    bad(
        "subscribe_qos3_v311_MQTT_3_8_3_4", 4,
        b"\x82\x06" b"\x00\x01" b"\x00\x01a" b"\x03",  # requested QoS 3
        M, 0x81, "MQTT-3-8.3-4",
    ),
    bad(
        "subscribe_packet_id_0_MQTT_2_2_1_3", 5,
        b"\x82\x07" b"\x00\x00" b"\x00" b"\x00\x01a" b"\x00",
        P, 0x82, "MQTT-2.2.1-3",
    ),
    bad(
        "subscribe_empty_filter_MQTT_4_7_3_1", 4,
        b"\x82\x05" b"\x00\x01" b"\x00\x00" b"\x00",  # topic filter ""
        P, 0x82, "MQTT-4.7.3-1",
    ),
    bad(
        "subscribe_missing_options", 5,
        b"\x82\x06" b"\x00\x01" b"\x00" b"\x00\x01a",  # topic filter without its options byte
        M, 0x81, None, match="options",
    ),
    bad(
        "subscribe_subscription_identifier_0", 5,
        b"\x82\x09" b"\x00\x01" b"\x02\x0b\x00" b"\x00\x01a" b"\x00",
        P, 0x82, None, match="subscription_identifier",
    ),
    bad(
        "subscribe_duplicate_subscription_identifier", 5,
        b"\x82\x0b" b"\x00\x01" b"\x04\x0b\x01\x0b\x02" b"\x00\x01a" b"\x00",
        P, 0x82, None, match="more than once",
    ),
    # ----------------------------------------------------------------- UNSUBSCRIBE
    bad("unsubscribe_no_filter_MQTT_3_10_3_2", 5, b"\xa2\x03\x00\x01\x00", P, 0x82, "MQTT-3.10.3-2"),
    bad("unsubscribe_no_filter_v311_MQTT_3_10_3_2", 4, b"\xa2\x02\x00\x01", P, 0x82, "MQTT-3.10.3-2"),
    bad(
        "unsubscribe_empty_filter_MQTT_4_7_3_1", 5,
        b"\xa2\x05" b"\x00\x01" b"\x00" b"\x00\x00",
        P, 0x82, "MQTT-4.7.3-1",
    ),
    bad(
        "unsubscribe_packet_id_0_v311_MQTT_2_3_1_1", 4,
        b"\xa2\x05" b"\x00\x00" b"\x00\x01a",
        P, 0x82, "MQTT-2.3.1-1",
    ),
    # ----------------------------------------------------------------- PINGREQ, DISCONNECT, AUTH
    bad("pingreq_with_body", 5, b"\xc0\x01\x00", M, 0x81, None, match="must be 0"),
    bad("disconnect_v311_with_body", 4, b"\xe0\x01\x00", M, 0x81, None, match="must be 0"),
    bad("disconnect_reason_MQTT_3_14_2_1", 5, b"\xe0\x01\x05", P, 0x82, "MQTT-3.14.2-1"),
    bad(
        "disconnect_session_expiry_from_server_MQTT_3_14_2_2", 5,
        b"\xe0\x07" b"\x8b" b"\x05\x11\x00\x00\x00\x01",  # session_expiry_interval from the Server
        P, 0x82, "MQTT-3.14.2-2", server_side=False,
    ),
    bad("auth_reason_MQTT_3_15_2_1", 5, b"\xf0\x02\x01\x00", P, 0x82, "MQTT-3.15.2-1"),
    # ----------------------------------------------------------------- server->client packets
    bad("connack_reserved_flags_MQTT_3_2_2_1", 5, b"\x20\x03\x02\x00\x00", M, 0x81, "MQTT-3.2.2-1", server_side=False),
    bad("connack_reason_MQTT_3_2_2_8", 5, b"\x20\x03\x00\x8b\x00", P, 0x82, "MQTT-3.2.2-8", server_side=False),
    bad(
        "connack_session_present_refused_MQTT_3_2_2_6", 5,
        b"\x20\x03\x01\x80\x00", P, 0x82, "MQTT-3.2.2-6", server_side=False,
    ),
    bad("connack_v311_return_code_6", 4, b"\x20\x02\x00\x06", P, 0x82, None, match="reserved", server_side=False),
    bad(
        "connack_v311_session_present_refused_MQTT_3_2_2_4", 4,
        b"\x20\x02\x01\x05", P, 0x82, "MQTT-3.2.2-4", server_side=False,
    ),
    bad("connack_v5_missing_property_length", 5, b"\x20\x02\x00\x00", M, 0x81, None, server_side=False),
    bad("suback_v311_code_MQTT_3_9_3_2", 4, b"\x90\x03\x00\x01\x03", P, 0x82, "MQTT-3.9.3-2", server_side=False),
    bad("suback_v5_code_MQTT_3_9_3_2", 5, b"\x90\x04\x00\x01\x00\x11", P, 0x82, "MQTT-3.9.3-2", server_side=False),
    bad("suback_packet_id_0_MQTT_2_2_1_6", 5, b"\x90\x04\x00\x00\x00\x00", P, 0x82, "MQTT-2.2.1-6", server_side=False),
    bad("suback_no_codes", 4, b"\x90\x02\x00\x01", P, 0x82, None, server_side=False),
    bad("unsuback_v5_code_MQTT_3_11_3_2", 5, b"\xb0\x04\x00\x01\x00\x10", P, 0x82, "MQTT-3.11.3-2", server_side=False),
    bad("unsuback_v311_with_payload", 4, b"\xb0\x03\x00\x01\x00", M, 0x81, None, server_side=False),
    bad("pingresp_with_body", 4, b"\xd0\x01\x00", M, 0x81, None, server_side=False),
]

CASES: list[Case] = GOOD + BAD


def _check_unique() -> None:
    names = [c.name for c in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, f"duplicate case names: {dupes}"


_check_unique()
