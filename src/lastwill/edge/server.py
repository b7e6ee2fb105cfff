"""Listeners, the action loop, and the one timer. The only place (with tcp.py) that does I/O."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time

from ..codec.encoder import encode
from ..config import Config, parse_listen
from ..core.actions import Close, Send
from ..core.broker import BrokerCore
from ..storage.base import Batch, Storage
from .tcp import MqttProtocol

log = logging.getLogger("lastwill")

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


class Server:
    def __init__(self, config: Config, core: BrokerCore | None = None, storage: Storage | None = None):
        self.config = config
        self.storage = storage
        self.core = core or BrokerCore(config, persist=storage is not None)
        self.fatal: asyncio.Event | None = None  # set when the broker must stop (the store failed)
        self.commit_seconds: list[float] = []  # recent commit latencies (for metrics)
        self.commit_stats = CommitStats()  # all of them, as a histogram (for /metrics)
        self.admin = None  # the admin HTTP API (edge/admin.py), when admin_listen is set
        self._pending: list = []
        self._flush_scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: dict[int, asyncio.Transport] = {}
        self.lost_causes: dict[int, str] = {}
        self.servers: list[asyncio.base_events.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fatal = asyncio.Event()
        self.core.wall_offset = time.time() - self.loop.time()  # kept up to date by _flush
        if self.storage is not None:
            state = self.storage.load()  # StoreError stops start-up with its message
            crashed = state.meta.get("running") == "1"
            now = self.loop.time()
            actions = self.core.restore(state, now, time.time(), crashed)
            batch = self.core.take_batch(time.time() - self.loop.time()) or Batch()
            batch.meta["running"] = "1"
            self.storage.commit(batch)
            self.run(actions)
        for item in self.config.listen:
            host, port = parse_listen(item)
            srv = await self.loop.create_server(lambda: MqttProtocol(self), host, port, backlog=4096,
                                                reuse_address=True)
            self.servers.append(srv)
            for sock in srv.sockets:
                addr = sock.getsockname()
                self.addresses.append((addr[0], addr[1]))
                log.info("listening on %s:%s", addr[0], addr[1])
        if self.config.admin_listen:
            from .admin import AdminServer  # aiohttp is imported only when the admin API is on

            self.admin = AdminServer(self)
            await self.admin.start()

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        for srv in self.servers:
            srv.close()
        if self.loop is not None:
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
            batch = self.core.take_batch(time.time() - self.loop.time()) or Batch()
            batch.meta["running"] = "0"
            self.storage.commit(batch)
        if self.storage is not None:
            self.storage.close()
            self.storage = None  # whatever still arrives is not committed: the broker has stopped
        for srv in self.servers:
            await srv.wait_closed()
        await asyncio.sleep(0)

    def run(self, actions: list) -> None:
        """Queue the core's actions; they are carried out once per event-loop turn, after the commit."""
        if actions:
            self._pending.extend(actions)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Group commit, then the writes: an acknowledgement never leaves before what it acknowledges
        is durable (PUBACK/PUBREC after the message, CONNACK after the will)."""
        self._flush_scheduled = False
        # the core reads no clock: the wall-clock offset for the next turn's calls ($SYS event times)
        wall_offset = self.core.wall_offset = time.time() - self.loop.time()
        if self.storage is not None and not self.fatal.is_set():
            batch = self.core.take_batch(wall_offset)
            if batch:
                started = time.perf_counter()
                try:
                    self.storage.commit(batch)
                except Exception as e:
                    self._store_failed(e)
                    return
                elapsed = time.perf_counter() - started
                self.commit_seconds.append(elapsed)
                self.commit_stats.add(elapsed)
                if len(self.commit_seconds) > 1024:
                    del self.commit_seconds[:512]
        actions = self._pending
        self._pending = []
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
            for conn_id, chunks in writes.items():
                transport = transports.get(conn_id)
                if transport is not None and not transport.is_closing():
                    transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            for conn_id in closes:
                transport = transports.get(conn_id)
                if transport is not None:
                    self.lost_causes.setdefault(conn_id, "closed by the server")
                    transport.close()
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        # call_at may run a hair before the deadline (clock resolution): never pass an earlier now
        now = max(self.loop.time(), self._timer_at or 0.0)
        self._timer = None
        self._timer_at = None
        try:
            actions = self.core.tick(now)
        except Exception:  # keep the timer alive whatever happens: wills depend on it
            log.exception("internal error running timers")
            actions = []
        self.run(actions)

    def _store_failed(self, error: Exception) -> None:
        """Fail-stop: nothing that was not durable is acknowledged; every connection is dropped."""
        log.critical("the store failed, stopping the broker so that nothing unacknowledged is lost: %s", error)
        self._pending = []
        self.fatal.set()
        for transport in list(self.transports.values()):
            transport.abort()
