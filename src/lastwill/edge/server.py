"""Listeners, the action loop, and the one timer. The only place (with tcp.py) that does I/O."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import time

from .. import logs
from ..auth import Acl
from ..codec.encoder import encode
from ..config import Config, parse_listen
from ..core.actions import Authenticate, Close, Send
from ..core.broker import BrokerCore
from ..core.causes import Cause, ConnectionEnded, lost, lost_because
from ..core.operator import AdminRequest, AdminResult
from ..errors import ConfigError
from ..storage.base import Batch, Storage
from ..version import __version__
from .budget import TURN_BUDGET, ReadBudget
from .commits import CommitStats
from .security import Security
from .tcp import UNSENT_HARD_LIMIT, MqttProtocol
from .tls import context_for, listener_files, tls_contexts
from .tlsconn import TlsAcceptor

log = logging.getLogger("lastwill")

# descriptors kept for anything but client connections (listeners, the store's files, the admin API)
FD_RESERVE = 64

# New connections per listener per loop turn that the edge accepts itself, on top of libuv's one:
# libuv (>= 1.45, uvloop 0.23 ships 1.52) accepts a single connection per readiness of a listening
# socket, i.e. one per loop turn. Under a flood a turn lasts milliseconds, and a burst of new clients
# waited seconds in the accept queue (docs/benchmarks.md, will_under_load).
ACCEPT_BATCH = 64

_CLOSED_BY_SERVER = lost_because(Cause.NETWORK_ERROR, "closed by the server")
_INTERNAL_ERROR = lost_because(Cause.INTERNAL_ERROR, "internal error in the broker")


# Seconds of work in one loop turn after which what is ready is committed and written at once (see
# Server.run): long enough that a connect storm's group commits stay large (a commit costs as much as
# tens of CONNECTs), short enough that a storm of wills reaches subscribers as it is handled
EARLY_WRITE_AFTER = 0.016
# ... and the first such write of a turn comes sooner: in a storm the first wills (the first CONNACKs)
# leave after a few milliseconds, not after a full EARLY_WRITE_AFTER (one more, small, commit per
# long turn; a turn shorter than this writes once, at its end, as before)
FIRST_EARLY_WRITE_AFTER = 0.005

# Timers handled per call of the core's tick: a storm of due wills is handled in slices, with the
# writes of the ready ones in between (Server.run)
TIMERS_PER_TICK = 64


class Server:
    def __init__(self, config: Config, core: BrokerCore | None = None, storage: Storage | None = None,
                 turn_budget: float = TURN_BUDGET, work_clock=time.perf_counter):
        self.config = config
        self.storage = storage
        self.core = core or BrokerCore(config, persist=storage is not None)
        self.fatal: asyncio.Event | None = None  # set when the broker must stop (the store failed)
        self.commit_seconds: list[float] = []  # recent commit latencies (for metrics)
        self.commit_stats = CommitStats()  # all of them, as a histogram (for /metrics)
        self.admin = None  # the admin HTTP API (edge/admin.py), when admin_listen is set
        self.cluster = None  # edge/cluster.py ClusterNode, in cluster mode (config.cluster)
        self.security = Security(self)  # password_file, acl_file: loaded by start(), reload() on SIGHUP
        self._pending: list = []
        self.flush_scheduled = False
        self._work_started = 0.0  # reads.clock() when the current turn's work began (see run)
        self._write_after = FIRST_EARLY_WRITE_AFTER  # of work since _work_started: write early (see run)
        self._writing = False  # inside _commit_and_write (no early flush from within it)
        # bounded read work per loop turn, round-robin (edge/budget.py)
        # (work_clock: seconds, what the work of a loop turn is measured with; tests give a fake one)
        self.reads = ReadBudget(lambda: self.flush_scheduled, lambda: self.run(()), turn_budget, work_clock)
        self._wall_offset = float("-inf")  # set at the first call of wall_offset()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: dict[int, asyncio.Transport] = {}
        self.lost_causes: dict[int, ConnectionEnded] = {}  # how a connection ends, known before it is lost
        self.servers: list[asyncio.base_events.Server] = []
        self.addresses: list[tuple[str, int]] = []  # the plain MQTT listeners (listen)
        # every listener: (kind, host, port), kind "mqtt", "mqtts", "ws" or "wss" (Config.listeners())
        self.listeners: list[tuple[str, str, int]] = []
        # for tls_listen and wss_listen (edge/tls.py): each listener's SSLContext ("HOST:PORT" as written in
        # the config), its own (tls_listener_certs) or the shared one; replaced by reload_tls() (SIGHUP)
        self.tls_contexts: dict[str, ssl.SSLContext] = {}
        self.handshakes: set = set()  # TLS handshakes under way (edge/tlsconn.py TlsAcceptor; cancel() ends one)
        self.upgrades: set = set()  # WebSocket upgrades under way (edge/websocket.py)
        # handshakes and upgrades under way count toward max_connections (core/connection.py)
        self.core.set_pending_connections(lambda: len(self.handshakes) + len(self.upgrades))
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # (duplicate of a listening socket, protocol factory): the accept queue is drained from these
        self._accept_socks: list[tuple[socket.socket, object, tuple[int, int, int]]] = []
        self._accepted = False  # a listener accepted a connection since the last turn: try for more
        self._adopting: set[asyncio.Task] = set()  # connections accepted here, being set up by the loop
        # for $SYS/broker/bytes/... and messages/sent: what was read and written (MQTT bytes; counted per
        # read and per write, where the size is known anyway)
        self.bytes_received = 0
        self.bytes_sent = 0
        self.packets_sent = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fatal = asyncio.Event()
        self._limit_connections()
        if self.config.tls_listen or self.config.wss_listen:
            # a bad certificate or key stops start-up (ConfigError naming the key and the file)
            # before the store is touched
            self.tls_contexts = tls_contexts(self.config)
        self.security.load()  # a bad password_file or acl_file stops start-up too (ConfigError: file, line)
        self.core.wall_offset = self.wall_offset()  # kept up to date by _flush
        if self.config.cluster:
            from .cluster import ClusterNode  # redis is imported only in cluster mode

            if self.config.admin_listen:
                # imported now, before the lease starts: importing aiohttp and prometheus_client blocks the
                # loop (over a second on a loaded machine), and done after registration it let the first
                # lease run out before any heartbeat, so the node fenced itself right after starting
                from . import admin  # noqa: F401
            if self.config.ws_listen or self.config.wss_listen:
                from . import websocket  # noqa: F401  (wsproto: the same reason)
            self.cluster = ClusterNode(self, self.config)
            await self.cluster.start()  # EngineConfigError (a setting that would lose data) stops start-up
        if self.storage is not None:
            # millions of restored deliveries, none in a reference cycle: the cyclic collector would
            # walk all of them again and again as they are made (half the restore time at 2 million)
            collecting = gc.isenabled()
            gc.disable()
            try:
                state = self.storage.load()  # StoreError stops start-up with its message
                crashed = state.meta.get("running") == "1"
                now = self.loop.time()
                actions = self.core.restore(state, now, now + self.wall_offset(), crashed)
                del state
            finally:
                if collecting:
                    gc.enable()
            batch = self.core.take_batch(self.wall_offset()) or Batch()
            batch.meta["running"] = "1"
            self.storage.commit(batch)
            self.run(actions)
        for item in self.config.listen:
            host, port = parse_listen(item)
            factory = self._listener_factory(lambda: MqttProtocol(self))
            srv = await self.loop.create_server(factory, host, port, backlog=4096, reuse_address=True)
            self.servers.append(srv)
            self._drain_accepts_of(srv, factory)
            for sock in srv.sockets:
                addr = sock.getsockname()
                self.addresses.append((addr[0], addr[1]))
                self.listeners.append(("mqtt", addr[0], addr[1]))
                log.info("listening on %s:%s", addr[0], addr[1])
        await self._start_tls_ws_listeners()
        if self.config.sys_interval:

            self.run(self.core.start_sys(self.loop.time(), __version__,
                                         lambda: (self.bytes_received, self.bytes_sent, self.packets_sent)))
        if self.config.admin_listen:
            from .admin import AdminServer  # aiohttp is imported only when the admin API is on

            self.admin = AdminServer(self.config, self.core.view,
                                     lambda: (self.loop.time(), self.wall_offset()), self.commit_stats,
                                     self.administer, self.core.changes)
            if self.cluster is not None:
                from .cluster import ClusterCollector

                self.admin.registry.register(ClusterCollector(self.cluster))
                self.admin.cluster_view = self.cluster.view
                self.admin.cluster_node = self.cluster
            await self.admin.start()

    async def _start_tls_ws_listeners(self) -> None:
        """tls_listen (MQTT over TLS), ws_listen and wss_listen (MQTT over WebSockets, plain and TLS):
        the same core calls and the same flush path as ``listen``."""
        cfg = self.config
        if cfg.ws_listen or cfg.wss_listen:
            from .websocket import WebSocketProtocol  # wsproto is imported only when needed
        for key, kind in (("tls_listen", "mqtts"), ("ws_listen", "ws"), ("wss_listen", "wss")):
            for item in getattr(cfg, key):
                host, port = parse_listen(item, key)
                context = self._context_of(item)
                if kind == "mqtts":
                    factory = lambda c=context: TlsAcceptor(self, lambda: MqttProtocol(self, tls=True), c)  # noqa: E731
                elif kind == "wss":
                    factory = lambda c=context: TlsAcceptor(self, lambda: WebSocketProtocol(self, tls=True), c)  # noqa: E731
                else:
                    factory = lambda: WebSocketProtocol(self)  # noqa: E731
                factory = self._listener_factory(factory)
                try:
                    srv = await self.loop.create_server(factory, host, port, backlog=4096, reuse_address=True)
                except OSError as e:
                    e.listen = f"{item} ({key})"  # cli.py names it
                    raise
                self.servers.append(srv)
                self._drain_accepts_of(srv, factory)
                for sock in srv.sockets:
                    addr = sock.getsockname()
                    self.listeners.append((kind, addr[0], addr[1]))
                    log.info("listening on %s:%s (%s%s)", addr[0], addr[1], kind,
                             f", path {cfg.ws_path}" if kind in ("ws", "wss") else "")

    def _context_of(self, item: str):
        """The SSLContext of listener ``item`` as it is when a connection comes (reload_tls replaces it)."""
        contexts = self.tls_contexts
        return lambda: contexts[item]

    def reload_tls(self) -> bool:
        """SIGHUP: read every TLS listener's certificate, key and CAs again. New handshakes use them;
        connections already open keep theirs. A file that fails keeps that listener's in force, with one
        log line naming it. True if every one was reloaded."""
        if not self.tls_contexts:
            return True
        ok = True
        built: dict = {}
        for item, files in listener_files(self.config).items():
            try:
                if files not in built:
                    built[files] = context_for(self.config, files)
            except ConfigError as e:
                ok = False
                built[files] = None
                log.error("reload: %s; the certificate in force for %s stays", e, item)
            if built[files] is not None:
                self.tls_contexts[item] = built[files]
        return ok

    def admit_pending(self, peer: str) -> bool:
        """A TLS handshake or a WebSocket upgrade may start: they count toward max_connections with the
        core's connections. One more is closed at once, counted and logged as the core's are."""
        limit = self.core.max_connections
        if limit and len(self.core.conns) + len(self.handshakes) + len(self.upgrades) >= limit:
            self.core.connection_refused(peer, self.loop.time())
            return False
        return True

    def handshake_deadline(self) -> tuple[float, str]:
        cfg = self.config
        if cfg.connect_timeout < cfg.handshake_timeout:
            return cfg.connect_timeout, "connect_timeout"
        return cfg.handshake_timeout, "handshake_timeout"

    def handshake_timed_out(self) -> None:
        self.core.count_limit("handshake_timeout")

    def _listener_factory(self, factory):
        """The listener's protocol factory, noting that a connection was just accepted."""
        def made():
            self._accepted = True
            return factory()
        return made

    def _drain_accepts_of(self, srv: asyncio.base_events.Server, factory) -> None:
        for sock in srv.sockets:
            dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            dup.setblocking(False)
            # (the kind of socket accept() makes, as plain ints: socket.accept() converts them to enums on
            # every call, which cost more than the accept itself in a connect storm)
            self._accept_socks.append((dup, factory, (int(sock.family), int(sock.type), sock.proto)))

    def _accept_more(self) -> None:
        """Take up to ACCEPT_BATCH more waiting connections from each listener (see ACCEPT_BATCH). They
        are set up exactly like the ones the loop accepts (same protocol factory, same transport)."""
        self._accepted = False
        loop = self.loop
        for sock, factory, kind in self._accept_socks:
            for _ in range(ACCEPT_BATCH):
                try:
                    fd, _ = sock._accept()  # what socket.accept() does, without making enums of its kind
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # EMFILE, ENOBUFS, ...: the loop's own accept reports it; retried next turn
                    self._accepted = True
                    break
                conn = socket.socket(*kind, fileno=fd)
                conn.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(factory, conn))
                self._adopting.add(task)
                task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task) -> None:
        self._adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the socket died before it was set up
            log.debug("accepting a connection failed: %r", task.exception())

    def _limit_connections(self) -> None:
        """Enforce max_connections below the descriptor limit (RLIMIT_NOFILE, minus FD_RESERVE for the
        listeners, the store and the admin API): a connection refused for max_connections is closed
        cleanly and counted, where an accept failing with EMFILE is neither, and starves the store."""
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):  # pragma: no cover - not on Linux
            return
        if soft == resource.RLIM_INFINITY:
            return
        room = max(soft - FD_RESERVE, 1)
        wanted = self.config.max_connections
        if wanted == 0 or wanted > room:
            self.core.max_connections = room
            log.info("max_connections: %d, what the descriptor limit (RLIMIT_NOFILE %d) leaves (max_connections "
                     "is %s)", room, soft, wanted or "0, no limit")

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        for srv in self.servers:
            srv.close()
        for sock, _, _ in self._accept_socks:
            sock.close()
        self._accept_socks = []
        for task in list(self._adopting):
            task.cancel()
        for handshake in list(self.handshakes):  # TLS handshakes under way: those connections never opened
            handshake.cancel()
        if self.cluster is not None:
            await self.cluster.stop(publish_wills=self.config.shutdown_wills == "publish")
        elif self.loop is not None:
            keep = self.storage is not None and self.config.shutdown_wills == "keep"
            self.run(self.core.shutdown(self.loop.time(), keep_wills=keep))
            self._flush()
        for transport in list(self.transports.values()):
            transport.close()
        for _ in range(3):  # let the connection_lost callbacks run while the store is still open
            await asyncio.sleep(0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.storage is not None and not self.fatal.is_set():
            self._flush()
            batch = self.core.take_batch(self.wall_offset()) or Batch()
            batch.meta["running"] = "0"
            self.storage.commit(batch)
        if self.storage is not None:
            self.storage.close()
            self.storage = None  # whatever still arrives is not committed: the broker has stopped
        for srv in self.servers:
            await srv.wait_closed()
        self.security.close()
        await asyncio.sleep(0)

    def run(self, actions: list) -> None:
        """Queue the core's actions; they are carried out once per event-loop turn, after the commit.

        A turn that has worked for longer than the read budget's (a storm of connection ends, of wills,
        of timers) commits and writes what is ready at once, and goes on: the first wills of a storm
        leave while the rest of it is handled, not after all of it (durable before sent, as always:
        the commit comes first, in smaller batches)."""
        if actions:
            self._pending.extend(actions)
            if self.flush_scheduled and not self._writing and \
                    self.reads.clock() - self._work_started >= self._write_after:
                self._commit_and_write()
                self._work_started = self.reads.clock()
                self._write_after = EARLY_WRITE_AFTER
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self._work_started = self.reads.clock()
            self._write_after = FIRST_EARLY_WRITE_AFTER
            self.loop.call_soon(self._flush)

    # ---- what connections ask (edge/host.py ConnectionHost, edge/security.py AuthHost) -----------
    def open_connection(self, transport, peer: str, sockport: int, cert_username: str | None) -> int:
        conn_id = self.core.new_conn_id()
        self.transports[conn_id] = transport
        self.run(self.core.open(conn_id, self.loop.time(), peer, sockport, cert_username=cert_username))
        return conn_id

    def feed(self, conn_id: int, data: bytes) -> bool:
        self.bytes_received += len(data)
        now = self.loop.time()
        if self.cluster is not None and not self.cluster.live(now, conn_id):
            return False  # this node's lease ran out: it fences itself, nothing of its clients is handled
        try:
            actions = self.core.data_received(conn_id, data, now)
        except Exception:  # a bug in the core must cost one connection, never the broker
            log.exception("internal error handling data from connection %s; closing it", conn_id)
            self.lost_causes[conn_id] = _INTERNAL_ERROR
            return False
        self.run(actions)
        return True

    def ending(self, conn_id: int, ended: ConnectionEnded) -> None:
        self.lost_causes.setdefault(conn_id, ended)

    def lost(self, conn_id: int, exc: BaseException | None) -> None:
        self.transports.pop(conn_id, None)
        ended = self.lost_causes.pop(conn_id, None) or lost(exc)
        try:
            actions = self.core.connection_lost(conn_id, ended, self.loop.time())
        except Exception:
            log.exception("internal error handling the end of connection %s", conn_id)
            actions = []
        self.run(actions)

    def writing_paused(self, conn_id: int) -> None:
        self.core.writing_paused(conn_id)

    def writing_resumed(self, conn_id: int) -> None:
        self.run(self.core.writing_resumed(conn_id, self.loop.time()))

    def reading_enough(self, conn_id: int, transport) -> bool:
        unsent = transport.get_write_buffer_size()
        if unsent <= UNSENT_HARD_LIMIT + self.config.max_packet_size:
            return True
        # it keeps sending but does not read: its unsent bytes are dropped (abort)
        view = self.core.view
        self.core.count_limit("unsent_bytes")
        log.warning("client_id=%s from %s closed: it keeps sending but does not read (%d bytes unsent to it)",
                    view.client_id_of(conn_id) or f"<conn {conn_id}>", view.peer_of(conn_id) or "?", unsent)
        self.lost_causes[conn_id] = lost_because(Cause.NOT_READING, f"not reading its socket ({unsent} bytes unsent)")
        transport.abort()
        return False

    def administer(self, request: AdminRequest) -> AdminResult:
        """An operator's action (the admin API): done on the core, its actions carried out and committed
        before the API answers (the flush runs now rather than at the end of the loop turn)."""
        result, actions = self.core.administer(request, self.loop.time())
        self.run(actions)
        self._flush()
        return result

    def set_acl(self, acl: Acl | None) -> None:
        self.core.set_acl(acl)

    def answer(self, conn_id: int, ok: bool, throttled: str | None = None) -> None:
        self.run(self.core.authenticated(conn_id, ok, self.loop.time(), throttled))

    def peer_of(self, conn_id: int) -> str | None:
        return self.core.view.peer_of(conn_id)

    def hold_reading(self, conn_id: int) -> None:
        transport = self.transports.get(conn_id)
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self.reads.held.add(conn_id)

    def release_reading(self, conn_id: int) -> None:
        self.reads.held.discard(conn_id)
        transport = self.transports.get(conn_id)
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def is_open(self, conn_id: int) -> bool:
        return conn_id in self.transports

    def wall_offset(self) -> float:
        """Wall-clock time minus the loop's monotonic time. Kept stable (so that an event's wall time
        is the same in every answer and every commit) unless the wall clock was stepped by more than
        a quarter of a second (NTP, an administrator), when the new offset is taken."""
        offset = time.time() - self.loop.time()
        if abs(offset - self._wall_offset) > 0.25:
            self._wall_offset = offset
        return self._wall_offset

    def _flush(self) -> None:
        """The end of a loop turn: what the turn decided is committed and written (``_commit_and_write``),
        the one timer re-armed, more connections accepted, the read budget's next turn begun."""
        self.flush_scheduled = False
        if not self._commit_and_write():
            return
        self._arm_timer()
        if self._accepted:
            self._accept_more()
        # this turn's reads start now (the flush runs before the loop polls its sockets)
        reads = self.reads
        reads.next_turn()
        if reads.waiting and not self.flush_scheduled:  # come back next turn to resume more of them
            self.flush_scheduled = True
            self._work_started = reads.clock()
            self._write_after = FIRST_EARLY_WRITE_AFTER
            self.loop.call_soon(self._flush)
        # libuv computes how long the loop may sleep from its clock, read when it was last updated
        # (uvloop's time() updates it); a long commit after that read would make every timer, the next
        # will's among them, late by the commit's length: read the clock again now
        self.loop.time()

    def _commit_and_write(self) -> bool:
        """Group commit, then the writes: an acknowledgement never leaves before what it acknowledges
        is durable (PUBACK/PUBREC after the message, CONNACK after the will). False: the store failed."""
        self._writing = True
        # the core reads no clock: the wall-clock offset for the next turn's calls ($SYS event times)
        wall_offset = self.core.wall_offset = self.wall_offset()
        if self.storage is not None and not self.fatal.is_set():
            batch = self.core.take_batch(wall_offset)
            if batch:
                started = time.perf_counter()
                try:
                    self.storage.commit(batch)
                except Exception as e:
                    self._writing = False
                    self._store_failed(e)
                    return False
                elapsed = time.perf_counter() - started
                self.commit_seconds.append(elapsed)
                self.commit_stats.add(elapsed)
                if len(self.commit_seconds) > 1024:
                    del self.commit_seconds[:512]
        actions = self._pending
        self._pending = []
        if self.cluster is not None:
            # the engine takes the turn's intents first; the actions are written once it has them
            self.cluster.submit(self.core.take_intents(), actions)
        else:
            self.write_actions(actions)
        logs.flush()  # the turn's log lines, in one write
        self._writing = False
        return True

    def write_actions(self, actions: list) -> None:
        """Write the packets and close the connections the core asked for (after the commit)."""
        if actions:
            core = self.core
            transports = self.transports
            writes: dict[int, list[bytes]] = {}
            closes = []
            cache_packet = None
            cache: dict[int, bytes] = {}
            for action in actions:
                if type(action) is Send:
                    packet = action.packet
                    level = core.protocol_level(action.conn_id)
                    if packet is not cache_packet:
                        cache_packet = packet
                        cache = {}
                    data = cache.get(level)
                    if data is None:
                        data = cache[level] = encode(packet, level)
                    chunks = writes.get(action.conn_id)
                    if chunks is None:
                        writes[action.conn_id] = [data]
                    else:
                        chunks.append(data)
                elif type(action) is Close:
                    closes.append(action.conn_id)
                elif type(action) is Authenticate:  # the password check, in a thread (edge/security.py)
                    self.security.authenticate(action)
            sent = packets = 0
            for conn_id, chunks in writes.items():
                transport = transports.get(conn_id)
                if transport is not None and not transport.is_closing():
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    transport.write(data)
                    sent += len(data)
                    packets += len(chunks)
            self.bytes_sent += sent
            self.packets_sent += packets
            for conn_id in closes:
                transport = transports.get(conn_id)
                if transport is not None:
                    self.lost_causes.setdefault(conn_id, _CLOSED_BY_SERVER)
                    if conn_id in writes:
                        close_after_last_packet(self.loop, transport)
                    else:
                        transport.close()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        """Timers that are due, TIMERS_PER_TICK at a time (with the writes of what is ready in between,
        see ``run``); after the read budget's time, the rest waits for the next loop turn (the one timer
        is re-armed on their past deadline), so that reads and new connections are served meanwhile."""
        # call_at may run a hair before the deadline (clock resolution): never pass an earlier now
        now = max(self.loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        clock = self.reads.clock
        started = clock()
        while True:
            try:
                actions = self.core.tick(now, TIMERS_PER_TICK)
            except Exception:  # keep the timer alive whatever happens: wills depend on it
                log.exception("internal error running timers")
                actions = []
            self.run(actions)
            deadline = self.core.next_deadline()
            if deadline is None or deadline > now or clock() - started >= self.reads.budget:
                break
        if not self.flush_scheduled:  # (nothing to write): the timer is re-armed all the same
            self._arm_timer()

    def _store_failed(self, error: Exception) -> None:
        """Fail-stop: nothing that was not durable is acknowledged; every connection is dropped."""
        log.critical("the store failed, stopping the broker so that nothing unacknowledged is lost: %s", error)
        self._pending = []
        self.fatal.set()
        for transport in list(self.transports.values()):
            transport.abort()


# Seconds a connection the server ends after a last packet (DISCONNECT with its reason code, a
# refusing CONNACK) stays half-open to let the client read that packet.
CLOSE_LINGER = 2.0


def close_after_last_packet(loop: asyncio.AbstractEventLoop, transport) -> None:
    """Close a connection whose last packet was just written so that the client can read it.

    A plain close() of a socket with unread input makes the kernel send a reset, and a client that
    has not yet read the DISCONNECT (0x8E takeover, 0x93 Receive Maximum exceeded, a protocol
    error's reason) or the refusing CONNACK loses it: it sees "connection reset" and no reason.
    The server must close after its DISCONNECT [MQTT-3.14.4-2], so: the sending side is shut (FIN
    after the pending writes), what the client still sends is ignored (the core has already ended the connection, and handled its will, when
    it decided to close), and the socket is closed when the client closes its side or after
    CLOSE_LINGER seconds. TLS and WebSocket transports have their own close handshakes.
    """
    try:
        half_close = transport.can_write_eof()
    except (AttributeError, NotImplementedError):
        half_close = False
    if not half_close or transport.is_closing():
        transport.close()
        return
    transport.write_eof()
    loop.call_later(CLOSE_LINGER, transport.abort)
