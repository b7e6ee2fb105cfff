"""The dashboard: a page served by the admin listener, and the live feed it reads.

    GET /dashboard/          the page (plain HTML, JS and CSS shipped in the wheel: lastwill/edge/dashboard/)
    GET /api/dashboard       one snapshot (JSON): every client (up to MAX_ROWS), will counters
    GET /api/events          the same snapshot, then the changes, as server-sent events

The page and its two files hold no data and are served without the token; everything else needs it.
The page reads the events with ``fetch`` (not ``EventSource``, which cannot send a header), so the
token travels as ``Authorization: Bearer``, as for every other request: never in a URL (no access
log, proxy log or browser history has it), never in a cookie (another site cannot make the browser
send it; the admin API also refuses a foreign ``Origin``). The page keeps it in the tab's
sessionStorage.

Live updates cost the broker nothing while no page is open: the core's change feed
(core/changes.py) collects nothing until the first page connects. While one is connected, every
TICK seconds the ids of the clients that changed are taken from it, each one's state is read again
through ``BrokerView`` and sent as a row (``clients`` event); the will counters are sent when they
changed (``counters`` event). The page counts down pending wills itself, from their deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from ..core.causes import ConnectionEnded
from ..core.changes import ChangeFeed
from ..core.queries import BrokerView
from ..core.timeline import EventKind
from ..core.will import NO_WILL, WillPhase

log = logging.getLogger("lastwill.admin")

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
# served without the token: they hold no data
PUBLIC = frozenset({"/", "/dashboard", "/dashboard/", *(f"/dashboard/{name}" for name in FILES)})
TICK = 0.1  # seconds between two looks at the change feed while a page is open
KEEPALIVE = 1.0  # seconds without an event before a comment line (3 bytes) checks that the page is there
MAX_ROWS = 2000  # clients in a snapshot (connected first); changes beyond are sent as they happen
QUEUE = 256  # events waiting for one slow page before it is disconnected (it reconnects for a snapshot)
LAST_ENDS = 10_000  # how the last connections ended, remembered while pages watch
HEADERS = {
    # the page runs only its own script and talks only to this API
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
}

Clock = Callable[[], tuple[float, float]]
Summary = Callable[..., str]


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class Dashboard:
    def __init__(self, view: BrokerView, clock: Clock, changes: ChangeFeed, summary: Summary):
        self.view = view
        self.clock = clock
        self.changes = changes
        self.summary = summary  # admin.py's one-sentence summary of a client's will (as `explain` prints)
        package = resources.files("lastwill.edge") / "dashboard"
        self.files = {name: (package / name).read_bytes() for name in FILES}
        self.watchers: set[asyncio.Queue] = set()
        self.pump: asyncio.Task | None = None
        # client id -> how its last connection ended, seen while pages watch (the feed says it once)
        self.last_end: OrderedDict[str, dict] = OrderedDict()
        self.last_counters: dict | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.to_page)
        app.router.add_get("/dashboard", self.to_page)
        app.router.add_get("/dashboard/", self.page)
        app.router.add_get("/dashboard/{name}", self.file)
        app.router.add_get("/api/dashboard", self.snapshot_json)
        app.router.add_get("/api/events", self.events)

    def close(self) -> None:
        """The admin API stops: every stream ends (its handler returns)."""
        for queue in list(self.watchers):
            _offer(queue, None, force=True)

    # ---- the page ----------------------------------------------------------------------------------
    async def to_page(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound(text=f"no such file: {name!r}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self.files[name], headers={"Content-Type": FILES[name], **HEADERS})

    # ---- the state --------------------------------------------------------------------------------------
    def row(self, client_id: str, now: float, offset: float) -> dict | None:
        """What the page shows of one client (None: the broker no longer knows it)."""
        view = self.view
        session = view.session(client_id)
        if session is None and not view.known(client_id):
            return None
        conn = session.conn if session is not None else None
        status = session.will if session is not None else NO_WILL
        events = view.timeline(client_id)
        topic = status.will.topic if status.will is not None else None
        if topic is None:
            topic = next((e.data["topic"] for e in reversed(events) if "topic" in e.data), None)
        ended = None
        if conn is None:
            ended = self.last_end.get(client_id)
            if ended is None and status.ended is not None:
                ended = {"cause": status.ended.cause.value, "detail": status.ended.detail, "at": None}
            if ended is None:
                last = next((e for e in reversed(events) if e.kind == EventKind.CONNECTION_ENDED), None)
                if last is not None:
                    ended = {"cause": last.data.get("cause"), "detail": last.detail, "at": last.at + offset}
        return {
            "client_id": client_id, "online": conn is not None, "session": session is not None,
            "peer": conn.peer if conn is not None else None,
            "protocol": conn.protocol_level if conn is not None else None,
            "since": conn.connected_at + offset if conn is not None else None,
            "will": status.phase.value, "topic": topic,
            "fire_at": status.fire_at + offset if status.phase is WillPhase.PENDING else None,
            "subscriptions": session.subscriptions if session is not None else 0,
            "ended": ended, "summary": self.summary(status, conn is not None, events),
            "last_event": events[-1].kind if events else None,
        }

    def counters(self) -> dict:
        c = self.view.counters()
        totals = self.view.totals()
        return {"published": dict(c.wills_published_by_cause), "cancelled": dict(c.wills_cancelled_by_cause),
                "dropped": dict(c.wills_dropped_by_reason), "armed": c.wills_armed, "denied": c.wills_denied,
                "held": totals.wills_held, "pending": totals.wills_pending, "connections": totals.connections,
                "sessions": totals.sessions}

    def snapshot(self) -> dict:
        now, offset = self.clock()
        ids, total = self.view.client_ids(MAX_ROWS)
        rows = [r for cid in ids if (r := self.row(cid, now, offset)) is not None]
        counters = self.last_counters = self.counters()  # (the next tick sends them only if they change)
        return {"now": now + offset, "rows": rows, "total": total, "truncated": total > len(rows),
                "counters": counters}

    async def snapshot_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot(), dumps=lambda d: json.dumps(d, ensure_ascii=False))

    # ---- the live feed -------------------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(QUEUE)
        self.watchers.add(queue)
        self.changes.watch()  # from now on the core notes which clients change
        if self.pump is None:
            self.pump = asyncio.ensure_future(self._pump())
        try:
            await response.write(_event("snapshot", self.snapshot()))
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    # a comment line: a page that went away is noticed by the next writes (its socket
                    # resets), within a few seconds, so that the core stops collecting
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    data = b":\n\n"
                if data is None:
                    break
                await response.write(data)
        except (ConnectionError, RuntimeError):  # the page went away (RuntimeError: its transport closed)
            pass
        finally:
            self.watchers.discard(queue)
            if not self.watchers:
                self.changes.unwatch()  # nobody watches: the core collects nothing any more
                self.last_end.clear()
        return response

    async def _pump(self) -> None:
        try:
            while self.watchers:
                await asyncio.sleep(TICK)
                if self.watchers:
                    self.tick()
        finally:
            self.pump = None

    def tick(self) -> None:
        """Send the rows of the clients that changed, and the counters if they changed."""
        changed = self.changes.take()
        if changed:
            now, offset = self.clock()
            rows, gone = [], []
            for client_id, ended in changed.items():
                if ended is not None:
                    self._remember(client_id, ended, now + offset)
                row = self.row(client_id, now, offset)
                if row is None:
                    gone.append(client_id)
                else:
                    rows.append(row)
            self._send(_event("clients", {"now": now + offset, "rows": rows, "gone": gone}))
        counters = self.counters()
        if counters != self.last_counters:
            self.last_counters = counters
            self._send(_event("counters", counters))

    def _remember(self, client_id: str, ended: ConnectionEnded, at: float) -> None:
        last = self.last_end
        last[client_id] = {"cause": ended.cause.value, "detail": ended.detail, "at": at}
        last.move_to_end(client_id)
        while len(last) > LAST_ENDS:
            last.popitem(last=False)

    def _send(self, data: bytes) -> None:
        for queue in list(self.watchers):
            if not _offer(queue, data):
                log.info("dashboard: a page did not keep up with the changes; its stream is closed "
                         "(it reconnects and reads a new snapshot)")
                self.watchers.discard(queue)
                _offer(queue, None, force=True)


def _offer(queue: asyncio.Queue, item, force: bool = False) -> bool:
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        if force:  # make room for the end of the stream
            queue.get_nowait()
            queue.put_nowait(item)
        return False
