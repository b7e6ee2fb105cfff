"""The embeddable broker: ``async with Broker(listen=["127.0.0.1:0"]) as broker: ...``."""

from __future__ import annotations

from typing import Any

from .config import Config
from .core.broker import BrokerCore
from .edge.server import Server
from .storage.sqlite import SqliteStorage


class Broker:
    """An MQTT broker running on the current asyncio loop.

    ``Broker(config)`` or ``Broker(listen=[...], **settings)``; settings are the keys of ``Config``
    (docs/configuration.md). A bad value or an unknown key raises ``ConfigError`` naming it, as
    ``lastwill serve`` reports a config file's.
    After ``start()`` (or entering the context), ``port`` and ``addresses`` tell where it listens
    (use port 0 in tests).
    """

    def __init__(self, config: Config | None = None, *, listen: list[str] | str | None = None, **settings: Any):
        config = config or Config()
        if isinstance(listen, str):
            listen = [listen]
        if listen is not None:
            settings["listen"] = listen
        self.config = config.replace(**settings) if settings else config.validate()
        # a cluster node keeps nothing of its own: the engine (Redis) holds what must survive
        cluster = bool(self.config.cluster)
        self.storage = None if self.config.memory or cluster else SqliteStorage(self.config.data_dir,
                                                                                 self.config.fsync)
        self.core = BrokerCore(self.config, persist=self.storage is not None, cluster=cluster)
        self.server = Server(self.config, self.core, self.storage)

    async def start(self) -> Broker:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    def reload(self) -> bool:
        """Read password_file, acl_file and the TLS certificates, keys and CAs again (what SIGHUP does);
        connections stay (new TLS handshakes use the new certificates). A file that fails keeps what is
        in force and is logged. True if everything configured was reloaded."""
        auth = self.server.security.reload()
        return self.server.reload_tls() and auth

    async def __aenter__(self) -> Broker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self.server.addresses)

    @property
    def port(self) -> int:
        return self.server.addresses[0][1]

    def ports(self, kind: str = "mqtt") -> list[int]:
        """The ports of the listeners of one kind: "mqtt" (listen), "mqtts" (tls_listen), "ws"
        (ws_listen) or "wss" (wss_listen); with port 0, the ones chosen."""
        return [port for k, _, port in self.server.listeners if k == kind]

    @property
    def admin_port(self) -> int | None:
        """The admin API's port (when ``admin_listen`` is set; with port 0, the one chosen)."""
        return self.server.admin.port if self.server.admin is not None else None
