"""Why a network connection ended, decided where it is known and carried as a value, never parsed back.

The edge builds a ``ConnectionEnded`` from what it saw (``lost(exc)`` classifies the exception type;
EOF, a client that does not read, an internal error are said explicitly); the core builds its own
for what it decides (keep-alive expiry, a protocol error with its reason code and rule, a takeover,
DISCONNECT, shutdown). The text (``detail``) is for people: logs, the will timeline, ``explain``.
The ``Cause`` is for the code: the will rule, the metrics' ``cause`` label, the ``$SYS`` reason.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum

from ..codec.reason_codes import ReasonCode


class Cause(StrEnum):
    """How a connection ended. The values are the labels of the metrics and of the timeline data,
    and what the store keeps (``cause_kind``): they never change."""

    NORMAL = "normal"  # DISCONNECT 0x00: the will is discarded [MQTT-3.14.4-3]
    EOF = "eof"
    RESET = "reset"
    NETWORK_ERROR = "network_error"
    KEEP_ALIVE = "keep_alive"
    PROTOCOL_ERROR = "protocol_error"
    TAKEOVER = "takeover"
    DISCONNECT_WITH_WILL = "disconnect_with_will"
    DISCONNECT_ERROR = "disconnect_error"
    NOT_READING = "not_reading"
    SERVER_SHUTDOWN = "server_shutdown"
    BROKER_CRASH = "broker_crash"
    BROKER_RESTART = "broker_restart"
    INTERNAL_ERROR = "internal_error"
    ADMINISTRATIVE = "administrative"  # an operator disconnected the client (admin API; MQTT 5: DISCONNECT 0x98)


# what each cause means, for the metrics' help and the docs
CAUSE_TEXT: dict[Cause, str] = {
    Cause.EOF: "the client closed the connection (EOF) without DISCONNECT",
    Cause.RESET: "the connection was reset (or the pipe broke)",
    Cause.NETWORK_ERROR: "another network error",
    Cause.KEEP_ALIVE: "nothing received from the client for 1.5 x Keep Alive",
    Cause.PROTOCOL_ERROR: "the client broke a rule of the protocol or sent a malformed packet",
    Cause.TAKEOVER: "a new connection took the client id over",
    Cause.DISCONNECT_WITH_WILL: "the client sent DISCONNECT 0x04 (disconnect with will message)",
    Cause.DISCONNECT_ERROR: "the client sent DISCONNECT with an error reason code",
    Cause.NOT_READING: "the server closed a client that kept sending but did not read its socket",
    Cause.SERVER_SHUTDOWN: "the broker shut down",
    Cause.BROKER_CRASH: "the broker crashed while the client was connected",
    Cause.BROKER_RESTART: "the broker restarted while the client was connected (shutdown_wills = keep)",
    Cause.INTERNAL_ERROR: "an internal error in the broker closed the connection",
    Cause.ADMINISTRATIVE: "an operator disconnected the client through the admin API",
}
# the causes a will can be published for (every one but a normal DISCONNECT), keyed by label
CAUSES: dict[str, str] = {cause.value: text for cause, text in CAUSE_TEXT.items()}

# lastwill's causes as EMQX names the reason of a disconnected event (emqx_sys.erl)
EMQX_REASONS: dict[Cause, str] = {
    Cause.NORMAL: "normal",
    Cause.EOF: "tcp_closed",
    Cause.RESET: "sock_error",
    Cause.NETWORK_ERROR: "sock_error",
    Cause.KEEP_ALIVE: "keepalive_timeout",
    Cause.TAKEOVER: "takenover",
    Cause.DISCONNECT_WITH_WILL: "disconnect_with_will_message",
    Cause.NOT_READING: "sock_error",
    Cause.SERVER_SHUTDOWN: "server_shutting_down",
    Cause.INTERNAL_ERROR: "internal_error",
    Cause.ADMINISTRATIVE: "kicked",  # EMQX's reason for a client kicked by its API
    Cause.BROKER_CRASH: "broker_crash",
    Cause.BROKER_RESTART: "broker_restart",
}


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """A connection ended: how (``cause``), in words (``detail``), the rule that applied, and the
    reason code when one decided it (a protocol error's, a DISCONNECT's)."""

    cause: Cause
    detail: str
    rule: str | None = None
    reason_code: int | None = None

    @property
    def normal(self) -> bool:
        return self.cause is Cause.NORMAL

    def emqx_reason(self) -> str:
        """The ``reason`` of the ``$SYS`` disconnected event, as EMQX names it (snake case)."""
        if self.cause in (Cause.PROTOCOL_ERROR, Cause.DISCONNECT_ERROR):
            code = self.reason_code
            if code is None:
                return self.cause.value
            try:
                return ReasonCode(code).name.lower()  # malformed_packet, protocol_error, ...
            except ValueError:
                return f"reason_code_0x{code:02x}"
        return EMQX_REASONS.get(self.cause, self.cause.value)


# the network errors that mean the peer reset the connection or the pipe broke
_RESET_TYPES = (ConnectionResetError, BrokenPipeError)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})


def lost(exc: BaseException | None) -> ConnectionEnded:
    """How a connection whose socket closed under us ended, from the exception the transport
    reported (None: the peer closed it cleanly, EOF). For the edge."""
    if exc is None:
        return ConnectionEnded(Cause.EOF, "connection lost: EOF")
    detail = f"connection lost: {type(exc).__name__}: {exc}"
    if isinstance(exc, _RESET_TYPES) or getattr(exc, "errno", None) in _RESET_ERRNOS:
        return ConnectionEnded(Cause.RESET, detail)
    return ConnectionEnded(Cause.NETWORK_ERROR, detail)


def lost_because(cause: Cause, what: str, rule: str | None = None) -> ConnectionEnded:
    """A connection the edge ended, or saw end, for a reason it names (``what``: e.g. ``EOF (peer
    closed its side)``, ``not reading its socket (...)``)."""
    return ConnectionEnded(cause, f"connection lost: {what}", rule)


# the peer half-closed its side (the edge's eof_received): the MQTT connection ends there
PEER_CLOSED = lost_because(Cause.EOF, "EOF (peer closed its side)")
