"""A node's own view of its lease, measured on its monotonic clock (sans-IO: time comes in as ``now``).

The engine fences a node whose lease ended (every script refuses it), but a node that is paused or cut
off from the engine cannot hear that. So it fences itself: a heartbeat sent at ``sent_at`` (monotonic)
that the engine acknowledged gave a lease of ``lease_ms`` counted from some instant after
``sent_at``; the node treats its lease as ending at ``sent_at + lease - margin``. When that passes
without a newer acknowledged heartbeat the node closes every client connection, fires nothing, and
registers again under a new epoch: a false death (pause, partition) becomes a real disconnect, and
the wills the survivors fire for it are right.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LocalLease:
    lease_ms: int
    margin_ms: int = 500  # for clock rate differences and the time the engine took to answer
    valid_until: float | None = None  # monotonic seconds; None before the first acknowledged beat

    def renewed(self, sent_at: float) -> None:
        """A heartbeat (or the registration) sent at ``sent_at`` was acknowledged."""
        until = sent_at + (self.lease_ms - self.margin_ms) / 1000
        if self.valid_until is None or until > self.valid_until:
            self.valid_until = until

    def valid(self, now: float) -> bool:
        return self.valid_until is not None and now < self.valid_until

    def remaining(self, now: float) -> float:
        return 0.0 if self.valid_until is None else max(0.0, self.valid_until - now)
