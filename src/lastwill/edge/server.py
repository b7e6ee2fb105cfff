"""Listeners, the action loop, and the one timer. The only place (with tcp.py) that does I/O."""

from __future__ import annotations

import asyncio
import logging

from ..codec.encoder import encode
from ..config import Config, parse_listen
from ..core.actions import Close, Send
from ..core.broker import BrokerCore
from .tcp import MqttProtocol

log = logging.getLogger("lastwill")


class Server:
    def __init__(self, config: Config, core: BrokerCore | None = None):
        self.config = config
        self.core = core or BrokerCore(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: dict[int, asyncio.Transport] = {}
        self.lost_causes: dict[int, str] = {}
        self.paused: set[int] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for item in self.config.listen:
            host, port = parse_listen(item)
            srv = await self.loop.create_server(lambda: MqttProtocol(self), host, port, backlog=4096,
                                                reuse_address=True)
            self.servers.append(srv)
            for sock in srv.sockets:
                addr = sock.getsockname()
                self.addresses.append((addr[0], addr[1]))
                log.info("listening on %s:%s", addr[0], addr[1])

    async def stop(self) -> None:
        for srv in self.servers:
            srv.close()
        if self.loop is not None:
            self.run(self.core.shutdown(self.loop.time()))
        for transport in list(self.transports.values()):
            transport.close()
        for srv in self.servers:
            await srv.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.sleep(0)

    def run(self, actions: list) -> None:
        """Carry out the core's actions: writes are batched per connection, then closes."""
        if actions:
            core = self.core
            transports = self.transports
            batches: dict[int, list[bytes]] = {}
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
                    batch = batches.get(action.conn_id)
                    if batch is None:
                        batches[action.conn_id] = [data]
                    else:
                        batch.append(data)
                elif type(action) is Close:
                    closes.append(action.conn_id)
            for conn_id, chunks in batches.items():
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
