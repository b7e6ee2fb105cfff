"""What the core asks the edge to do. Imperative names; small slotted dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from ..codec.packets import Packet, Will


@dataclass(slots=True)
class Send:
    """Write ``packet`` to connection ``conn_id`` (encoded for that connection's protocol)."""

    conn_id: int
    packet: Packet


@dataclass(slots=True)
class Close:
    """Close connection ``conn_id`` after writing what was already sent to it."""

    conn_id: int
    reason: str


@dataclass(slots=True)
class Authenticate:
    """Check ``password`` for ``username`` (password_file; slow by design, so not in the core), then
    call ``BrokerCore.authenticated(conn_id, ok, now)``. The CONNECT waits; so does what follows it."""

    conn_id: int
    username: str
    password: bytes | None

    def __repr__(self) -> str:  # never the password, in a log or a failed test's output
        return f"Authenticate(conn_id={self.conn_id}, username={self.username!r}, password=<hidden>)"


@dataclass(slots=True)
class ClaimSession:
    """Cluster mode: take the session of ``client_id`` in the engine for this CONNECT (taking it over
    from another node, arming ``will`` [MQTT-3.1.2-7]), then call ``BrokerCore.session_claimed(conn_id,
    claim or None, now)``. The CONNECT waits; so does what follows it."""

    conn_id: int
    client_id: str
    clean_start: bool
    session_expiry: int
    will: Will | None
    username: str | None
    user_check: bool
    protocol_level: int


Action = Send | Close | Authenticate | ClaimSession
