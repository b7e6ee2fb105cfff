"""The admin HTTP API: JSON views of the broker and Prometheus metrics, on the broker's event loop.

Off unless ``admin_listen`` is set. When ``admin_token`` is set, every request must carry
``Authorization: Bearer <token>`` (the token is required when ``admin_listen`` is not a loopback
address; config.py refuses to start otherwise).

    GET /api/clients                      connected clients
    GET /api/sessions                     every session
    GET /api/wills                        pending wills (waiting for their Will Delay or the grace period)
    GET /api/clients/{client_id}/timeline the will timeline of one client (id percent-encoded)
    GET /metrics                          Prometheus text format

Handlers only read the core's state (they run on its loop, between its calls); times are the core's
monotonic ones converted to wall-clock (epoch seconds, and ISO 8601 UTC).
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..config import parse_listen
from ..core.sessions import CONNECTED, NEVER
from ..core.will import CANCEL_CAUSES, CAUSES, DROP_REASONS
from .server import COMMIT_BUCKETS, CommitStats

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

log = logging.getLogger("lastwill.admin")

PROTOCOLS = {3: "3.1", 4: "3.1.1", 5: "5.0"}
# the settings whose enforcement is counted in lastwill_limit_hits_total (core: BrokerCore.limit_hits)
LIMITS = ("max_connections", "connect_timeout", "max_packet_size", "max_topic_length", "max_topic_levels",
          "max_subscriptions_per_client", "max_publish_rate", "max_queued_messages", "max_queued_bytes",
          "unsent_bytes")


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


class AdminServer:
    def __init__(self, server: Server):
        self.server = server
        self.listen = server.config.admin_listen
        self.token = server.config.admin_token
        self.registry = CollectorRegistry()
        self.registry.register(BrokerCollector(server))
        self.runner: web.AppRunner | None = None
        self.addresses: list[tuple[str, int]] = []

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._errors, self._auth])
        app.router.add_get("/api/clients", self.clients)
        app.router.add_get("/api/sessions", self.sessions)
        app.router.add_get("/api/wills", self.wills)
        app.router.add_get("/api/clients/{client_id}/timeline", self.timeline)
        app.router.add_get("/metrics", self.metrics)
        host, port = parse_listen(self.listen, "admin_listen")
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, host, port, reuse_address=True).start()
        except OSError as e:
            await self.runner.cleanup()
            self.runner = None
            e.listen = f"admin_listen {self.listen}"  # for the start-up error message
            raise
        self.addresses = [(a[0], a[1]) for a in self.runner.addresses]
        for host, port in self.addresses:
            log.info("admin API on http://%s:%s%s", f"[{host}]" if ":" in host else host, port,
                     " (bearer token required)" if self.token else "")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    # ---- middlewares ----------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler):
        """Every error as JSON: {"error": "..."}."""
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _json({"error": e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason},
                             e.status)
            for name in ("WWW-Authenticate", "Allow"):
                if name in e.headers:
                    response.headers[name] = e.headers[name]
            return response

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token (send 'Authorization: Bearer <admin_token>')"
                    if given else "this admin API needs 'Authorization: Bearer <admin_token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="lastwill"'})
        return await handler(request)

    # ---- clock -----------------------------------------------------------------------------------
    def _clock(self) -> tuple[float, float]:
        """(monotonic now as the core sees it, offset to add to get wall-clock time)."""
        return self.server.loop.time(), self.server.wall_offset()

    # ---- views --------------------------------------------------------------------------------------
    async def clients(self, request: web.Request) -> web.Response:
        now, offset = self._clock()
        out = []
        for conn in self.server.core.conns.values():
            session = conn.session
            if conn.state != CONNECTED or session is None:
                continue
            out.append({
                "client_id": conn.client_id, "peer": conn.peer,
                "protocol": PROTOCOLS.get(conn.protocol_level, str(conn.protocol_level)),
                "protocol_level": conn.protocol_level, "keep_alive": conn.keep_alive,
                "connected_since": iso(conn.connected_at + offset), "connected_since_epoch": conn.connected_at + offset,
                "connected_for": round(now - conn.connected_at, 3), "will": session.will is not None,
            })
        out.sort(key=lambda c: c["client_id"])
        return _json({"now": now + offset, "count": len(out), "clients": out})

    async def sessions(self, request: web.Request) -> web.Response:
        now, offset = self._clock()
        out = []
        for s in self.server.core.sessions.values():
            expires_in = None
            if s.conn is None and s.expiry_interval != NEVER and s.disconnected_at is not None:
                expires_in = round(max(0.0, s.disconnected_at + s.expiry_interval - now), 3)
            out.append({
                "client_id": s.client_id, "connected": s.conn is not None,
                "expiry_interval": None if s.expiry_interval == NEVER else s.expiry_interval,  # null: never
                "expires_in": expires_in, "subscriptions": len(s.subscriptions), "queued": len(s.queue),
                "inflight": len(s.inflight), "dropped": s.dropped, "will": _will_state(s),
            })
        out.sort(key=lambda s: s["client_id"])
        return _json({"now": now + offset, "count": len(out), "sessions": out})

    async def wills(self, request: web.Request) -> web.Response:
        now, offset = self._clock()
        out = []
        armed = 0
        for s in self.server.core.sessions.values():
            if s.will is None:
                continue
            if s.will_fire_at is None:
                armed += 1
                continue
            out.append(_pending(s, now, offset))
        out.sort(key=lambda w: (w["fire_at_epoch"], w["client_id"]))
        return _json({"now": now + offset, "count": len(out), "armed": armed, "wills": out})

    async def timeline(self, request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]  # percent-decoded by aiohttp
        core = self.server.core
        session = core.sessions.get(client_id)
        if session is None and client_id not in core.timeline:
            raise web.HTTPNotFound(text=f"unknown client {client_id!r}: no session and no will timeline")
        now, offset = self._clock()
        events = core.timeline.events(client_id)
        conn = session.conn if session is not None else None
        body = {
            "client_id": client_id, "now": now + offset,
            "connected": conn is not None, "peer": conn.peer if conn is not None else None,
            "protocol": PROTOCOLS.get(conn.protocol_level) if conn is not None else None,
            "session": session is not None, "will": _will_state(session),
            "pending": _pending(session, now, offset) if session is not None and session.will_fire_at is not None
            and session.will is not None else None,
            "summary": summary(session, events),
            "events": [{
                "seq": e.seq, "time": iso(e.at + offset), "at": e.at + offset, "kind": e.kind,
                "detail": e.detail, "rule": e.rule,
                "data": {k: (v + offset if k.endswith("_at") and isinstance(v, (int, float)) else v)
                         for k, v in e.data.items()},
            } for e in events],
        }
        return _json(body)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _will_state(session) -> str:
    if session is None or session.will is None:
        return "none"
    return "pending" if session.will_fire_at is not None else "armed"


def _pending(s, now: float, offset: float) -> dict:
    w = s.will
    return {
        "client_id": s.client_id, "topic": w.topic, "qos": w.qos, "retain": w.retain,
        "fire_at": iso(s.will_fire_at + offset), "fire_at_epoch": s.will_fire_at + offset,
        "seconds_left": round(max(0.0, s.will_fire_at - now), 3),
        "cause": s.will_cause, "cause_kind": s.will_cause_kind, "recovered": s.will_recovered,
    }


def summary(session, events) -> str:
    """One sentence: where the client's will stands, and why (what `lastwill explain` prints first)."""
    if session is not None and session.will is not None:
        if session.will_fire_at is not None:
            return (f"the will on {session.will.topic!r} is pending: it is published at the time shown unless "
                    f"the client reconnects first")
        return (f"connected with a will on {session.will.topic!r}: it is published if the connection ends "
                f"without DISCONNECT 0x00")
    decisive = [e for e in events if e.kind in ("published", "cancelled", "no-will", "refused", "armed", "denied")]
    if session is not None and session.conn is not None and decisive and decisive[-1].kind != "refused":
        return "connected without a will: nothing is published when this connection ends"
    if not decisive:
        return "no will recorded for this client"
    last = decisive[-1]
    if last.kind == "published":
        topic = last.data.get("topic", "its topic")
        drops = [e for e in events if e.kind == "dropped" and e.seq > last.seq]
        if not last.data.get("receivers"):
            text = f"the will was published on {topic!r}, but no subscription matched it: nobody received it"
        else:
            text = f"the will was published on {topic!r} to {last.data['receivers']} subscriber(s)"
        if drops:
            text += f"; {len(drops)} delivery(ies) dropped afterwards (see 'dropped')"
        return text
    if last.kind == "cancelled":
        return f"the will was cancelled, never published: {last.detail}"
    if last.kind == "denied":
        return f"the will was due but not published: the ACL denied it ({last.detail})"
    if last.kind == "refused":
        return "the last CONNECT was refused: nothing of it was stored, so no will of it was published"
    if last.kind == "no-will":
        return "the last connection had no will: nothing was to be published"
    return "the will was armed; the broker saw nothing more of it"


class BrokerCollector:
    """Reads the core's counters at scrape time: nothing is counted for the metrics on the hot path."""

    def __init__(self, server: Server):
        self.server = server

    def collect(self):
        server = self.server
        core = server.core
        w = core.wills
        stats = core.stats
        sessions = core.sessions.values()
        held = pending = queued = inflight = 0
        for s in sessions:
            if s.will is not None:
                if s.will_fire_at is None:
                    held += 1
                else:
                    pending += 1
            queued += len(s.queue)
            inflight += len(s.inflight)

        yield CounterMetricFamily("lastwill_wills_armed", "Wills stored with an accepted CONNECT [MQTT-3.1.2-7]",
                                  value=w.armed)
        yield GaugeMetricFamily("lastwill_wills_held",
                                "Wills of connected clients, published if the connection ends without DISCONNECT 0x00",
                                value=held)
        yield GaugeMetricFamily("lastwill_wills_pending",
                                "Wills waiting for their Will Delay or the recovery grace period", value=pending)
        yield _labelled(CounterMetricFamily, "lastwill_wills_published",
                        "Wills published, by why the client's connection ended", "cause", CAUSES,
                        w.published_by_cause)
        yield CounterMetricFamily("lastwill_wills_published_unreceived",
                                  "Wills published that no subscription matched", value=w.published_unreceived)
        yield _labelled(CounterMetricFamily, "lastwill_wills_cancelled",
                        "Wills discarded unpublished, by cause", "cause", CANCEL_CAUSES, w.cancelled_by_cause)
        yield _labelled(CounterMetricFamily, "lastwill_wills_dropped",
                        "Deliveries of published wills to one subscriber that were dropped, by reason",
                        "reason", DROP_REASONS, w.dropped_by_reason)
        yield CounterMetricFamily("lastwill_wills_denied",
                                  "Wills due but not published: the ACL (acl_file) denied them at publication",
                                  value=w.denied)
        yield CounterMetricFamily("lastwill_connects_refused_auth",
                                  "CONNECTs refused by authentication or authorization (password, anonymous, will ACL)",
                                  value=stats.get("auth_refused", 0))
        yield CounterMetricFamily("lastwill_publish_denied",
                                  "PUBLISH packets from clients dropped because the ACL (acl_file) denied them",
                                  value=stats.get("publish_denied", 0))
        yield GaugeMetricFamily("lastwill_connections", "Connected MQTT clients",
                                value=sum(1 for c in core.conns.values() if c.state == CONNECTED))
        yield CounterMetricFamily("lastwill_connects", "CONNECTs accepted", value=stats.get("connects", 0))
        yield GaugeMetricFamily("lastwill_sessions", "Sessions (connected or not)", value=len(core.sessions))
        yield CounterMetricFamily("lastwill_messages_received", "PUBLISH packets received from clients",
                                  value=stats["messages_in"])
        yield CounterMetricFamily("lastwill_messages_sent", "PUBLISH packets sent to clients",
                                  value=stats["messages_out"])
        dropped = CounterMetricFamily("lastwill_messages_dropped", "Messages dropped for one subscriber, by reason",
                                      labels=["reason"])
        for reason in ("queue_full", "queue_bytes", "too_large", "expired", "not_authorized"):
            dropped.add_metric([reason], stats.get(f"dropped_{reason}", 0))
        yield dropped
        yield _labelled(CounterMetricFamily, "lastwill_limit_hits",
                        "Times a limit was enforced (docs/security.md 'Limits'), by the setting", "limit",
                        LIMITS, core.limit_hits)
        yield GaugeMetricFamily("lastwill_messages_queued", "Messages queued for sessions", value=queued)
        yield GaugeMetricFamily("lastwill_messages_inflight", "QoS 1/2 messages sent and not yet acknowledged",
                                value=inflight)
        yield GaugeMetricFamily("lastwill_retained_messages", "Retained messages", value=len(core.retained))
        yield GaugeMetricFamily("lastwill_timeline_clients", "Clients with a will timeline in memory",
                                value=len(core.timeline))
        commits: CommitStats = server.commit_stats
        cumulative, buckets = 0, []
        for bound, n in zip((*COMMIT_BUCKETS, float("inf")), commits.buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("lastwill_store_commit_seconds",
                                    "Store commit latency (one group commit per event-loop turn)",
                                    buckets=buckets, sum_value=commits.total)


def _labelled(family, name: str, doc: str, label: str, known, counts: dict[str, int]):
    metric = family(name, doc, labels=[label])
    for key in (*known, *sorted(k for k in counts if k not in known)):
        metric.add_metric([key], counts.get(key, 0))
    return metric
