"""What the core asks the edge to do. Imperative names; small slotted dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from ..codec.packets import Packet


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


Action = Send | Close
