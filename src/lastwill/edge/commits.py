"""Store commit latencies, as the admin API's histogram reads them."""

from __future__ import annotations

import bisect

# upper bounds (seconds) of the store commit latency histogram (the admin API's /metrics)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CommitStats:
    """Cumulative store commit latencies as histogram buckets: updated once per commit, read at scrape."""

    __slots__ = ("count", "total", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(COMMIT_BUCKETS) + 1)  # the last one: above every bound

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
