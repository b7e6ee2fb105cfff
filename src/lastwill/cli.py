"""The ``lastwill`` command: ``serve`` turns argv into a Config and runs the server; ``explain`` and
``wills`` ask a running broker's admin API (admin_client.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import signal
import sys

from . import __version__
from .config import Config, load_config
from .errors import ConfigError
from .storage.base import StoreError

log = logging.getLogger("lastwill")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config key, so that a flag can set everything the TOML file can."""
    for f in dataclasses.fields(Config):
        if f.name == "listen":
            parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                                help="listen on HOST:PORT (repeatable; default 127.0.0.1:1883; --listen '' "
                                     "for no plain MQTT listener)")
        elif f.type in ("list[str]", list[str]):  # tls_listen, ws_listen, wss_listen, ...
            parser.add_argument(_flag(f.name), dest=f.name, action="append", metavar="VALUE",
                                help="repeatable")
        elif f.type in ("bool", bool, "bool | None"):  # allow_anonymous: None = unset
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None)
        elif f.type in ("int", int):
            parser.add_argument(_flag(f.name), dest=f.name, type=_typed(f.name, int), metavar="N")
        elif f.type in ("float", float):
            parser.add_argument(_flag(f.name), dest=f.name, type=_typed(f.name, float),
                                metavar="PER_SECOND" if f.name.endswith("_rate") else "SECONDS")
        else:
            parser.add_argument(_flag(f.name), dest=f.name, metavar="VALUE")


def _typed(name: str, kind: type):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"flag {_flag(name)}: expected {what}, got {text!r}") from None
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lastwill", description="MQTT broker with exact, visible wills")
    parser.add_argument("--version", action="version", version=f"lastwill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below")
    _add_config_flags(serve)
    _add_admin_commands(sub)
    from .demo import add_arguments as add_demo_arguments
    add_demo_arguments(sub.add_parser("demo", help="run the seed scenario and the will cases against a broker"))
    from .passwd import add_arguments as add_passwd_arguments
    add_passwd_arguments(sub.add_parser("passwd", help="add, change or delete a user of a password file"))
    return parser


def _add_admin_commands(sub) -> None:
    explain = sub.add_parser("explain", help="print a client's will timeline from a running broker",
                             description="Print the will timeline of CLIENT_ID from a running broker (its admin "
                                         "API, see admin_listen): every event of its will, with the time, the "
                                         "time since the previous event, and the rule that decided it.")
    explain.add_argument("client_id", metavar="CLIENT_ID")
    wills = sub.add_parser("wills", help="list the pending wills of a running broker, with their countdown")
    for p in (explain, wills):
        p.add_argument("--admin", metavar="URL",
                       help="the broker's admin API (default: from --config's admin_listen, else "
                            "http://127.0.0.1:8080)")
        p.add_argument("--token", metavar="T",
                       help="bearer token (default: --config's admin_token, else $LASTWILL_ADMIN_TOKEN)")
        p.add_argument("--config", metavar="FILE", help="the broker's TOML config, for admin_listen and admin_token")
        p.add_argument("--json", action="store_true", help="print the API's JSON instead of text")


def _ask(args: argparse.Namespace) -> int:
    """``explain`` and ``wills``: ask the admin API of a running broker."""
    from .admin_client import AdminError, explain, pending_wills

    try:
        if args.command == "explain":
            text = explain(args.client_id, args.admin, args.token, args.config, args.json)
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


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Config)}
    for name, value in overrides.items():
        if isinstance(value, list):  # a repeatable flag: '' stands for none (--listen '')
            overrides[name] = [item for item in value if item != ""]
    return load_config(args.config, **overrides)


async def _serve(config: Config) -> int:
    from .broker import Broker

    broker = Broker(config)
    # signal handlers first: a SIGTERM that arrives while the listeners start still stops cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    # The broker allocates many short-lived objects without reference cycles; the default gen-0
    # threshold (700) made the collector take about a quarter of the CPU under load
    # (docs/benchmarks.md). Freeze what start-up created and collect far less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)

    def reload() -> None:  # SIGHUP: password_file and acl_file again, connections kept (edge/security.py)
        log.info("SIGHUP: reloading password_file and acl_file")
        broker.reload()
    loop.add_signal_handler(signal.SIGHUP, reload)
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
    args = parser.parse_args(argv)
    if args.command in ("explain", "wills"):
        return _ask(args)
    if args.command == "demo":
        from .demo import run as run_demo
        return run_demo(args)
    if args.command == "passwd":
        from .passwd import run as run_passwd
        return run_passwd(args)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"lastwill: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        raise_descriptor_limit()
        _install_loop()
        try:
            return asyncio.run(_serve(config))
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
