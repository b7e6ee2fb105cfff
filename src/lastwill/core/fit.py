"""The client's Maximum Packet Size (MQTT 5) applied to the packets the broker generates itself.

"The Server MUST NOT send packets exceeding Maximum Packet Size to the Client" [MQTT-3.1.2-24]. A
Reason String or User Property must not be sent when it would take a packet beyond that size
([MQTT-3.2.2-19] [MQTT-3.2.2-20] CONNACK, [MQTT-3.4.2-2] [MQTT-3.4.2-3] ... [MQTT-3.7.2-3] PUBACK to
PUBCOMP, [MQTT-3.9.2-1] [MQTT-3.9.2-2] SUBACK, [MQTT-3.11.2-1] [MQTT-3.11.2-2] UNSUBACK,
[MQTT-3.14.2-3] DISCONNECT, [MQTT-3.15.2-2] [MQTT-3.15.2-3] AUTH): ``fit`` drops them first, and
answers None when even the smallest form of the packet does not fit. What the broker does then
depends on the packet, and is decided where it is sent (core/outbox.py ``send``, core/connect.py).

PUBLISH packets are not fitted here: an Application Message too large for the client is discarded
for it as if sent [MQTT-3.1.2-25] (core/delivery.py ``transmit``, ``_resend_publish``).
"""

from __future__ import annotations

from dataclasses import replace

from ..codec.encoder import encode
from ..codec.packets import Connack, Disconnect, Pingresp, Puback, Pubcomp, Pubrec, Pubrel
from ..errors import PacketTooLarge
from ..logs import fast_logger

log = fast_logger("lastwill")

# the properties a receiver can do without: dropped first [MQTT-3.1.2-25] and the per-packet rules above
OPTIONAL_PROPERTIES = ("reason_string", "user_property")

# packets of at most 5 bytes when they carry no property (fixed header 2, packet id 2, reason code 1):
# a client whose Maximum Packet Size is at least that gets them without encoding them twice
_SMALL = (Puback, Pubrec, Pubrel, Pubcomp, Disconnect, Pingresp)
_SMALL_SIZE = 5


class TooLargeForClient(PacketTooLarge):
    """A packet the broker must send (an acknowledgement) does not fit in the client's Maximum Packet
    Size even without its optional properties: the connection cannot go on (DISCONNECT 0x95 when
    that fits, then close; the will is published as for any connection ended by an error)."""


def fit(packet, protocol_level: int, maximum: int):
    """``packet`` as it may be sent to a client whose Maximum Packet Size is ``maximum``: unchanged if it
    fits; without Reason String and User Property if that fits (a copy: the caller's packet is not
    changed); None if even that does not fit."""
    props = getattr(packet, "properties", None)
    if not props and type(packet) in _SMALL and maximum >= _SMALL_SIZE:
        return packet
    if len(encode(packet, protocol_level)) <= maximum:
        return packet
    if props and any(k in props for k in OPTIONAL_PROPERTIES):
        packet = replace(packet, properties={k: v for k, v in props.items() if k not in OPTIONAL_PROPERTIES})
        if len(encode(packet, protocol_level)) <= maximum:
            return packet
    return None


def not_sent(who: str, packet, protocol_level: int, maximum: int) -> None:
    """What follows when ``fit`` answered None for ``packet`` (it is not sent [MQTT-3.1.2-24]).

    A refusing CONNACK or a DISCONNECT: nothing more; the connection is closed right after it
    whether or not it is sent [MQTT-4.13.2-1]. (A CONNACK accepting the CONNECT never gets here: the
    CONNECT is refused before anything is stored when it would not fit, core/connect.py.)

    Any other packet (SUBACK, UNSUBACK, PUBACK, PUBREC, PUBREL, PUBCOMP, PINGRESP, AUTH) answers the
    client, which would wait for it in vain: the server must answer ([MQTT-3.8.4-1] [MQTT-3.10.4-4]
    [MQTT-4.3.2-4] [MQTT-4.3.3-8] [MQTT-4.3.3-11] [MQTT-3.12.4-1]) and must not send it [MQTT-3.1.2-24],
    so the connection cannot go on: TooLargeForClient is raised, and the core ends the connection as
    for a protocol error (DISCONNECT 0x95 Packet too large when that fits, then close; the will is
    published [MQTT-3.1.2-8]). [MQTT-3.1.2-25]'s "behave as if it had completed sending" is about an
    Application Message, which the client does not wait for."""
    name = type(packet).__name__.upper()
    smallest = size(_without_optional(packet), protocol_level)
    if type(packet) in (Connack, Disconnect):
        log.info("client_id=%s: %s 0x%02X not sent: %d bytes even without Reason String, above the client's "
                 "Maximum Packet Size %d [MQTT-3.1.2-24]", who, name, packet.reason_code, smallest, maximum)
        return
    raise TooLargeForClient(f"{name} of {smallest} bytes (without Reason String) exceeds the client's Maximum "
                            f"Packet Size {maximum}: it cannot be sent", rule="MQTT-3.1.2-24")


def _without_optional(packet):
    props = getattr(packet, "properties", None)
    if not props:
        return packet
    return replace(packet, properties={k: v for k, v in props.items() if k not in OPTIONAL_PROPERTIES})


def size(packet, protocol_level: int) -> int:
    """The packet's size in bytes as it would be sent."""
    return len(encode(packet, protocol_level))
