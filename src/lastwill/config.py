"""Configuration: one dataclass, filled from defaults, a TOML file, ``LASTWILL_<KEY>`` environment
variables, then command-line flags (each one wins over the one before).

The dataclass is the schema: each field carries its help text, its choices and its bounds
(``setting(...)``), and ``SCHEMA`` describes every key once for the flags of ``lastwill serve``
(cli.py), the environment variables, the validation below and docs/configuration.md.

Every error names the key and what was expected, e.g.
``config key 'receive_maximum': expected an integer from 1 to 65535, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

UINT32_MAX = 0xFFFFFFFF
# the listener keys, and the kind of listener each one makes (Config.listeners())
LISTEN_KEYS = ("listen", "tls_listen", "ws_listen", "wss_listen")
LISTENER_KINDS = ("mqtt", "mqtts", "ws", "wss")
MAX_PACKET_LIMIT = 268_435_460  # largest MQTT packet: 1 + 4 + 268,435,455
ENV_PREFIX = "LASTWILL_"
# environment variables of the lastwill command that are not settings
CONFIG_ENV = "LASTWILL_CONFIG"  # the --config file of serve, explain and wills
ADMIN_ENV = "LASTWILL_ADMIN"  # the admin API's URL for explain and wills (their --admin)
DOCS = "docs/configuration.md"


def default_node_name() -> str:
    """"lastwill@<hostname>", usable as one topic level (the core never asks the system for it)."""
    host = socket.gethostname() or "localhost"
    return "lastwill@" + "".join("_" if c in "/+#\x00" else c for c in host)


def machine_memory() -> int:
    """The memory this process may use: the machine's physical memory, or its cgroup's limit if lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        total = 4 << 30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def default_memory_budget() -> int:
    """Half of what the machine (or the cgroup) has: the rest for the interpreter, the store's cache,
    the socket buffers and the other processes."""
    return machine_memory() // 2


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, choices: tuple[str, ...] = (),
            bounds: tuple[float, float] | None = None, metavar: str | None = None, shown: str | None = None,
            secret: bool = False) -> Any:
    """A field of Config with its description: ``help`` (one sentence or two, shown by --help and in
    docs/configuration.md), ``choices`` (an enumeration, matched case-insensitively), ``bounds`` (the
    range of an integer, checked by validate()), ``metavar`` (the flag's placeholder), ``shown`` (the
    default as text, when the value itself would not say it), ``secret`` (never logged)."""
    meta = {"help": help, "choices": choices, "bounds": bounds, "metavar": metavar, "shown": shown,
            "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # ---- listeners: "HOST:PORT" (IPv6 as "[::1]:1883"). One certificate (tls_cert, tls_key) serves
    # tls_listen and wss_listen (docs/security.md "TLS", "WebSockets")
    listen: list[str] = setting(factory=lambda: ["127.0.0.1:1883"], metavar="HOST:PORT",
                                help="plain MQTT listener, HOST:PORT (IPv6 as [::1]:1883); repeatable; "
                                     "'' for none")
    tls_listen: list[str] = setting(factory=list, metavar="HOST:PORT",
                                    help="MQTT over TLS listener (needs tls_cert and tls_key); repeatable")
    tls_cert: str = setting("", metavar="FILE", help="the server's certificate, a PEM file")
    tls_key: str = setting("", metavar="FILE", help="the private key of tls_cert, a PEM file, unencrypted")
    tls_ca: str = setting("", metavar="FILE",
                          help="PEM file of the CAs that sign client certificates; set: clients are asked for one")
    tls_listener_certs: list[str] = setting(factory=list, metavar="'HOST:PORT cert=FILE key=FILE [ca=FILE]'",
                                            help="a certificate, key and client CAs of one tls_listen or "
                                                 "wss_listen listener (HOST:PORT as written there), instead of "
                                                 "tls_cert, tls_key, tls_ca; repeatable")
    handshake_timeout: float = setting(10.0, bounds=(0.001, 3600), metavar="SECONDS",
                                       help="close a connection whose TLS handshake or WebSocket upgrade is not done "
                                            "within this time (or connect_timeout, if shorter); those under way "
                                            "count toward max_connections")
    tls_require_client_cert: bool = setting(False, help="refuse a TLS client without a valid certificate "
                                                        "(needs tls_ca)")
    tls_cert_cn_as_username: bool = setting(False, help="the client certificate's Common Name is the user name "
                                                        "(needs tls_require_client_cert)")
    ws_listen: list[str] = setting(factory=list, metavar="HOST:PORT",
                                   help="MQTT over WebSockets listener; repeatable")
    wss_listen: list[str] = setting(factory=list, metavar="HOST:PORT",
                                    help="MQTT over WebSockets over TLS listener (needs tls_cert and tls_key); "
                                         "repeatable")
    ws_path: str = setting("/mqtt", metavar="PATH", help="the HTTP path of the WebSocket listeners ('/' is "
                                                         "accepted too)")
    # ---- protocol limits advertised in CONNACK and enforced
    max_packet_size: int = setting(1_048_576, bounds=(64, MAX_PACKET_LIMIT), metavar="BYTES",
                                   help="largest packet, both ways (MQTT 5 Maximum Packet Size)")
    receive_maximum: int = setting(1024, bounds=(1, 65535),
                                   help="QoS 1 and 2 messages a client may have unacknowledged (MQTT 5 Receive "
                                        "Maximum)")
    maximum_qos: int = setting(2, bounds=(0, 2), help="highest QoS the broker accepts (MQTT 5 Maximum QoS)")
    retain_available: bool = setting(True, help="accept retained messages")
    topic_alias_maximum: int = setting(64, bounds=(0, 65535), help="topic aliases a client may use (MQTT 5)")
    outbound_topic_aliases: bool = setting(True, help="use topic aliases when sending to MQTT 5 clients")
    wildcard_subscription_available: bool = setting(True, help="accept subscriptions with + and #")
    subscription_identifier_available: bool = setting(True, help="accept MQTT 5 subscription identifiers")
    shared_subscription_available: bool = setting(True, help="accept $share/ subscriptions")
    # keep-alive: a client asking for more than this (or for 0 when zero is not allowed) is told
    # the server's value in CONNACK (MQTT 5 Server Keep Alive)
    max_keep_alive: int = setting(65535, bounds=(1, 65535), metavar="SECONDS",
                                  help="largest Keep Alive a client may ask for; MQTT 5 clients asking for more "
                                       "are told this one")
    allow_zero_keep_alive: bool = setting(True, help="let clients ask for Keep Alive 0 (no keep-alive)")
    connect_timeout: float = setting(10.0, metavar="SECONDS",
                                     help="close a connection that sends no CONNECT within this time")
    # ---- limits against hostile or broken clients (docs/security.md "Limits"; 0: no limit where allowed).
    # max_connections is counted at accept (connections still to send CONNECT too) and kept below the
    # descriptor limit (edge/server.py)
    max_connections: int = setting(100_000, bounds=(0, 100_000_000),
                                   help="open network connections; one more is closed at once (0: no limit)")
    max_topic_length: int = setting(4096, bounds=(1, 65535), metavar="BYTES",
                                    help="longest topic of a PUBLISH, a will or a subscription filter")
    # the subscription trie is walked recursively: at most 512
    max_topic_levels: int = setting(128, bounds=(1, 512), help="most levels in a topic ('a/b/c' has 3)")
    max_subscriptions_per_client: int = setting(10_000, bounds=(1, 100_000_000), help="subscriptions per session")
    max_publish_rate: float = setting(0.0, metavar="PER_SECOND",
                                      help="PUBLISH packets per second per connection (token bucket; 0: no limit)")
    # ---- sessions
    max_session_expiry: int = setting(UINT32_MAX, bounds=(0, UINT32_MAX), metavar="SECONDS",
                                      help="longest session expiry granted; 4294967295 allows 'never expires'")
    max_queued_messages: int = setting(100_000, bounds=(0, 100_000_000),
                                       help="messages queued per session; more are dropped, counted and logged")
    max_queued_bytes: int = setting(16 * 1024 * 1024, bounds=(0, 2**62), metavar="BYTES",
                                    help="bytes (topics and payloads) queued per session; the same")
    queue_qos0: bool = setting(False, help="queue QoS 0 messages for offline sessions (mosquitto's default: no)")
    # ---- global bounds (docs/security.md "Global bounds"): what the whole broker may hold. Each one left
    # at 0 is derived from memory_budget; beyond a bound the new thing is refused (CONNACK/PUBACK/SUBACK
    # 0x97 Quota exceeded, 3.1.1: return code 3 or a close) and what was accepted is kept
    memory_budget: int = setting(factory=default_memory_budget, bounds=(0, 2**62), metavar="BYTES",
                                 shown="half the machine's memory",
                                 help="memory the global bounds left at 0 are derived from: queued messages 3/8 of "
                                      "it, sessions 32 KiB each, retained messages 4 KiB each and an eighth of it, "
                                      "subscriptions 2 KiB each, a connection's in-flight messages 1/256 of it "
                                      "(0: no global bound unless set)")
    max_total_queued_bytes: int = setting(0, bounds=(0, 2**62), metavar="BYTES", shown="0 (derived)",
                                          help="bytes queued over all sessions (topics, payloads and 290 bytes per "
                                               "message); a QoS 1/2 PUBLISH beyond it is refused, a QoS 0 delivery "
                                               "that would be queued is dropped")
    max_sessions: int = setting(0, bounds=(0, 2**62), shown="0 (derived)",
                                help="sessions, connected and offline; a CONNECT that would make a new one is refused")
    max_offline_sessions: int = setting(0, bounds=(0, 2**62), shown="0 (derived: max_sessions)",
                                        help="sessions kept for clients that are not connected (see "
                                             "offline_session_overflow)")
    offline_session_overflow: str = setting("refuse", choices=("refuse", "expire_oldest"),
                                            help="when max_offline_sessions or max_sessions is reached: refuse the "
                                                 "CONNECT that would need one more, or end the offline session "
                                                 "disconnected longest ago (its pending will is published first)")
    max_retained_messages: int = setting(0, bounds=(0, 2**62), shown="0 (derived)",
                                         help="retained messages; a PUBLISH that would store one more is refused")
    max_retained_bytes: int = setting(0, bounds=(0, 2**62), metavar="BYTES", shown="0 (derived)",
                                      help="bytes (topics and payloads) of the retained messages; the same")
    max_wills: int = setting(0, bounds=(0, 2**62), shown="0 (derived: max_sessions)",
                             help="wills stored (armed or pending); a CONNECT with one more is refused, a will is "
                                  "never dropped once its CONNECT was accepted")
    max_inflight_bytes: int = setting(0, bounds=(0, 2**62), metavar="BYTES", shown="0 (derived)",
                                      help="bytes (topics and payloads) sent to one connection and not yet "
                                           "acknowledged; more wait in the session's queue (one always goes)")
    max_total_subscriptions: int = setting(0, bounds=(0, 2**62), shown="0 (derived)",
                                           help="subscriptions over all sessions (the topic tree); one more is "
                                                "refused with SUBACK 0x97 (3.1.1: 0x80)")
    # ---- persistence (README "Durability")
    data_dir: str = setting("./lastwill-data", metavar="DIR", help="directory of the store (lastwill.db)")
    memory: bool = setting(False, help="keep nothing across restarts (no store)")
    fsync: str = setting("batch", choices=("always", "batch", "off"),
                         help="always: fsync every commit (survives power loss); batch: hand every commit to the "
                              "OS before acknowledging (survives a crash of the broker); off: leave it to the OS")
    recovery_grace: float = setting(30.0, metavar="SECONDS",
                                    help="how long a client has to reconnect after a restart before the will it "
                                         "had when the broker stopped is published")
    shutdown_wills: str = setting("keep", choices=("keep", "publish"),
                                  help="the wills of clients connected at a clean shutdown: keep them pending for "
                                       "the next start, or publish them")
    # ---- logging
    log_level: str = setting("info", choices=("debug", "info", "warning", "error"), help="least severe log level")
    log_format: str = setting("text", choices=("text", "json"),
                              help="text: a line per event (time level logger: message); json: a JSON object "
                                   "per line with the same fields, and structured fields where there are some")
    log_file: str = setting("", metavar="FILE", shown="stderr",
                            help="append the log to this file instead of stderr; opened again on SIGHUP "
                                 "(for logrotate)")
    # ---- the admin HTTP API (JSON, Prometheus /metrics). Clients send "Authorization: Bearer <token>"
    admin_listen: str = setting("", metavar="HOST:PORT", shown="off",
                                help="the admin HTTP API and /metrics on HOST:PORT")
    admin_token: str = setting("", metavar="TOKEN", shown="none", secret=True,
                               help="bearer token the admin API requires; required when admin_listen is not a "
                                    "loopback address (give it as LASTWILL_ADMIN_TOKEN: a flag shows in ps)")
    # ---- what the broker publishes about its clients (README "$SYS events, presence and the will's cause")
    sys_events: bool = setting(True, help="publish $SYS/brokers/<node_name>/clients/<client id>/connected and "
                                          "disconnected events (JSON)")
    sys_interval: int = setting(10, bounds=(0, 86400), metavar="SECONDS",
                                help="seconds between two updates of mosquitto's $SYS/broker/... topics (version, "
                                     "uptime, clients, messages, bytes, subscriptions, retained, load averages); "
                                     "0: none")
    node_name: str = setting(factory=default_node_name, metavar="NAME", shown="lastwill@<hostname>",
                             help="the node's level in the $SYS topics")
    presence_topic: str = setting("", metavar="TOPIC", shown="off",
                                  help="a retained online/offline message per client on this topic; "
                                       "{client_id} is replaced (e.g. presence/{client_id})")
    presence_offline_expiry: int = setting(0, bounds=(0, UINT32_MAX), metavar="SECONDS", shown="0 (kept)",
                                           help="how long a client's retained 'offline' presence message stays: it "
                                                "carries this MQTT 5 Message Expiry Interval and leaves the retained "
                                                "messages when it lapses (0: kept until the client connects again)")
    will_cause_property: bool = setting(False, help="wills carry the User Property (lastwill-cause, <cause>)")
    # ---- authentication and authorization (docs/security.md): both files reloaded on SIGHUP
    password_file: str = setting("", metavar="FILE", shown="none",
                                 help="user:hash lines (lastwill passwd FILE USER; mosquitto_passwd's work too)")
    acl_file: str = setting("", metavar="FILE", shown="none",
                            help="mosquitto's ACL syntax; anything not granted is denied")
    allow_anonymous: bool | None = setting(None, shown="unset: allowed only when every listener is on loopback",
                                           help="let clients without a user name connect")
    # ---- a cluster on Redis (docs/cluster.md): several nodes, one broker to every client
    cluster: str = setting("", metavar="URL", shown="off (one node)",
                           help="run as a node of a cluster whose state is in this Redis 7 server (redis://HOST:PORT/DB); "
                                "sessions, subscriptions, retained messages and wills live there, no local store")
    node_id: str = setting("", metavar="ID", shown="node_name",
                           help="this node's name in the cluster (one node id per process); each start registers a "
                                "new epoch under it")
    cluster_lease: float = setting(10.0, metavar="SECONDS",
                                   help="how long a heartbeat keeps this node alive in the cluster; a node that cannot "
                                        "renew it in time closes its clients and rejoins under a new epoch")
    cluster_heartbeat: float = setting(2.0, metavar="SECONDS", help="how often the node renews its lease")
    cluster_grace: float = setting(2.0, metavar="SECONDS",
                                   help="how long after a node's lease ended the survivors take its sessions and "
                                        "wills over (above the expected clock skew)")
    cluster_unsafe_engine: bool = setting(False, help="accept a Redis that could lose data (no AOF, eviction on): "
                                                      "for tests only")
    # password guessing (docs/security.md "Password guessing"): backoff per source address and user name
    login_backoff: float = setting(1.0, bounds=(0, 3600), metavar="SECONDS",
                                   help="after a failed password check, its address and user name are throttled this "
                                        "long, doubled after each further failure (CONNACK 0x89, 3.1.1 return code 3; "
                                        "the failing CONNACK 0x86 is held as long, at most 5 s); 0: no throttling")
    login_backoff_max: float = setting(60.0, bounds=(0, 86400), metavar="SECONDS",
                                       help="the longest a source address or user name is throttled")

    def validate(self) -> Config:
        """Check every key (raising ConfigError naming it); enumerations are matched case-insensitively
        and stored in lower case. Returns self."""
        for s in SCHEMA:
            value = getattr(self, s.name)
            if s.kind is Kind.BOOL and not isinstance(value, bool):
                raise bad_value(s.name, f"expected true or false, got {value!r}")
            if s.kind is Kind.INT and s.bounds is not None:
                lo, hi = s.bounds
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise bad_value(s.name, f"expected an integer from {lo} to {hi}, got {value!r}")
            if s.kind is Kind.FLOAT and s.bounds is not None:
                lo, hi = s.bounds
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                    raise bad_value(s.name, f"expected a number from {lo:g} to {hi:g}, got {value!r}")
            if s.kind is Kind.CHOICE:
                if isinstance(value, str) and value.lower() in s.choices:
                    setattr(self, s.name, value.lower())
                else:
                    raise bad_value(s.name, f"expected one of {', '.join(s.choices)}, got {value!r}")
        for key in LISTEN_KEYS:
            items = getattr(self, key)
            if not isinstance(items, list):
                raise bad_value(key, f"expected a list of HOST:PORT, got {items!r}")
            for item in items:
                parse_listen(item, key)
        if not any(getattr(self, key) for key in LISTEN_KEYS):
            raise bad_value("listen", f"expected a non-empty list of HOST:PORT (or at least one of tls_listen, "
                                      f"ws_listen, wss_listen), got {self.listen!r}")
        self._validate_tls_ws()
        if isinstance(self.max_publish_rate, bool) or not isinstance(self.max_publish_rate, (int, float)) \
                or not 0 <= self.max_publish_rate <= 1e9:
            raise bad_value("max_publish_rate", f"expected PUBLISH packets per second, a number from 0 (no limit) "
                                                f"to 1e9, got {self.max_publish_rate!r}")
        if isinstance(self.connect_timeout, bool) or not isinstance(self.connect_timeout, (int, float)) \
                or not 0 < self.connect_timeout <= 3600:
            raise bad_value("connect_timeout", f"expected seconds (0 < s <= 3600), got {self.connect_timeout!r}")
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise bad_value("data_dir", f"expected a directory path, got {self.data_dir!r}")
        if isinstance(self.recovery_grace, bool) or not isinstance(self.recovery_grace, (int, float)) \
                or not 0 <= self.recovery_grace <= 86400:
            raise bad_value("recovery_grace", f"expected seconds from 0 to 86400, got {self.recovery_grace!r}")
        for key in ("admin_listen", "admin_token", "log_file"):
            if not isinstance(getattr(self, key), str):
                raise bad_value(key, f"expected a string, got {getattr(self, key)!r}")
        if not isinstance(self.node_name, str) or not self.node_name or len(self.node_name) > 255 \
                or any(c in self.node_name for c in "/+#\x00"):
            raise bad_value("node_name", f"expected a name of 1 to 255 characters without '/', '+', '#' (it is one "
                                         f"level of the $SYS topics), got {self.node_name!r}")
        p = self.presence_topic
        if not isinstance(p, str) or (p and (p.count("{client_id}") != 1 or "+" in p or "#" in p
                                             or "\x00" in p or len(p.encode("utf-8")) > 60000)):
            raise bad_value("presence_topic", f"expected a topic name with '{{client_id}}' exactly once and no "
                                              f"wildcards (e.g. 'presence/{{client_id}}'), or empty for no presence, "
                                              f"got {p!r}")
        self._validate_cluster()
        if self.admin_listen:
            host, _ = parse_listen(self.admin_listen, "admin_listen")
            if not self.admin_token and not is_loopback(host):
                raise bad_value("admin_token", f"required when admin_listen ({self.admin_listen!r}) is not a "
                                               f"loopback address: the admin API must not be open to the network "
                                               f"(clients send 'Authorization: Bearer <token>')")
        self._validate_auth()
        return self

    def _validate_cluster(self) -> None:
        """cluster, node_id and the lease settings (the engine itself is checked at start-up)."""
        for key in ("cluster", "node_id"):
            if not isinstance(getattr(self, key), str):
                raise bad_value(key, f"expected a string, got {getattr(self, key)!r}")
        if self.cluster and not self.cluster.startswith(("redis://", "rediss://", "unix://")):
            raise bad_value("cluster", f"expected a Redis URL (redis://HOST:PORT/DB), got {self.cluster!r}")
        if self.node_id and (len(self.node_id) > 255 or any(c in self.node_id for c in "/+#\x00")):
            raise bad_value("node_id", f"expected a name of 1 to 255 characters without '/', '+', '#', got "
                                       f"{self.node_id!r}")
        for key in ("cluster_lease", "cluster_heartbeat", "cluster_grace"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
                raise bad_value(key, f"expected seconds from 0 to 3600, got {value!r}")
        if not 0 < self.cluster_heartbeat < self.cluster_lease:
            raise bad_value("cluster_heartbeat", f"expected more than 0 and less than cluster_lease "
                                                 f"({self.cluster_lease}s), got {self.cluster_heartbeat!r}")

    @property
    def cluster_node_id(self) -> str:
        """The node's id in the cluster: node_id, or node_name when it is not set."""
        return self.node_id or self.node_name

    def _validate_auth(self) -> None:
        """password_file, acl_file, allow_anonymous (the files themselves are read at start-up: edge/security.py)."""
        for key in ("password_file", "acl_file"):
            if not isinstance(getattr(self, key), str):
                raise bad_value(key, f"expected the path of a file, got {getattr(self, key)!r}")
        if self.allow_anonymous is not None and not isinstance(self.allow_anonymous, bool):
            raise bad_value("allow_anonymous", f"expected true or false, got {self.allow_anonymous!r}")
        if self.allow_anonymous is None:
            exposed = [item for _, item in self.listeners() if not is_loopback(parse_listen(item)[0])]
            if exposed and not self.password_file and not self.tls_cert_cn_as_username:
                raise bad_value("allow_anonymous", f"listener {exposed[0]!r} is not a loopback address and no "
                                                   f"client could log in: set password_file (clients give a user "
                                                   f"name and password; 'lastwill passwd FILE USER' makes it), or "
                                                   f"allow_anonymous = true to let anyone who reaches the port "
                                                   f"connect")

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
                raise bad_value(key, f"expected a string, got {getattr(self, key)!r}")
        own = parse_listener_certs(self.tls_listener_certs)
        for item in own:
            if item not in self.tls_listen and item not in self.wss_listen:
                raise bad_value("tls_listener_certs", f"{item!r} is not a listener of tls_listen or wss_listen "
                                                      f"(written as it is there)")
        if any(item not in own for item in (*self.tls_listen, *self.wss_listen)):
            which = "tls_listen" if any(i not in own for i in self.tls_listen) else "wss_listen"
            for key in ("tls_cert", "tls_key"):
                if not getattr(self, key):
                    raise bad_value(key, f"required when {which} is set: expected the path of a PEM file "
                                         f"({'the server certificate' if key == 'tls_cert' else 'its private key'})")
        if self.tls_require_client_cert and not self.tls_ca:
            raise bad_value("tls_ca", "required when tls_require_client_cert is true: expected the path of a PEM "
                                      "file of the CA certificates that sign client certificates")
        if self.tls_cert_cn_as_username and not self.tls_require_client_cert:
            raise bad_value("tls_cert_cn_as_username", "needs tls_require_client_cert = true (a client without a "
                                                       "certificate would otherwise choose its own user name)")
        p = self.ws_path
        if not p.startswith("/") or any(c in p for c in " ?#\x00\r\n") or len(p) > 1024:
            raise bad_value("ws_path", f"expected an HTTP path starting with '/', without spaces, '?' or '#' "
                                       f"(e.g. '/mqtt'), got {p!r}")

    def listeners(self) -> list[tuple[str, str]]:
        """Every listener as (kind, "HOST:PORT"); kind is "mqtt", "mqtts", "ws" or "wss"
        (e.g. to tell whether any listener is reachable beyond loopback)."""
        return [(kind, item) for key, kind in zip(LISTEN_KEYS, LISTENER_KINDS, strict=True)
                for item in getattr(self, key)]

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: Any) -> Config:
        """A validated copy with ``changes``; an unknown key raises ConfigError (with a suggestion),
        as a misspelled key of a config file does."""
        for key in changes:
            if key not in SETTINGS:
                raise unknown_key(key)
        return dataclasses.replace(self, **changes).validate()


# ---- the schema, read from the dataclass once -------------------------------------------------------
class Kind(enum.Enum):
    """What a setting's value is, as flags, environment variables and TOML give it."""

    TEXT = "text"
    CHOICE = "choice"  # a text among Setting.choices (case-insensitive)
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    OPTIONAL_BOOL = "optional bool"  # unset (None) means "decided from other keys"
    LIST = "list"  # of texts; repeatable flag; comma-separated in the environment


_KINDS = {"str": Kind.TEXT, "int": Kind.INT, "float": Kind.FLOAT, "bool": Kind.BOOL,
          "bool | None": Kind.OPTIONAL_BOOL, "list[str]": Kind.LIST}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Setting:
    """One key of Config as the user meets it: flag, environment variable, TOML key, help."""

    name: str
    kind: Kind
    help: str
    default: Any
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    metavar: str | None = None
    shown: str | None = None
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_text(self) -> str:
        """The default as a user would write it."""
        return self.shown if self.shown is not None else format_value(self.default)

    def parse(self, text: str) -> Any:
        """A value from text (a flag's argument, an environment variable). Raises ValueError saying
        what was expected; range and choice are checked by Config.validate()."""
        if self.kind is Kind.LIST:
            return [item.strip() for item in text.split(",") if item.strip()]
        if self.kind in (Kind.BOOL, Kind.OPTIONAL_BOOL):
            word = text.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            if self.kind is Kind.OPTIONAL_BOOL and word == "":
                return None
            raise ValueError(f"expected true or false, got {text!r}")
        if self.kind is Kind.INT:
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        if self.kind is Kind.FLOAT:
            try:
                return float(text.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {text!r}") from None
        return text


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return "none"
    return str(value)


def _describe(f: dataclasses.Field) -> Setting:
    kind = _KINDS[str(f.type)]
    meta = f.metadata
    if meta["choices"]:
        kind = Kind.CHOICE
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return Setting(f.name, kind, meta["help"], default, meta["choices"], meta["bounds"], meta["metavar"],
                   meta["shown"], meta["secret"])


SCHEMA: tuple[Setting, ...] = tuple(_describe(f) for f in dataclasses.fields(Config))
SETTINGS: dict[str, Setting] = {s.name: s for s in SCHEMA}


# ---- errors ------------------------------------------------------------------------------------------
def bad_value(key: str, text: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {text}", key=key)


def suggest(word: str, candidates: list[str]) -> str | None:
    """The closest candidate to a misspelled word (difflib), if one is close enough."""
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.85)
    return near[0] if near else None


def unknown_key(key: str, where: str = "") -> ConfigError:
    """A key that is not a setting: the same error for a config file and ``Broker(**settings)``."""
    near = suggest(key, list(SETTINGS))
    hint = f"; did you mean '{near}'?" if near else f" (every key is in {DOCS} and 'lastwill serve --help')"
    return ConfigError(f"{where}unknown key '{key}'{hint}", key=key)


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    """"HOST:PORT" -> (host, port). Raises ConfigError naming the key (``listen`` by default)."""
    if not isinstance(value, str):
        raise bad_value(key, f"expected HOST:PORT strings, got {value!r}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise bad_value(key, f"expected HOST:PORT with a port from 0 to 65535, got {value!r}")
    return host, int(port)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key and the client CAs; ``where``: how errors name them ("" for tls_cert,
    tls_key, tls_ca; a tls_listener_certs entry names its listener)."""

    cert: str
    key: str
    ca: str
    where: str = ""

    def name(self, key: str) -> str:
        """The config key as an error names it."""
        if not self.where:
            return key
        return f"tls_listener_certs[{self.where}].{key.removeprefix('tls_')}"


def parse_listener_certs(items: list[str]) -> dict[str, TlsFiles]:
    """tls_listener_certs: {"HOST:PORT": its TlsFiles}; each item is
    "HOST:PORT cert=FILE key=FILE [ca=FILE]". Raises ConfigError naming the key."""
    if not isinstance(items, list):
        raise bad_value("tls_listener_certs", f"expected a list of 'HOST:PORT cert=FILE key=FILE [ca=FILE]', "
                                              f"got {items!r}")
    out = {}
    for item in items:
        words = item.split() if isinstance(item, str) else []
        fields: dict[str, str] = {}
        for word in words[1:]:
            name, eq, value = word.partition("=")
            if not eq or name not in ("cert", "key", "ca") or not value or name in fields:
                fields = {}
                break
            fields[name] = value
        if not words or "cert" not in fields or "key" not in fields:
            raise bad_value("tls_listener_certs", f"expected 'HOST:PORT cert=FILE key=FILE [ca=FILE]', got {item!r}")
        parse_listen(words[0], "tls_listener_certs")
        if words[0] in out:
            raise bad_value("tls_listener_certs", f"{words[0]!r} is given twice")
        out[words[0]] = TlsFiles(fields["cert"], fields["key"], fields.get("ca", ""), words[0])
    return out


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1); not for 0.0.0.0 or a name."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- loading: defaults < config file < environment < flags --------------------------------------------
@dataclass(frozen=True)
class Loaded:
    """A validated Config and, for every key that is not its default, where its value came from
    (``--max-keep-alive``, ``LASTWILL_MAX_KEEP_ALIVE`` or ``config file 'lastwill.toml'``)."""

    config: Config
    origin: Mapping[str, str]


# mosquitto.conf directives, to recognise a mosquitto.conf given to --config (not every one: enough
# that any real file has one of them)
MOSQUITTO_DIRECTIVES = frozenset((
    "listener", "port", "bind_address", "allow_anonymous", "password_file", "acl_file", "persistence",
    "persistence_location", "persistence_file", "autosave_interval", "log_dest", "log_type", "log_timestamp",
    "connection_messages", "include_dir", "per_listener_settings", "max_keepalive", "max_packet_size",
    "max_inflight_messages", "max_queued_messages", "max_queued_bytes", "message_size_limit", "protocol",
    "cafile", "capath", "certfile", "keyfile", "require_certificate", "use_identity_as_username",
    "tls_version", "sys_interval", "retain_available", "persistent_client_expiration", "pid_file", "user",
    "connection", "address", "topic", "max_connections", "set_tcp_nodelay", "socket_domain", "http_dir",
    "websockets_log_level", "plugin", "auth_plugin", "psk_file", "queue_qos0_messages", "upgrade_outgoing_qos",
))
_MOSQUITTO_LINE = re.compile(r"([a-z_]+)(\s+\S.*)?")


def mosquitto_line(text: str) -> tuple[int, str] | None:
    """(line number, line) of the first directive if ``text`` reads like a mosquitto.conf (its first
    line that is not blank or a comment is a mosquitto directive, without '='), else None."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _MOSQUITTO_LINE.fullmatch(line)
        if m and "=" not in line and m.group(1) in MOSQUITTO_DIRECTIVES:
            return number, line
        return None
    return None


def read_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML config file, unknown keys refused (with a suggestion), a mosquitto.conf
    recognised. Values are not validated here."""
    p = Path(path)
    where = f"config file {str(p)!r}: "
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}cannot read it: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        found = mosquitto_line(raw.decode("utf-8", "replace"))
        if found is not None:
            raise ConfigError(f"{where}this is a mosquitto.conf (line {found[0]}: {found[1]!r}): lastwill does not "
                              f"read mosquitto's format; its settings are TOML keys, listed with mosquitto's "
                              f"equivalents in {DOCS}") from None
        raise ConfigError(f"{where}not valid TOML: {e}") from None
    for key in data:
        if key not in SETTINGS:
            raise unknown_key(key, where)
    return data


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as LASTWILL_<KEY> variables, parsed (not validated)."""
    values = {}
    for s in SCHEMA:
        text = environ.get(s.env)
        if text is not None:
            try:
                values[s.name] = s.parse(text)
            except ValueError as e:
                raise ConfigError(f"environment variable {s.env}: {e}", key=s.name) from None
    return values


def stray_environment(environ: Mapping[str, str]) -> list[str]:
    """Warnings for LASTWILL_ variables that are not settings but look like a misspelled one."""
    names = [s.env for s in SCHEMA]
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in names and name not in (CONFIG_ENV, ADMIN_ENV):
            near = suggest(name.removeprefix(ENV_PREFIX).lower(), list(SETTINGS))  # the prefix would match all
            if near:
                out.append(f"environment variable {name} is not a setting (ignored); did you mean "
                           f"{SETTINGS[near].env}?")
    return out


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
         flags: Mapping[str, Any] | None = None) -> Loaded:
    """Defaults, then the TOML file at ``path``, then ``environ``'s LASTWILL_<KEY> variables, then
    ``flags`` (None values ignored); validated. A bad value's error says where it came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is not None:
        for key, value in read_file(path).items():
            values[key], origin[key] = value, f"config file {str(path)!r}"
    if environ is not None:
        for key, value in read_environment(environ).items():
            values[key], origin[key] = value, SETTINGS[key].env
    for key, value in (flags or {}).items():
        if value is not None:
            if key not in SETTINGS:
                raise unknown_key(key)
            values[key], origin[key] = value, SETTINGS[key].flag
    try:
        config = Config(**values).validate()
    except ConfigError as e:
        if e.key in origin:
            raise ConfigError(f"{e} (from {origin[e.key]})", key=e.key) from None
        raise
    return Loaded(config, origin)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file at ``path``, then ``overrides`` (flags). Validated."""
    return load(path, None, overrides).config


def settings_markdown() -> str:
    """The table of every setting for docs/configuration.md (scripts/gen_configuration.py)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    rows = ["| key | flag | environment | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in SCHEMA:
        meaning = s.help
        if s.choices:
            meaning += "; one of " + ", ".join(s.choices)
        if s.bounds is not None:
            meaning += f"; from {s.bounds[0]} to {s.bounds[1]}"
        rows.append(f"| `{s.name}` | `{s.flag}` | `{s.env}` | {cell(s.default_text())} | {cell(meaning)} |")
    return "\n".join(rows) + "\n"
