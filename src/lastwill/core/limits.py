"""The limits of docs/security.md "Limits": how often each was enforced, their log lines, the checks
more than one packet handler shares (topic length and levels, the PUBLISH rate), and the global bounds
(docs/security.md "Global bounds"): what the whole broker may hold, derived from ``memory_budget``
unless set, with the running totals they are checked against.

The global bounds refuse the new thing and keep what was accepted: a CONNECT that would make one
session, one stored will or one offline session too many gets CONNACK 0x97 Quota exceeded (3.1.1:
return code 3), a PUBLISH that would queue into a full broker or add a retained message beyond the
bounds gets PUBACK/PUBREC 0x97 (3.1.1: the connection is closed, an acknowledgement must not lie),
a subscription beyond the topic tree's bound SUBACK 0x97 (3.1.1: 0x80). A will, once its CONNECT was
accepted, is never refused: its publication may go beyond the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..logs import fast_logger
from .retained import RetainedStore
from .sessions import Conn, Session

log = fast_logger("lastwill")

# What one queued delivery costs beyond its topic and payload, in bytes, as measured with tracemalloc
# on CPython 3.11 (tests/core/test_global_bounds.py checks it within 10 %): the Delivery object, its
# deque slot, the Message object and the headers of its bytes and str. A message queued for several
# sessions shares one Message: counting it for each is on the safe side.
QUEUE_ENTRY_OVERHEAD = 290
# beyond max_total_queued_bytes, wills (never refused) may be queued into 1/QUEUE_RESERVE more of it
QUEUE_RESERVE = 4
# the global bounds are logged at most once per this many seconds each (counted every time)
GLOBAL_LOG_INTERVAL = 10.0

# The shares of memory_budget each derived bound gets (docs/security.md "Global bounds")
# (measured by benchmarks/soak_memory.py: a session offline with a subscription costs ~5 KiB of RSS, a
# queued message 1.07 times what the account counts; the shares leave room for the reserve of the
# queues, the interpreter and the connections' buffers)
_QUEUED_NUM, _QUEUED_DEN = 3, 8  # queued messages: 3/8 of the budget (and the wills' reserve, 1/4 of that)
_SESSION_COST = 32 * 1024  # bytes per session (connection buffers, subscriptions, timeline)
_RETAINED_COST = 4 * 1024  # bytes per retained message (count)
_RETAINED_SHARE = 8  # retained messages: an eighth of the budget (bytes)
_SUBSCRIPTION_COST = 2 * 1024  # bytes per subscription (the topic tree)
_INFLIGHT_SHARE = 256  # a connection's unacknowledged deliveries: 1/256 of the budget
UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class Bounds:
    """The global bounds in force: each setting, or when it is 0 its share of ``memory_budget``
    (``memory_budget`` 0: no global bound unless set)."""

    queued_bytes: int  # topics + payloads + QUEUE_ENTRY_OVERHEAD per delivery, over every session
    sessions: int  # connected + offline
    offline_sessions: int
    retained_messages: int
    retained_bytes: int  # topics + payloads
    wills: int  # stored: armed (connected clients) + pending
    inflight_bytes: int  # per connection: topics + payloads sent and not yet acknowledged
    subscriptions: int  # the topic tree's size, over every session

    @classmethod
    def of(cls, cfg: Config) -> Bounds:
        budget = cfg.memory_budget

        def pick(value: int, derived: int) -> int:
            if value:
                return value
            return max(derived, 1) if budget else UNLIMITED

        sessions = pick(cfg.max_sessions, budget // _SESSION_COST)
        return cls(queued_bytes=pick(cfg.max_total_queued_bytes, budget * _QUEUED_NUM // _QUEUED_DEN),
                   sessions=sessions,
                   offline_sessions=pick(cfg.max_offline_sessions, sessions),
                   retained_messages=pick(cfg.max_retained_messages, budget // _RETAINED_COST),
                   retained_bytes=pick(cfg.max_retained_bytes, budget // _RETAINED_SHARE),
                   wills=pick(cfg.max_wills, sessions),
                   inflight_bytes=pick(cfg.max_inflight_bytes, budget // _INFLIGHT_SHARE),
                   subscriptions=pick(cfg.max_total_subscriptions, budget // _SUBSCRIPTION_COST))


@dataclass(frozen=True, slots=True)
class BoundUse:
    """One global bound: its setting, what is held now, and the bound in force (/metrics)."""

    limit: str
    used: int
    bound: int


def _none() -> int:
    return 0


def in_memory_bytes(session: Session) -> int:
    """What the session's queue holds in memory (the broker's account: a backlog in the store is not)."""
    return session.queued_bytes - session.backlog.bytes if session.backlog is not None else session.queued_bytes


def in_memory_count(session: Session) -> int:
    b = session.backlog
    return len(session.queue) + len(b.after) if b is not None else len(session.queue)


def queued_size(topic: str, payload: bytes) -> int:
    """What a session's queue counts for one message (max_queued_bytes): its topic and payload."""
    return len(payload) + len(topic)


class Limits:
    __slots__ = ("config", "hits", "_log", "max_connections", "bounds", "queued_bytes", "queued_messages",
                 "retained", "pending_connections")

    def __init__(self, config: Config, retained: RetainedStore | None = None) -> None:
        self.config = config
        self.retained = retained if retained is not None else RetainedStore()  # (read: its count and bytes)
        # how often each limit was enforced (the admin API's lastwill_limit_hits_total)
        self.hits: dict[str, int] = {}
        self._log: dict = {}  # (limit, client id) -> [last logged at, not logged since]
        # max_connections as enforced: the edge lowers it below the process's descriptor limit
        self.max_connections = config.max_connections
        # connections the edge holds before the core knows them (TLS handshakes, WebSocket upgrades)
        self.pending_connections: Callable[[], int] = _none
        self.bounds = Bounds.of(config)
        # every session's queue together: topics + payloads, and how many deliveries
        self.queued_bytes = 0
        self.queued_messages = 0

    def bound_use(self, sessions: int, offline: int, wills: int, subscriptions: int) -> tuple[BoundUse, ...]:
        """Every global bound with what is held now (the counts the core keeps elsewhere are passed)."""
        b = self.bounds
        return (BoundUse("max_total_queued_bytes", self.queued_total(), b.queued_bytes),
                BoundUse("max_sessions", sessions, b.sessions),
                BoundUse("max_offline_sessions", offline, b.offline_sessions),
                BoundUse("max_retained_messages", len(self.retained), b.retained_messages),
                BoundUse("max_retained_bytes", self.retained.nbytes, b.retained_bytes),
                BoundUse("max_wills", wills, b.wills),
                BoundUse("max_total_subscriptions", subscriptions, b.subscriptions))

    # -- the global queue account -------------------------------------------------------------------
    def queued_total(self) -> int:
        """The bytes the queues hold as max_total_queued_bytes counts them."""
        return self.queued_bytes + self.queued_messages * QUEUE_ENTRY_OVERHEAD

    def queue_full(self) -> bool:
        return self.queued_bytes + self.queued_messages * QUEUE_ENTRY_OVERHEAD >= self.bounds.queued_bytes

    def queue_ceiling_reached(self) -> bool:
        """Beyond max_total_queued_bytes, wills and the fan-out of a message accepted just before the bound
        may use a reserve of a quarter of it (QUEUE_RESERVE); this says the reserve is used up too."""
        bound = self.bounds.queued_bytes
        return self.queued_total() >= bound + bound // QUEUE_RESERVE

    def enqueued(self, size: int) -> None:
        self.queued_bytes += size
        self.queued_messages += 1

    def dequeued(self, size: int) -> None:
        self.queued_bytes -= size
        self.queued_messages -= 1

    def session_gone(self, session: Session) -> None:
        """A session ended with what its queue held."""
        self.queued_bytes -= in_memory_bytes(session)
        self.queued_messages -= in_memory_count(session)

    def recount(self, sessions) -> None:
        """The totals from scratch (after a restore)."""
        self.queued_bytes = sum(in_memory_bytes(s) for s in sessions)
        self.queued_messages = sum(in_memory_count(s) for s in sessions)

    def retained_over(self, topic: str, size: int) -> tuple[str, str] | None:
        """(limit, why) if retaining a message of ``size`` bytes (topic + payload) on ``topic`` would go
        beyond max_retained_messages or max_retained_bytes; replacing one counts the difference."""
        retained = self.retained
        bounds = self.bounds
        old = retained.get(topic)
        if old is None and len(retained) >= bounds.retained_messages:
            return "max_retained_messages", f"{len(retained)} retained messages (max_retained_messages " \
                                            f"{bounds.retained_messages})"
        grows = size - (len(old.payload) + len(old.topic) if old is not None else 0)
        if grows > 0 and retained.nbytes + grows > bounds.retained_bytes:
            return "max_retained_bytes", f"{retained.nbytes} bytes of retained messages (max_retained_bytes " \
                                         f"{bounds.retained_bytes})"
        return None

    def refused(self, limit: str, now: float, fmt: str, *args) -> None:
        """A global bound refused something: counted every time, logged once per GLOBAL_LOG_INTERVAL."""
        self.hit(limit, None, now, fmt, *args, interval=GLOBAL_LOG_INTERVAL)

    def count(self, limit: str) -> None:
        """Count one enforcement of ``limit`` that is logged elsewhere (or not at all)."""
        self.hits[limit] = self.hits.get(limit, 0) + 1

    def hit(self, limit: str, client_id: str | None, now: float, fmt: str, *args, interval: float = 1.0) -> None:
        """Count one enforcement of ``limit`` and log it (WARNING). A limit hit again by the same client
        (or, for max_connections and the global bounds, by anyone) within ``interval`` seconds is
        counted, not logged; the next line says how many were not."""
        hits = self.hits
        hits[limit] = hits.get(limit, 0) + 1
        key = (limit, client_id)
        last = self._log.get(key)
        if last is not None and now - last[0] < interval:
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
