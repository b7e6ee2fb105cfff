"""Errors raised by the codec and the core. Each carries the MQTT 5 reason code it maps to."""

from __future__ import annotations


class MqttError(Exception):
    """A protocol-level error. ``reason_code`` is the MQTT 5 reason code (>= 0x80).

    ``rule`` is the normative requirement id that was broken, when there is one
    (e.g. ``"MQTT-3.1.2-11"``); it ends up in the log and the will timeline.
    """

    reason_code: int = 0x80

    def __init__(self, message: str, reason_code: int | None = None, rule: str | None = None,
                 *, send_disconnect: bool = True):
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code
        self.rule = rule
        # MQTT 5: whether the server sends DISCONNECT with the reason code before it closes
        # (4.13.1 allows either; a second CONNECT is closed without one: see core/disconnect.py)
        self.send_disconnect = send_disconnect
        # set by the decoder: the whole packets decoded before the bad bytes (acted on before the
        # connection closes), the packet type of the bad one, and the protocol level the CONNECT
        # asked for (None: not known)
        self.packets: list = []
        self.packet_type = None
        self.protocol_level: int | None = None

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} [{self.rule}]" if self.rule else base


class MalformedPacket(MqttError):
    reason_code = 0x81


class ProtocolError(MqttError):
    reason_code = 0x82


class PacketTooLarge(MqttError):
    reason_code = 0x95


class UnsupportedProtocolVersion(MqttError):
    reason_code = 0x84


class TopicNameInvalid(MqttError):
    reason_code = 0x90


class ConfigError(Exception):
    """A bad configuration key or value. The message names the key and what was expected; ``key`` is
    that key when the error is about one (None for a file that cannot be read, say)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key
