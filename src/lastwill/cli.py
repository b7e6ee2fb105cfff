"""The ``lastwill`` command: ``serve`` turns argv into a Config and runs the server; ``explain`` and
``wills`` ask a running broker's admin API (admin_client.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping

from . import logs
from .config import (
    ADMIN_ENV,
    CONFIG_ENV,
    DOCS,
    SCHEMA,
    SETTINGS,
    Config,
    Kind,
    Loaded,
    Setting,
    format_value,
    load,
    stray_environment,
    suggest,
)
from .errors import ConfigError
from .storage.base import StoreError
from .version import __version__

log = logging.getLogger("lastwill")


class Parser(argparse.ArgumentParser):
    """argparse with errors the way lastwill prints them: the error on one line first, then a short
    usage line (not the whole usage of every flag); ``flags`` is every option string added, for the
    "did you mean" of an unknown flag."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # a flag is spelled in full: adding one never breaks another
        self.flags: list[str] = []
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.flags.extend(action.option_strings)
        return action

    def error(self, message: str):  # type: ignore[override]
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"{self.prog}: {message}\n{usage} ('{self.prog} --help' for more)\n")

    def unknown(self, extras: list[str]) -> None:
        """Refuse arguments this command does not take, suggesting the closest flag."""
        word = next((e for e in extras if e.startswith("-")), extras[0])
        if not word.startswith("-"):
            self.error(f"unexpected argument {word!r}")
        flag = word.split("=", 1)[0]
        longer = [f for f in self.flags if f.startswith(flag)]  # an abbreviation (not accepted: allow_abbrev)
        near = longer[0] if len(longer) == 1 else suggest(flag, self.flags)
        self.error(f"unknown flag {flag}" + (f"; did you mean {near}?" if near else ""))


# the commands that ask a running broker's admin API (admin_client.py)
ADMIN_COMMANDS = ("explain", "wills", "disconnect", "delete-session", "publish-will", "cancel-will", "retained")
SERVE_USAGE = "lastwill serve [--config FILE] [--SETTING VALUE ...]"
SERVE_DESCRIPTION = (
    "Run the broker. Every setting below can be given three ways: as a flag, as a key of the TOML file "
    "given to --config (the flag's name with '_' for '-': max_keep_alive = 300), or as an environment "
    "variable LASTWILL_<KEY> (LASTWILL_MAX_KEEP_ALIVE=300; lists comma-separated, booleans true or false). "
    "A flag wins over the environment, which wins over the file. Enumerations are case-insensitive. "
    f"{DOCS} describes every setting.")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting of the schema (config.SCHEMA), with its help, default and choices."""
    for s in SCHEMA:
        limits = f"; from {s.bounds[0]} to {s.bounds[1]}" if s.bounds is not None else ""
        text = f"{s.help} (default: {s.default_text()}{limits})".replace("%", "%%")
        if s.kind is Kind.LIST:
            parser.add_argument(s.flag, dest=s.name, action="append", metavar=s.metavar or "VALUE", help=text)
        elif s.kind in (Kind.BOOL, Kind.OPTIONAL_BOOL):  # allow_anonymous: None = unset
            parser.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        elif s.kind in (Kind.INT, Kind.FLOAT):
            parser.add_argument(s.flag, dest=s.name, type=_typed(s), help=text,
                                metavar=s.metavar or ("N" if s.kind is Kind.INT else "SECONDS"))
        elif s.kind is Kind.CHOICE:
            parser.add_argument(s.flag, dest=s.name, metavar="{" + ",".join(s.choices) + "}", help=text)
        else:
            parser.add_argument(s.flag, dest=s.name, metavar=s.metavar or "VALUE", help=text)


def _typed(s: Setting):
    def convert(text: str):
        try:
            return s.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def build_parser() -> Parser:
    parser = Parser(prog="lastwill", description="MQTT broker with exact, visible wills")
    parser.add_argument("--version", action="version", version=f"lastwill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> Parser:
        parser.commands[name] = sub.add_parser(name, **kwargs)
        return parser.commands[name]

    serve = command("serve", help="run the broker", usage=SERVE_USAGE, description=SERVE_DESCRIPTION)
    serve.add_argument("--config", metavar="FILE",
                       help=f"TOML file with any of the settings below (default: ${CONFIG_ENV}, else none)")
    _add_config_flags(serve)
    _add_admin_commands(command)
    from .demo import add_arguments as add_demo_arguments
    add_demo_arguments(command("demo", help="run the seed scenario and the will cases against a broker"))
    from .passwd import add_arguments as add_passwd_arguments
    add_passwd_arguments(command("passwd", help="add, change or delete a user of a password file"))
    return parser


def _add_admin_commands(command) -> None:
    explain = command("explain", help="print a client's will timeline from a running broker",
                             description="Print the will timeline of CLIENT_ID from a running broker (its admin "
                                         "API, see admin_listen): every event of its will, with the time, the "
                                         "time since the previous event, and the rule that decided it.")
    explain.add_argument("client_id", metavar="CLIENT_ID")
    wills = command("wills", help="list the pending wills of a running broker, with their countdown")
    actions = []
    for name, text in (("disconnect", "disconnect a client (its will is published, as when the server closes a "
                                      "connection; --discard-will discards it first)"),
                       ("delete-session", "delete a client's session (a pending will is published first; "
                                          "--discard-will discards it)"),
                       ("publish-will", "publish a client's pending will now"),
                       ("cancel-will", "cancel a client's pending will: it is never published")):
        p = command(name, help=text, description=f"{text[0].upper()}{text[1:]}, through the admin API of a "
                                                  f"running broker. Recorded on the client's will timeline.")
        p.add_argument("client_id", metavar="CLIENT_ID")
        if name in ("disconnect", "delete-session"):
            p.add_argument("--discard-will", action="store_true",
                           help="discard the client's will first: it is never published (recorded as such)")
        actions.append(p)
    retained = command("retained", help="list, read or delete the retained messages matching a topic filter",
                       description="The retained messages matching TOPIC_FILTER (default '#'), from a running "
                                   "broker's admin API: topic, QoS, size, expiry and the start of the payload.")
    retained.add_argument("topic_filter", metavar="TOPIC_FILTER", nargs="?", default="#")
    retained.add_argument("--payload", action="store_true", help="print each payload in full")
    retained.add_argument("--delete", action="store_true", help="delete them (nothing is published)")
    for p in (explain, wills, *actions, retained):
        p.add_argument("--admin", metavar="URL",
                       help=f"the broker's admin API (default: ${ADMIN_ENV}, else the broker's admin_listen "
                            f"from --config and $LASTWILL_ADMIN_LISTEN, else http://127.0.0.1:8080)")
        p.add_argument("--token", metavar="T",
                       help="bearer token (default: $LASTWILL_ADMIN_TOKEN, else --config's admin_token)")
        p.add_argument("--config", metavar="FILE",
                       help=f"the broker's TOML config, for admin_listen and admin_token (default: ${CONFIG_ENV})")
        p.add_argument("--json", action="store_true", help="print the API's JSON instead of text")


def _ask(args: argparse.Namespace) -> int:
    """The commands that ask the admin API of a running broker (ADMIN_COMMANDS)."""
    from .admin_client import ACTIONS, AdminError, act, explain, pending_wills, retained

    try:
        if args.command == "explain":
            text = explain(args.client_id, args.admin, args.token, args.config, args.json)
        elif args.command in ACTIONS:
            text = act(args.command, args.client_id, getattr(args, "discard_will", False), args.admin, args.token,
                       args.config, args.json)
        elif args.command == "retained":
            text = retained(args.topic_filter, args.delete, args.payload, args.admin, args.token, args.config,
                            args.json)
        else:
            text = pending_wills(args.admin, args.token, args.config, args.json)
    except ConfigError as e:
        print(f"lastwill: {e}", file=sys.stderr)
        return 2
    except AdminError as e:
        print(f"lastwill: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def load_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Loaded:
    """The settings of ``lastwill serve``: defaults < --config file (or $LASTWILL_CONFIG) < LASTWILL_<KEY>
    variables of ``environ`` (os.environ by default) < flags."""
    environ = os.environ if environ is None else environ
    flags = {s.name: getattr(args, s.name, None) for s in SCHEMA}
    for name, value in flags.items():
        if isinstance(value, list):  # a repeatable flag: '' stands for none (--listen '')
            flags[name] = [item for item in value if item != ""]
    return load(args.config or environ.get(CONFIG_ENV) or None, environ, flags)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    return load_from_args(args, environ).config


def log_start(loaded: Loaded) -> None:
    """The version, and the settings that are not defaults with where each came from (the admin token
    hidden), at start-up; structured as fields in the JSON log."""
    import platform

    log.info("lastwill %s starting (Python %s, pid %d)", __version__, platform.python_version(), os.getpid(),
             extra={"version": __version__, "python": platform.python_version(), "pid": os.getpid()})
    config = loaded.config
    shown = {}
    for key in loaded.origin:
        value = getattr(config, key)
        shown[key] = "<hidden>" if SETTINGS[key].secret else value
    text = ", ".join(f"{key}={format_value(value) if isinstance(value, list) else value} ({loaded.origin[key]})"
                     for key, value in shown.items())
    store = f"cluster node {config.cluster_node_id} on {config.cluster}" if config.cluster else \
        "in memory" if config.memory else f"store in {config.data_dir} (fsync {config.fsync})"
    log.info("settings: %s, log %s to %s; not defaults: %s", store, config.log_format, config.log_file or "stderr",
             text or "none", extra={"settings": shown, "origin": dict(loaded.origin)})


class EarlySighup:
    """Notes a SIGHUP that arrives before the event loop handles it (``systemctl reload`` just after
    ``start``: with Type=exec systemd considers the service started as soon as it is executed), so that
    it is done once the broker has started instead of killing the process (SIGHUP's default action)."""

    def __init__(self) -> None:
        self.seen = False
        signal.signal(signal.SIGHUP, self._note)

    def _note(self, signum, frame) -> None:
        self.seen = True


async def _serve(config: Config, log_handler: logging.Handler | None = None,
                 early: EarlySighup | None = None) -> int:
    from .broker import Broker

    broker = Broker(config)
    # signal handlers first: a SIGTERM that arrives while the listeners start still stops cleanly, and
    # a SIGHUP (systemctl reload) is done once they have started instead of killing the process
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = False
    reload_pending = early is not None and early.seen

    def reload() -> None:  # SIGHUP: password_file, acl_file, TLS files again, connections kept
        nonlocal reload_pending
        if not started:
            reload_pending = True
            return
        if logs.reopen(log_handler):  # log_file: after logrotate moved it away
            log.info("SIGHUP: log_file %s opened again", config.log_file)
        log.info("SIGHUP: reloading password_file and acl_file%s",
                 ", and the TLS certificates" if config.tls_listen or config.wss_listen else "")
        broker.reload()
    loop.add_signal_handler(signal.SIGHUP, reload)
    await broker.start()
    started = True
    if reload_pending:
        reload()
    # The broker allocates many short-lived objects without reference cycles; the default gen-0
    # threshold (700) made the collector take about a quarter of the CPU under load
    # (docs/benchmarks.md). Freeze what start-up created and collect far less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)

    fatal = broker.server.fatal
    await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(fatal.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await broker.stop()
    return 1 if fatal.is_set() else 0


def raise_descriptor_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit (one descriptor per connection:
    the usual soft limit, 1024, would cap the broker near a thousand clients), and log it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        log.info("descriptor limit (RLIMIT_NOFILE): %d, already the hard limit", soft)
        return
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warning("descriptor limit (RLIMIT_NOFILE) stays %d: cannot raise it to %d: %s", soft, target, e)
        return
    log.info("descriptor limit (RLIMIT_NOFILE) raised from %d to %d (the hard limit)", soft, target)


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands[args.command].unknown(extras)
    if args.command in ADMIN_COMMANDS:
        return _ask(args)
    if args.command == "demo":
        from .demo import run as run_demo
        return run_demo(args)
    if args.command == "passwd":
        from .passwd import run as run_passwd
        return run_passwd(args)
    try:
        loaded = load_from_args(args)
    except ConfigError as e:
        print(f"lastwill: {e}", file=sys.stderr)
        return 2
    config = loaded.config
    try:
        handler = logs.configure(config)
    except ConfigError as e:
        print(f"lastwill: {e}", file=sys.stderr)
        return 2
    if handler is not None:  # the log is this process's own
        logs.lean_records()
    early = EarlySighup() if args.command == "serve" else None
    log_start(loaded)
    for warning in stray_environment(os.environ):
        log.warning("%s", warning)
    if args.command == "serve":
        raise_descriptor_limit()
        _install_loop()
        try:
            return asyncio.run(_serve(config, handler, early))
        except StoreError as e:
            print(f"lastwill: {e}", file=sys.stderr)
            return 1
        except ConfigError as e:  # found at start-up: a file named by a key (tls_cert, password_file, ...)
            print(f"lastwill: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            where = getattr(e, "listen", None) or ", ".join(item for _, item in config.listeners())
            print(f"lastwill: cannot listen on {where}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 2  # pragma: no cover
