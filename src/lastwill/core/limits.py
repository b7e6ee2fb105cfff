"""The limits of docs/security.md "Limits": how often each was enforced, their log lines, and the checks
more than one packet handler shares (topic length and levels, the PUBLISH rate)."""

from __future__ import annotations

from ..config import Config
from ..logs import fast_logger
from .sessions import Conn

log = fast_logger("lastwill")


class Limits:
    __slots__ = ("config", "hits", "_log", "max_connections")

    def __init__(self, config: Config) -> None:
        self.config = config
        # how often each limit was enforced (the admin API's lastwill_limit_hits_total)
        self.hits: dict[str, int] = {}
        self._log: dict = {}  # (limit, client id) -> [last logged at, not logged since]
        # max_connections as enforced: the edge lowers it below the process's descriptor limit
        self.max_connections = config.max_connections

    def count(self, limit: str) -> None:
        """Count one enforcement of ``limit`` that is logged elsewhere (or not at all)."""
        self.hits[limit] = self.hits.get(limit, 0) + 1

    def hit(self, limit: str, client_id: str | None, now: float, fmt: str, *args) -> None:
        """Count one enforcement of ``limit`` and log it (WARNING). A limit hit again by the same client
        (or, for max_connections, by anyone) within a second is counted, not logged; the next line
        says how many were not."""
        hits = self.hits
        hits[limit] = hits.get(limit, 0) + 1
        key = (limit, client_id)
        last = self._log.get(key)
        if last is not None and now - last[0] < 1.0:
            last[1] += 1
            return
        if last is not None and last[1]:
            fmt += f" ({last[1]} more not logged)"
        if len(self._log) > 10_000:
            self._log.clear()
        self._log[key] = [now, 0]
        log.warning(fmt, *args)

    def topic_over_limit(self, topic: str, levels_of: str | None = None) -> tuple[str, str] | None:
        """(limit, why) if ``topic`` (a name or a filter) is above max_topic_length bytes or has more than
        max_topic_levels levels (counted in ``levels_of``: a shared subscription's inner filter)."""
        cfg = self.config
        if len(topic) * 4 > cfg.max_topic_length and len(topic.encode("utf-8")) > cfg.max_topic_length:
            return "max_topic_length", f"topic of {len(topic.encode('utf-8'))} bytes > max_topic_length {cfg.max_topic_length}"
        levels = (topic if levels_of is None else levels_of).count("/") + 1
        if levels > cfg.max_topic_levels:
            return "max_topic_levels", f"topic of {levels} levels > max_topic_levels {cfg.max_topic_levels}"
        return None

    def publish_token(self, conn: Conn, now: float) -> bool:
        """max_publish_rate: take one token from the connection's bucket (refilled at the rate, holding
        at most one second's worth, at least 1). False if it is empty."""
        rate = self.config.max_publish_rate
        tokens = conn.publish_tokens + (now - conn.publish_tokens_at) * rate
        cap = rate if rate > 1.0 else 1.0
        if tokens > cap:
            tokens = cap
        conn.publish_tokens_at = now
        if tokens < 1.0:
            conn.publish_tokens = tokens
            return False
        conn.publish_tokens = tokens - 1.0
        return True
