"""An Application Message inside the broker: what was published, by whom, and when it expires."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict = field(default_factory=dict)  # forwarded properties, without topic_alias /
    #                                                   subscription_identifier / message_expiry_interval
    origin: str | None = None  # client id of the publisher (for No Local); None for the broker
    expiry_at: float | None = None  # absolute monotonic deadline from Message Expiry Interval
    is_will: bool = False
    # in the store (core/persistence.py): its id there, shared by every stored delivery of it, and how
    # many stored deliveries refer to it (the recorder deletes it from the store when none does)
    store_id: int = 0
    store_refs: int = 0
    ref: str | None = None  # cluster mode: the entry of the session's queue in the engine it came from

    def expired(self, now: float) -> bool:
        return self.expiry_at is not None and now >= self.expiry_at

    def remaining_expiry(self, now: float) -> int | None:
        """Message Expiry Interval to forward: received value minus time waited [MQTT-3.3.2-6]."""
        if self.expiry_at is None:
            return None
        return max(1, math.ceil(self.expiry_at - now))
