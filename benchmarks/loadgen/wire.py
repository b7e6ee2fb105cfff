"""The load generator's minimal MQTT encoding (client -> server packets only), and what it reads
back: the payload offset of a PUBLISH, the STAMP some scenarios put at the start of a payload."""

from __future__ import annotations

import struct

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PID2 = [i.to_bytes(2, "big") for i in range(65536)]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect_packet(client_id: str, level: int, keep_alive: int = 60, clean: bool = True,
                   will: tuple[str, bytes, int] | None = None, props: bytes = b"",
                   will_props: bytes = b"") -> bytes:
    """CONNECT; ``clean`` is Clean Session (3.1.1) / Clean Start (5). ``props`` and ``will_props``
    are MQTT 5 property bytes (see ``prop_u32``), ignored at level 4."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
    vh = utf8("MQTT") + bytes((level, flags)) + keep_alive.to_bytes(2, "big")
    if level == 5:
        vh += varint(len(props)) + props  # CONNECT properties
    pl = utf8(client_id)
    if will is not None:
        if level == 5:
            pl += varint(len(will_props)) + will_props  # will properties
        pl += utf8(will[0]) + utf8(will[1])
    return packet(0x10, vh + pl)


SESSION_EXPIRY_INTERVAL = 0x11  # MQTT 5 property ids (four-byte integers)
WILL_DELAY_INTERVAL = 0x18


def prop_u32(prop_id: int, value: int) -> bytes:
    return bytes((prop_id,)) + value.to_bytes(4, "big")


def payload_at(first: int, buf: bytes, h: int, level: int) -> int:
    """Offset of the payload of the PUBLISH whose variable header starts at ``h``: after the topic,
    the packet id (QoS > 0) and, in MQTT 5, the properties (a Variable Byte Integer length)."""
    p = h + 2 + ((buf[h] << 8) | buf[h + 1])
    if first & 0x06:
        p += 2
    if level == 5:
        n, mult = 0, 1
        while True:
            b = buf[p]
            p += 1
            n += (b & 127) * mult
            if b < 128:
                break
            mult <<= 7
        p += n
    return p


def subscribe_packet(pid: int, topic_filter: str, qos: int, level: int) -> bytes:
    return packet(0x82, PID2[pid] + (b"\x00" if level == 5 else b"") + utf8(topic_filter) + bytes((qos,)))


def publish_qos0(topic: str, payload: bytes, level: int) -> bytes:
    return packet(0x30, utf8(topic) + (b"\x00" if level == 5 else b"") + payload)


def publish_qos1_parts(topic: str, payload: bytes, level: int) -> tuple[bytes, bytes]:
    """(fixed header + topic, properties + payload): the packet id goes between them."""
    tail = (b"\x00" if level == 5 else b"") + payload
    rl = 2 + len(topic.encode()) + 2 + len(tail)
    return b"\x32" + varint(rl) + utf8(topic), tail


# what latency_qos1 and fanin_qos1_persistent put at the start of each payload:
# send time (time.perf_counter_ns of this process), publisher index, sequence number
STAMP = struct.Struct(">QII")
