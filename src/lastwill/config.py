"""Configuration: one dataclass, filled from defaults, a TOML file, then command-line flags.

Every error names the key and what was expected, e.g.
``config key 'receive_maximum': expected an integer from 1 to 65535, got 0``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

UINT32_MAX = 0xFFFFFFFF
# the listener keys, and the kind of listener each one makes (Config.listeners())
LISTEN_KEYS = ("listen", "tls_listen", "ws_listen", "wss_listen")
LISTENER_KINDS = ("mqtt", "mqtts", "ws", "wss")
MAX_PACKET_LIMIT = 268_435_460  # largest MQTT packet: 1 + 4 + 268,435,455


def default_node_name() -> str:
    """"lastwill@<hostname>", usable as one topic level (the core never asks the system for it)."""
    host = socket.gethostname() or "localhost"
    return "lastwill@" + "".join("_" if c in "/+#\x00" else c for c in host)


@dataclass
class Config:
    # listeners: "HOST:PORT" (IPv6 as "[::1]:1883")
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:1883"])
    # TLS and WebSocket listeners (docs/security.md "TLS", "WebSockets"): MQTT over TLS (tls_listen),
    # MQTT over WebSockets (ws_listen) and over WebSockets over TLS (wss_listen). One certificate
    # (tls_cert, tls_key: PEM files, the key unencrypted) serves tls_listen and wss_listen. tls_ca: PEM
    # file of the CAs that sign client certificates; when set, clients are asked for one, and
    # tls_require_client_cert refuses the TLS handshake without one; tls_cert_cn_as_username makes the
    # certificate's Common Name the connection's user name (Conn.cert_username, for authentication).
    # ws_path: the HTTP path of the WebSocket listeners ("/" is accepted too). TLS 1.2 at least.
    tls_listen: list[str] = field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_require_client_cert: bool = False
    tls_cert_cn_as_username: bool = False
    ws_listen: list[str] = field(default_factory=list)
    wss_listen: list[str] = field(default_factory=list)
    ws_path: str = "/mqtt"
    # protocol limits advertised in CONNACK and enforced
    max_packet_size: int = 1_048_576
    receive_maximum: int = 1024
    maximum_qos: int = 2
    retain_available: bool = True
    topic_alias_maximum: int = 64
    outbound_topic_aliases: bool = True
    wildcard_subscription_available: bool = True
    subscription_identifier_available: bool = True
    shared_subscription_available: bool = True
    # keep-alive: a client asking for more than this (or for 0 when zero is not allowed) is told
    # the server's value in CONNACK (MQTT 5 Server Keep Alive)
    max_keep_alive: int = 65535
    allow_zero_keep_alive: bool = True
    connect_timeout: float = 10.0
    # limits against hostile or broken clients (docs/security.md "Limits"; 0: no limit where allowed).
    # max_connections: open network connections, counted at accept (those still to send CONNECT too);
    # one more is closed at once. Also kept below the descriptor limit (edge/server.py)
    max_connections: int = 100_000
    max_topic_length: int = 4096  # bytes, of a PUBLISH topic, a will topic, a subscription's filter
    max_topic_levels: int = 128  # "a/b/c" has 3; at most 512: the subscription trie is walked recursively
    max_subscriptions_per_client: int = 10_000  # per session
    max_publish_rate: float = 0.0  # PUBLISH packets per second per connection (token bucket); 0 = off
    # sessions
    max_session_expiry: int = UINT32_MAX  # seconds; UINT32_MAX means "never expires" is allowed
    max_queued_messages: int = 100_000  # per session; beyond this, new messages are dropped and counted
    max_queued_bytes: int = 16 * 1024 * 1024  # per session (topics + payloads); the same, counted in bytes
    queue_qos0: bool = False  # queue QoS 0 messages for offline sessions (mosquitto's default: no)
    # persistence (see README "Durability")
    data_dir: str = "./lastwill-data"
    memory: bool = False  # keep nothing across restarts
    fsync: str = "batch"  # always | batch | off
    recovery_grace: float = 30.0  # seconds a client has to reconnect after a restart before its will fires
    shutdown_wills: str = "keep"  # keep | publish: wills of clients connected at a clean shutdown
    # logging
    log_level: str = "info"
    # the admin HTTP API (JSON, Prometheus /metrics): "HOST:PORT", empty = off. admin_token: required
    # when admin_listen is not a loopback address; clients send "Authorization: Bearer <token>"
    admin_listen: str = ""
    admin_token: str = ""
    # what the broker publishes about its clients (see README "$SYS events, presence, will cause"):
    # $SYS/brokers/<node_name>/clients/<client id>/connected|disconnected (JSON, EMQX's fields plus
    # the will decision); presence_topic: a retained online/offline per client ("{client_id}" is
    # replaced), empty = off; will_cause_property: wills carry User Property ("lastwill-cause", cause)
    sys_events: bool = True
    node_name: str = field(default_factory=default_node_name)
    presence_topic: str = ""
    will_cause_property: bool = False
    # authentication and authorization (docs/security.md "Authentication", "Authorization"):
    # password_file: "user:hash" lines (lastwill passwd, or mosquitto_passwd's $7$/$6$); acl_file:
    # mosquitto's ACL syntax, anything not granted is denied; both reloaded on SIGHUP.
    # allow_anonymous: clients without a user name; unset: allowed only when every listener is on
    # a loopback address (start-up is refused when no client could authenticate on a non-loopback one)
    password_file: str = ""
    acl_file: str = ""
    allow_anonymous: bool | None = None

    def validate(self) -> Config:
        def int_range(key: str, lo: int, hi: int) -> None:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"config key '{key}': expected an integer from {lo} to {hi}, got {v!r}")

        def boolean(key: str) -> None:
            v = getattr(self, key)
            if not isinstance(v, bool):
                raise ConfigError(f"config key '{key}': expected true or false, got {v!r}")

        for key in LISTEN_KEYS:
            items = getattr(self, key)
            if not isinstance(items, list):
                raise ConfigError(f"config key '{key}': expected a list of HOST:PORT, got {items!r}")
            for item in items:
                parse_listen(item, key)
        if not any(getattr(self, key) for key in LISTEN_KEYS):
            raise ConfigError(f"config key 'listen': expected a non-empty list of HOST:PORT (or at least one "
                              f"of tls_listen, ws_listen, wss_listen), got {self.listen!r}")
        self._validate_tls_ws()
        int_range("max_packet_size", 64, MAX_PACKET_LIMIT)
        int_range("receive_maximum", 1, 65535)
        int_range("maximum_qos", 0, 2)
        int_range("topic_alias_maximum", 0, 65535)
        int_range("max_keep_alive", 1, 65535)
        int_range("max_session_expiry", 0, UINT32_MAX)
        int_range("max_queued_messages", 0, 100_000_000)
        int_range("max_queued_bytes", 0, 2**62)
        int_range("max_connections", 0, 100_000_000)
        int_range("max_topic_length", 1, 65535)
        int_range("max_topic_levels", 1, 512)
        int_range("max_subscriptions_per_client", 1, 100_000_000)
        if isinstance(self.max_publish_rate, bool) or not isinstance(self.max_publish_rate, (int, float)) \
                or not 0 <= self.max_publish_rate <= 1e9:
            raise ConfigError(f"config key 'max_publish_rate': expected PUBLISH packets per second, a number from "
                              f"0 (no limit) to 1e9, got {self.max_publish_rate!r}")
        for key in ("retain_available", "outbound_topic_aliases", "wildcard_subscription_available",
                    "subscription_identifier_available", "shared_subscription_available",
                    "allow_zero_keep_alive", "queue_qos0", "sys_events", "will_cause_property"):
            boolean(key)
        if isinstance(self.connect_timeout, bool) or not isinstance(self.connect_timeout, (int, float)) \
                or not 0 < self.connect_timeout <= 3600:
            raise ConfigError(f"config key 'connect_timeout': expected seconds (0 < s <= 3600), "
                              f"got {self.connect_timeout!r}")
        for key, choices in (("fsync", ("always", "batch", "off")), ("shutdown_wills", ("keep", "publish"))):
            if getattr(self, key) not in choices:
                raise ConfigError(f"config key '{key}': expected one of {', '.join(choices)}, "
                                  f"got {getattr(self, key)!r}")
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError(f"config key 'data_dir': expected a directory path, got {self.data_dir!r}")
        boolean("memory")
        if isinstance(self.recovery_grace, bool) or not isinstance(self.recovery_grace, (int, float)) \
                or not 0 <= self.recovery_grace <= 86400:
            raise ConfigError(f"config key 'recovery_grace': expected seconds from 0 to 86400, "
                              f"got {self.recovery_grace!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"config key 'log_level': expected one of debug, info, warning, error, "
                              f"got {self.log_level!r}")
        for key in ("admin_listen", "admin_token"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"config key '{key}': expected a string, got {getattr(self, key)!r}")
        if not isinstance(self.node_name, str) or not self.node_name or len(self.node_name) > 255 \
                or any(c in self.node_name for c in "/+#\x00"):
            raise ConfigError(f"config key 'node_name': expected a name of 1 to 255 characters without "
                              f"'/', '+', '#' (it is one level of the $SYS topics), got {self.node_name!r}")
        p = self.presence_topic
        if not isinstance(p, str) or (p and (p.count("{client_id}") != 1 or "+" in p or "#" in p
                                             or "\x00" in p or len(p.encode("utf-8")) > 60000)):
            raise ConfigError(f"config key 'presence_topic': expected a topic name with '{{client_id}}' exactly "
                              f"once and no wildcards (e.g. 'presence/{{client_id}}'), or empty for no presence, "
                              f"got {p!r}")
        if self.admin_listen:
            host, _ = parse_listen(self.admin_listen, "admin_listen")
            if not self.admin_token and not is_loopback(host):
                raise ConfigError(f"config key 'admin_token': required when admin_listen "
                                  f"({self.admin_listen!r}) is not a loopback address: the admin API must not "
                                  f"be open to the network (clients send 'Authorization: Bearer <token>')")
        self._validate_auth()
        return self

    def _validate_auth(self) -> None:
        """password_file, acl_file, allow_anonymous (the files themselves are read at start-up: edge/security.py)."""
        for key in ("password_file", "acl_file"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"config key '{key}': expected the path of a file, got {getattr(self, key)!r}")
        if self.allow_anonymous is not None and not isinstance(self.allow_anonymous, bool):
            raise ConfigError(f"config key 'allow_anonymous': expected true or false, got {self.allow_anonymous!r}")
        if self.allow_anonymous is None:
            exposed = [item for _, item in self.listeners() if not is_loopback(parse_listen(item)[0])]
            if exposed and not self.password_file and not self.tls_cert_cn_as_username:
                raise ConfigError(f"config key 'allow_anonymous': listener {exposed[0]!r} is not a loopback "
                                  f"address and no client could log in: set password_file (clients give a user "
                                  f"name and password; 'lastwill passwd FILE USER' makes it), or "
                                  f"allow_anonymous = true to let anyone who reaches the port connect")

    def anonymous_allowed(self) -> bool:
        """May a client without a user name connect? allow_anonymous, or when unset: only if every
        listener is on a loopback address."""
        if self.allow_anonymous is not None:
            return bool(self.allow_anonymous)
        return all(is_loopback(parse_listen(item)[0]) for _, item in self.listeners())

    def _validate_tls_ws(self) -> None:
        """The TLS and WebSocket keys (the files themselves are read at start-up: edge/tls.py)."""
        for key in ("tls_cert", "tls_key", "tls_ca", "ws_path"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"config key '{key}': expected a string, got {getattr(self, key)!r}")
        for key in ("tls_require_client_cert", "tls_cert_cn_as_username"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"config key '{key}': expected true or false, got {getattr(self, key)!r}")
        if self.tls_listen or self.wss_listen:
            which = "tls_listen" if self.tls_listen else "wss_listen"
            for key in ("tls_cert", "tls_key"):
                if not getattr(self, key):
                    raise ConfigError(f"config key '{key}': required when {which} is set: expected the path "
                                      f"of a PEM file ({'the server certificate' if key == 'tls_cert' else 'its private key'})")
        if self.tls_require_client_cert and not self.tls_ca:
            raise ConfigError("config key 'tls_ca': required when tls_require_client_cert is true: expected the "
                              "path of a PEM file of the CA certificates that sign client certificates")
        if self.tls_cert_cn_as_username and not self.tls_require_client_cert:
            raise ConfigError("config key 'tls_cert_cn_as_username': needs tls_require_client_cert = true (a "
                              "client without a certificate would otherwise choose its own user name)")
        p = self.ws_path
        if not p.startswith("/") or any(c in p for c in " ?#\x00\r\n") or len(p) > 1024:
            raise ConfigError(f"config key 'ws_path': expected an HTTP path starting with '/', without spaces, "
                              f"'?' or '#' (e.g. '/mqtt'), got {p!r}")

    def listeners(self) -> list[tuple[str, str]]:
        """Every listener as (kind, "HOST:PORT"); kind is "mqtt", "mqtts", "ws" or "wss"
        (e.g. to tell whether any listener is reachable beyond loopback)."""
        return [(kind, item) for key, kind in zip(LISTEN_KEYS, LISTENER_KINDS, strict=True)
                for item in getattr(self, key)]

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes).validate()


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    """"HOST:PORT" -> (host, port). Raises ConfigError naming the key (``listen`` by default)."""
    if not isinstance(value, str):
        raise ConfigError(f"config key '{key}': expected HOST:PORT strings, got {value!r}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"config key '{key}': expected HOST:PORT with a port from 0 to 65535, got {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1); not for 0.0.0.0 or a name."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file at ``path``, then ``overrides`` (flags). Validated."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise ConfigError(f"config file {str(p)!r}: cannot read it: {e.strerror}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r}: not valid TOML: {e}") from None
        known = set(Config.keys())
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"config file {str(p)!r}: unknown key '{key}' "
                                  f"(known keys: {', '.join(sorted(known))})")
            values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values).validate()
