"""Time, injected. The core never reads a clock: every method takes ``now`` (monotonic seconds).

``SystemClock`` is what the edge uses; ``FakeClock`` is what tests use to jump straight to a
deadline instead of sleeping. ``wall()`` is needed only where a deadline must outlive the process
(persisted as absolute wall-clock time).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to. ``wall`` keeps a fixed offset from ``monotonic``."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0):
        self.now = start
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def set(self, now: float) -> float:
        self.now = now
        return now
