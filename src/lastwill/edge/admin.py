"""The admin HTTP API: JSON views of the broker and Prometheus metrics, on the broker's event loop.

Off unless ``admin_listen`` is set. When ``admin_token`` is set, every request must carry
``Authorization: Bearer <token>`` (the token is required when ``admin_listen`` is not a loopback
address; config.py refuses to start otherwise).

    GET /api/clients                      connected clients
    GET /api/sessions                     every session
    GET /api/wills                        pending wills (waiting for their Will Delay or the grace period)
    GET /api/clients/{client_id}/timeline the will timeline of one client (id percent-encoded)
    GET /api/retained?filter=F            retained messages matching a topic filter (&payload=true: whole)
    GET /metrics                          Prometheus text format

An operator's actions (core/operator.py, through the server, which runs their actions and commits
before the answer):

    POST   /api/clients/{client_id}/disconnect[?discard_will=true]
    DELETE /api/sessions/{client_id}[?discard_will=true]
    POST   /api/clients/{client_id}/will/publish   a pending will, now
    POST   /api/clients/{client_id}/will/cancel    a pending will, never published
    DELETE /api/retained?filter=F

Without a token, only requests naming a loopback host (``Host: 127.0.0.1:8080``, ``localhost``) are
answered (a web page cannot reach the API through DNS rebinding), and a request that carries an
``Origin`` (a browser's) must come from the admin listener's own origin (the dashboard): another site
cannot make the browser act on the broker.

Handlers only read the core's state (they run on its loop, between its calls); times are the core's
monotonic ones converted to wall-clock (epoch seconds, and ISO 8601 UTC).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..admin_client import format_timeline
from ..config import Config, is_loopback, parse_listen
from ..core.causes import CAUSES
from ..core.changes import ChangeFeed
from ..core.operator import AdminAction, AdminOutcome, AdminRequest, AdminResult
from ..core.queries import BrokerView, RetainedInfo
from ..core.timeline import TIME_KEYS, EventKind, WillEvent
from ..core.will import CANCEL_CAUSES, DROP_REASONS, WillPhase, WillStatus
from ..version import __version__
from .commits import COMMIT_BUCKETS, CommitStats
from .dashboard import PUBLIC, Dashboard

log = logging.getLogger("lastwill.admin")

PROTOCOLS = {3: "3.1", 4: "3.1.1", 5: "5.0"}
# the settings whose enforcement is counted in lastwill_limit_hits_total (core: BrokerCore.limit_hits)
LIMITS = ("max_connections", "connect_timeout", "max_packet_size", "max_topic_length", "max_topic_levels",
          "max_subscriptions_per_client", "max_publish_rate", "max_queued_messages", "max_queued_bytes",
          "unsent_bytes", "max_total_queued_bytes", "max_sessions", "max_offline_sessions", "max_retained_messages",
          "max_retained_bytes", "max_wills", "max_total_subscriptions", "login_throttled", "handshake_timeout")

# (monotonic now as the core sees it, offset to add to get wall-clock time)
Clock = Callable[[], tuple[float, float]]
# carries out an operator's request on the core (edge/server.py Server.administer)
Administer = Callable[[AdminRequest], AdminResult]

_STATUS = {AdminOutcome.DONE: 200, AdminOutcome.UNKNOWN_CLIENT: 404, AdminOutcome.NOT_CONNECTED: 409,
           AdminOutcome.NO_PENDING_WILL: 409, AdminOutcome.INVALID_FILTER: 400}
_TRUE = ("1", "true", "yes", "on")
PREVIEW = 64  # bytes of a retained payload shown in a listing without payload=true


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


class AdminServer:
    def __init__(self, config: Config, view: BrokerView, clock: Clock, commit_stats: CommitStats,
                 administer: Administer | None = None, changes: ChangeFeed | None = None):
        self.view = view
        self.clock = clock
        self.administer = administer  # None: read-only (no operator actions)
        # the dashboard (edge/dashboard.py), when the core's change feed is given
        self.dashboard = Dashboard(view, clock, changes, summary) if changes is not None else None
        self.listen = config.admin_listen
        self.token = config.admin_token
        self.registry = CollectorRegistry()
        self.registry.register(BrokerCollector(view, commit_stats))
        # the process (CPU, memory, descriptors, start time: /proc) and the Python running it
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.runner: web.AppRunner | None = None
        self.addresses: list[tuple[str, int]] = []
        self.cluster_view = None  # cluster mode: async () -> dict, the engine's view (GET /api/cluster)
        # cluster mode: the node (edge/cluster.py ClusterNode): node_id, and async clients(), pending(),
        # record(client_id) read from the engine, so that any node answers for the whole cluster
        self.cluster_node = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._errors, self._origin, self._auth])
        app.router.add_get("/api/clients", self.clients)
        app.router.add_get("/api/sessions", self.sessions)
        app.router.add_get("/api/wills", self.wills)
        app.router.add_get("/api/clients/{client_id}/timeline", self.timeline)
        app.router.add_get("/api/retained", self.retained)
        app.router.add_get("/metrics", self.metrics)
        if self.cluster_view is not None:
            app.router.add_get("/api/cluster", self.cluster)
        if self.administer is not None:
            app.router.add_post("/api/clients/{client_id}/disconnect", self.disconnect)
            app.router.add_delete("/api/sessions/{client_id}", self.delete_session)
            app.router.add_post("/api/clients/{client_id}/will/publish", self.publish_will)
            app.router.add_post("/api/clients/{client_id}/will/cancel", self.cancel_will)
            app.router.add_delete("/api/retained", self.delete_retained)
        if self.dashboard is not None:
            self.dashboard.add_routes(app)
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
        if self.dashboard is not None:
            self.dashboard.close()  # the live streams end, so that the runner does not wait for them
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
    async def _origin(self, request: web.Request, handler):
        """What a web browser could be made to send: without a token, a request must name a loopback host
        (DNS rebinding gives a page another name for 127.0.0.1); with or without one, a request carrying
        an Origin must come from this listener's own origin (the dashboard)."""
        host = request.host or ""
        if not self.token:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name.strip("[]")):
                raise web.HTTPForbidden(text=f"Host {host!r} is not a loopback address: without admin_token this "
                                             f"API answers only requests for 127.0.0.1, ::1 or localhost")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{host}":
            raise web.HTTPForbidden(text=f"Origin {origin!r} is not this admin API's own")
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token and not (request.path in PUBLIC and request.method in ("GET", "HEAD")):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token (send 'Authorization: Bearer <admin_token>')"
                    if given else "this admin API needs 'Authorization: Bearer <admin_token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="lastwill"'})
        return await handler(request)

    # ---- views --------------------------------------------------------------------------------------
    async def clients(self, request: web.Request) -> web.Response:
        now, offset = self.clock()
        out = []
        for c in self.view.clients():
            out.append({
                "client_id": c.client_id, "peer": c.peer,
                "protocol": PROTOCOLS.get(c.protocol_level, str(c.protocol_level)),
                "protocol_level": c.protocol_level, "keep_alive": c.keep_alive,
                "connected_since": iso(c.connected_at + offset), "connected_since_epoch": c.connected_at + offset,
                "connected_for": round(now - c.connected_at, 3), "will": c.will.phase is not WillPhase.NONE,
            })
        if self.cluster_node is not None:  # the whole cluster: this node's clients in full, the others' from the engine
            here = self.cluster_node.node_id
            for c in out:
                c["node"] = here
            mine = {c["client_id"] for c in out}
            others = await self.cluster_node.clients()
            if others is None:  # the engine cannot be reached: this node's clients only, and it says so
                out.sort(key=lambda c: c["client_id"])
                return _json({"now": now + offset, "count": len(out), "clients": out, "partial": True})
            for r in others:
                if r["client_id"] in mine:
                    continue
                since = (r["connected_ms"] or 0) / 1000
                out.append({"client_id": r["client_id"], "node": r["node"], "peer": None, "protocol": None,
                            "protocol_level": None, "keep_alive": None, "connected_since": iso(since),
                            "connected_since_epoch": since, "connected_for": round(max(0.0, now + offset - since), 3),
                            "will": r["will"]})
        out.sort(key=lambda c: c["client_id"])
        return _json({"now": now + offset, "count": len(out), "clients": out})

    async def sessions(self, request: web.Request) -> web.Response:
        now, offset = self.clock()
        out = []
        for s in self.view.sessions():
            out.append({
                "client_id": s.client_id, "connected": s.connected,
                "expiry_interval": s.expiry_interval,  # null: never
                "expires_in": None if s.expires_at is None else round(max(0.0, s.expires_at - now), 3),
                "subscriptions": s.subscriptions, "queued": s.queued,
                "inflight": s.inflight, "dropped": s.dropped, "will": s.will.phase.value,
            })
        out.sort(key=lambda s: s["client_id"])
        return _json({"now": now + offset, "count": len(out), "sessions": out})

    async def wills(self, request: web.Request) -> web.Response:
        now, offset = self.clock()
        pending, armed = self.view.pending_wills()
        out = [_pending(client_id, status, now, offset) for client_id, status in pending]
        if self.cluster_node is not None:  # the engine holds every node's pending wills (its clock: wall-clock ms)
            here = self.cluster_node.node_id
            for w in out:
                w["node"] = here
            mine = {w["client_id"] for w in out}
            others = await self.cluster_node.pending()
            if others is None:  # the engine cannot be reached: this node's pending wills only
                out.sort(key=lambda w: (w["fire_at_epoch"], w["client_id"]))
                return _json({"now": now + offset, "count": len(out), "armed": armed, "wills": out,
                              "partial": True})
            for r in others:
                if r["client_id"] in mine:
                    continue
                at = r["due_ms"] / 1000
                out.append({"client_id": r["client_id"], "topic": r["topic"], "qos": r["qos"], "retain": r["retain"],
                            "fire_at": iso(at), "fire_at_epoch": at,
                            "seconds_left": round(max(0.0, at - (now + offset)), 3), "cause": r["cause"],
                            "cause_kind": r["cause"], "recovered": False, "node": r["node"],
                            "dead_node": r["dead_node"]})
        out.sort(key=lambda w: (w["fire_at_epoch"], w["client_id"]))
        return _json({"now": now + offset, "count": len(out), "armed": armed, "wills": out})

    async def cluster(self, request: web.Request) -> web.Response:
        """Cluster mode: every node (epoch, lease, state, sessions held), the pending wills of the whole
        cluster, and which node published which will (the engine's audit), newest first."""
        return _json(await self.cluster_view())

    async def timeline(self, request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]  # percent-decoded by aiohttp
        view = self.view
        record = await self.cluster_node.record(client_id) if self.cluster_node is not None else None
        if not view.known(client_id):
            if record is None:
                raise web.HTTPNotFound(text=f"unknown client {client_id!r}: no session and no will timeline")
            body = _from_engine(record, self.cluster_node.node_id, *self.clock())
            if request.query.get("format") == "text":
                return web.Response(text=format_timeline(body), content_type="text/plain", charset="utf-8")
            return _json(body)
        now, offset = self.clock()
        events = view.timeline(client_id)
        session = view.session(client_id)
        conn = session.conn if session is not None else None
        status = session.will if session is not None else view.will(client_id)
        body = {
            "client_id": client_id, "now": now + offset,
            "connected": conn is not None, "peer": conn.peer if conn is not None else None,
            "protocol": PROTOCOLS.get(conn.protocol_level) if conn is not None else None,
            "session": session is not None, "will": status.phase.value,
            "pending": _pending(client_id, status, now, offset) if status.phase is WillPhase.PENDING else None,
            "summary": summary(status, conn is not None, events),
            "events": [{
                "seq": e.seq, "time": iso(e.at + offset), "at": e.at + offset, "kind": e.kind,
                "detail": e.detail, "rule": e.rule,
                "data": {k: (v + offset if k in TIME_KEYS and isinstance(v, (int, float)) else v)
                         for k, v in e.data.items()},
            } for e in events],
        }
        if self.cluster_node is not None:
            body["node"] = self.cluster_node.node_id if conn is not None else (record or {}).get("node")
            body["answered_by"] = self.cluster_node.node_id
            body["fired"] = (record or {}).get("fired", [])
        if request.query.get("format") == "text":  # what `lastwill explain` prints (the dashboard shows it)
            return web.Response(text=format_timeline(body), content_type="text/plain", charset="utf-8")
        return _json(body)

    async def retained(self, request: web.Request) -> web.Response:
        topic_filter = request.query.get("filter", "#")
        whole = request.query.get("payload", "").lower() in _TRUE
        now, offset = self.clock()
        items = self.view.retained(topic_filter, now)
        return _json({"now": now + offset, "filter": topic_filter, "count": len(items),
                      "retained": [_retained(r, now, offset, whole) for r in items]})

    # ---- an operator's actions -----------------------------------------------------------------------
    @staticmethod
    def who(request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
            return f"admin API from {host}:{peer[1]}"
        return f"admin API from {request.remote or '?'}"

    def _act(self, request: web.Request, action: AdminAction, target: str, discard_will: bool = False):
        result = self.administer(AdminRequest(action, target, self.who(request), discard_will))
        now, offset = self.clock()
        body = {"client_id" if action is not AdminAction.DELETE_RETAINED else "filter": target,
                "action": action.value, "outcome": result.outcome.value, "done": result.done,
                "detail": result.detail, "will": result.will.value if result.will is not None else None,
                "fire_at_epoch": result.fire_at + offset if result.fire_at is not None else None}
        if action is AdminAction.DELETE_RETAINED:
            body["deleted"] = result.count
        if not result.done:
            body["error"] = result.detail
        return _json(body, _STATUS[result.outcome])

    @staticmethod
    def _discard(request: web.Request) -> bool:
        return request.query.get("discard_will", "").lower() in _TRUE

    async def disconnect(self, request: web.Request) -> web.Response:
        return self._act(request, AdminAction.DISCONNECT, request.match_info["client_id"], self._discard(request))

    async def delete_session(self, request: web.Request) -> web.Response:
        return self._act(request, AdminAction.DELETE_SESSION, request.match_info["client_id"],
                         self._discard(request))

    async def publish_will(self, request: web.Request) -> web.Response:
        return self._act(request, AdminAction.PUBLISH_WILL, request.match_info["client_id"])

    async def cancel_will(self, request: web.Request) -> web.Response:
        return self._act(request, AdminAction.CANCEL_WILL, request.match_info["client_id"])

    async def delete_retained(self, request: web.Request) -> web.Response:
        topic_filter = request.query.get("filter")
        if not topic_filter:
            raise web.HTTPBadRequest(text="DELETE /api/retained needs ?filter=TOPIC_FILTER (e.g. presence/#)")
        return self._act(request, AdminAction.DELETE_RETAINED, topic_filter)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _retained(r: RetainedInfo, now: float, offset: float, whole: bool) -> dict:
    payload = r.payload if whole else r.payload[:PREVIEW]
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"topic": r.topic, "qos": r.qos, "bytes": len(r.payload), "payload": text,
            "payload_base64": base64.b64encode(payload).decode("ascii"), "truncated": len(payload) < len(r.payload),
            "expires_in": None if r.expires_at is None else round(max(0.0, r.expires_at - now), 3),
            "publisher": r.origin}


def _pending(client_id: str, status: WillStatus, now: float, offset: float) -> dict:
    w = status.will
    ended = status.ended
    return {
        "client_id": client_id, "topic": w.topic, "qos": w.qos, "retain": w.retain,
        "fire_at": iso(status.fire_at + offset), "fire_at_epoch": status.fire_at + offset,
        "seconds_left": round(max(0.0, status.fire_at - now), 3),
        "cause": ended.detail if ended is not None else None,
        "cause_kind": ended.cause.value if ended is not None else None, "recovered": status.recovered,
    }


def _from_engine(record: dict, answered_by: str, now: float, offset: float) -> dict:
    """A client of another node (or of a node that died), explained from the engine's record: which node
    holds it, its stored will (armed, or pending until its deadline) and which node published its wills
    when (the audit). The detailed timeline stays on the node that held the client; the engine keeps
    the decisive facts, which outlive that node."""
    wall = now + offset
    events = []
    w = record.get("will")
    if w is not None and w.get("armed_ms"):
        events.append({"at": w["armed_ms"] / 1000, "kind": EventKind.ARMED.value, "rule": "MQTT-3.1.2-8",
                       "detail": f"will on {w['topic']!r} armed at CONNECT on node {w['armed_by']}", "data": {}})
    if w is not None and w["pending"]:
        ended = f"node {w['dead_node']} died" if w.get("dead_node") else (w.get("cause") or "the connection ended")
        events.append({"at": (w.get("ended_ms") or w["due_ms"]) / 1000, "kind": EventKind.DEFERRED.value,
                       "rule": "MQTT-3.1.3-9", "detail": f"{ended}; the will is published at its deadline unless "
                                                         f"the client reconnects first",
                       "data": {"fire_at": w["due_ms"] / 1000}})
    for f in reversed(record.get("fired", [])):
        if f.get("dead_node"):
            why = (f"node {f['dead_node']} (epoch {f['dead_epoch']}) stopped renewing its lease; it ended at "
                   f"{iso((f.get('ended_ms') or f['due_ms']) / 1000)}; ")
        else:
            why = f"{f.get('cause') or 'due'}; "
        events.append({"at": f["fired_ms"] / 1000, "kind": EventKind.PUBLISHED.value, "rule": "MQTT-3.1.2-8",
                       "detail": f"{why}node {f['fired_by']} (epoch {f['by_epoch']}) published this will at "
                                 f"{iso(f['fired_ms'] / 1000)} to {f['receivers']} session(s) (due "
                                 f"{iso(f['due_ms'] / 1000)})",
                       "data": {"topic": f["topic"], "receivers": f["receivers"], "node": f["fired_by"]}})
    events.sort(key=lambda e: e["at"])
    for i, e in enumerate(events):
        e.update(seq=i + 1, time=iso(e["at"]))
    pending = None
    if w is not None and w["pending"]:
        at = w["due_ms"] / 1000
        pending = {"client_id": record["client_id"], "topic": w["topic"], "qos": w["qos"], "retain": w["retain"],
                   "fire_at": iso(at), "fire_at_epoch": at, "seconds_left": round(max(0.0, at - wall), 3),
                   "cause": w.get("cause"), "cause_kind": w.get("cause"), "recovered": False}
    phase = "none" if w is None else ("pending" if w["pending"] else "armed")
    connected, node = record["connected"], record.get("node")
    if pending is not None:
        text = (f"the will on {w['topic']!r} is pending: it is published at the time shown unless the client "
                f"reconnects first")
    elif w is not None:
        text = f"connected to node {node} with a will on {w['topic']!r}"
    elif record["fired"]:
        f = record["fired"][0]
        text = (f"the will was published on {f['topic']!r} to {f['receivers']} subscriber(s) by node "
                f"{f['fired_by']} (epoch {f['by_epoch']})")
    elif connected:
        text = f"connected to node {node} without a will"
    else:
        text = "no will recorded for this client"
    return {"client_id": record["client_id"], "now": wall, "connected": connected, "peer": None,
            "protocol": None, "session": record["session"], "will": phase, "pending": pending, "summary": text,
            "events": events, "node": node if connected else None, "answered_by": answered_by,
            "fired": record["fired"], "source": "engine"}


_DECISIVE = (EventKind.PUBLISHED, EventKind.CANCELLED, EventKind.NO_WILL, EventKind.REFUSED, EventKind.ARMED,
             EventKind.DENIED)


def summary(status: WillStatus, connected: bool, events: list[WillEvent]) -> str:
    """One sentence: where the client's will stands, and why (what `lastwill explain` prints first)."""
    if status.phase is WillPhase.PENDING:
        return (f"the will on {status.will.topic!r} is pending: it is published at the time shown unless "
                f"the client reconnects first")
    if status.phase is WillPhase.ARMED:
        return (f"connected with a will on {status.will.topic!r}: it is published if the connection ends "
                f"without DISCONNECT 0x00")
    decisive = [e for e in events if e.kind in _DECISIVE]
    if connected and decisive and decisive[-1].kind != EventKind.REFUSED:
        return "connected without a will: nothing is published when this connection ends"
    if not decisive:
        return "no will recorded for this client"
    last = decisive[-1]
    if last.kind == EventKind.PUBLISHED:
        topic = last.data.get("topic", "its topic")
        drops = [e for e in events if e.kind == EventKind.DROPPED and e.seq > last.seq]
        if not last.data.get("receivers"):
            text = f"the will was published on {topic!r}, but no subscription matched it: nobody received it"
        else:
            text = f"the will was published on {topic!r} to {last.data['receivers']} subscriber(s)"
        if drops:
            text += f"; {len(drops)} delivery(ies) dropped afterwards (see 'dropped')"
        return text
    if last.kind == EventKind.CANCELLED:
        return f"the will was cancelled, never published: {last.detail}"
    if last.kind == EventKind.DENIED:
        return f"the will was due but not published: the ACL denied it ({last.detail})"
    if last.kind == EventKind.REFUSED:
        return "the last CONNECT was refused: nothing of it was stored, so no will of it was published"
    if last.kind == EventKind.NO_WILL:
        return "the last connection had no will: nothing was to be published"
    return "the will was armed; the broker saw nothing more of it"


class BrokerCollector:
    """Reads the core's counters at scrape time: nothing is counted for the metrics on the hot path."""

    def __init__(self, view: BrokerView, commits: CommitStats):
        self.view = view
        self.commits = commits

    def collect(self):
        build = GaugeMetricFamily("lastwill_build_info", "The running lastwill: version, Python, platform (value 1)",
                                  labels=["version", "python", "implementation", "platform"])
        build.add_metric([__version__, platform.python_version(), platform.python_implementation(),
                          sys.platform], 1)
        yield build
        c = self.view.counters()
        totals = self.view.totals()
        stats = c.stats
        yield CounterMetricFamily("lastwill_wills_armed", "Wills stored with an accepted CONNECT [MQTT-3.1.2-7]",
                                  value=c.wills_armed)
        yield GaugeMetricFamily("lastwill_wills_held",
                                "Wills of connected clients, published if the connection ends without DISCONNECT 0x00",
                                value=totals.wills_held)
        yield GaugeMetricFamily("lastwill_wills_pending",
                                "Wills waiting for their Will Delay or the recovery grace period",
                                value=totals.wills_pending)
        yield _labelled(CounterMetricFamily, "lastwill_wills_published",
                        "Wills published, by why the client's connection ended", "cause", CAUSES,
                        c.wills_published_by_cause)
        yield CounterMetricFamily("lastwill_wills_published_unreceived",
                                  "Wills published that no subscription matched", value=c.wills_published_unreceived)
        yield _labelled(CounterMetricFamily, "lastwill_wills_cancelled",
                        "Wills discarded unpublished, by cause", "cause", CANCEL_CAUSES, c.wills_cancelled_by_cause)
        yield _labelled(CounterMetricFamily, "lastwill_wills_dropped",
                        "Deliveries of published wills to one subscriber that were dropped, by reason",
                        "reason", DROP_REASONS, c.wills_dropped_by_reason)
        yield CounterMetricFamily("lastwill_wills_denied",
                                  "Wills due but not published: the ACL (acl_file) denied them at publication",
                                  value=c.wills_denied)
        yield CounterMetricFamily("lastwill_connects_refused_auth",
                                  "CONNECTs refused by authentication or authorization (password, anonymous, will ACL)",
                                  value=stats.get("auth_refused", 0))
        yield CounterMetricFamily("lastwill_publish_denied",
                                  "PUBLISH packets from clients dropped because the ACL (acl_file) denied them",
                                  value=stats.get("publish_denied", 0))
        yield GaugeMetricFamily("lastwill_connections", "Connected MQTT clients", value=totals.connections)
        yield CounterMetricFamily("lastwill_connects", "CONNECTs accepted", value=stats.get("connects", 0))
        yield GaugeMetricFamily("lastwill_sessions", "Sessions (connected or not)", value=totals.sessions)
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
                        LIMITS, c.limit_hits)
        used = GaugeMetricFamily("lastwill_bound_used", "What the broker holds against each global bound "
                                 "(docs/security.md 'Global bounds'), by the setting", labels=["limit"])
        bound = GaugeMetricFamily("lastwill_bound", "Each global bound in force (the setting, or derived from "
                                  "memory_budget)", labels=["limit"])
        for b in c.bounds:
            used.add_metric([b.limit], b.used)
            bound.add_metric([b.limit], b.bound)
        yield used
        yield bound
        yield GaugeMetricFamily("lastwill_messages_queued", "Messages queued for sessions", value=totals.queued)
        yield GaugeMetricFamily("lastwill_messages_inflight", "QoS 1/2 messages sent and not yet acknowledged",
                                value=totals.inflight)
        yield GaugeMetricFamily("lastwill_retained_messages", "Retained messages", value=c.retained)
        yield GaugeMetricFamily("lastwill_timeline_clients", "Clients with a will timeline in memory",
                                value=c.timeline_clients)
        commits = self.commits
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
