"""A lastwill broker for tests: ``BrokerThread`` runs one on its own event loop in a background
thread, so that ordinary blocking clients (paho-mqtt, mosquitto_pub, ...) can talk to it from the
test.

    from lastwill.testing import BrokerThread

    with BrokerThread() as broker:               # 127.0.0.1, a free port, in memory
        client.connect("127.0.0.1", broker.port)
        ...
        broker.wait_for_log("will client_id=device-1 published")

With pytest, the ``lastwill_broker`` and ``lastwill_broker_factory`` fixtures (lastwill/testing/plugin.py,
registered as a pytest plugin when lastwill is installed) give a fresh one per test (README "Testing
your MQTT clients").

Settings are those of ``lastwill serve`` (docs/configuration.md); by default it listens on
127.0.0.1 port 0 (a free port, ``broker.port`` says which) and keeps nothing on disk (``memory``),
unless ``data_dir`` is given. The broker's log records (from its thread, ``log_level`` and up) are
kept in ``broker.records``. This module does not import pytest: ``lastwill demo`` uses it too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..broker import Broker
from ..clock import SystemClock
from ..config import Config

__all__ = ["BrokerThread"]

T = TypeVar("T")
START_TIMEOUT = 10.0
CLOCK = SystemClock()
MAX_RECORDS = 100_000  # the oldest records are dropped beyond this (a load test logs a line per connect)


class _Capture(logging.Handler):
    """Keeps the records logged on one thread (the broker's), and wakes those waiting for one.

    A record is kept once the logging call that made it has returned, i.e. once every other handler
    (pytest's, on the root logger) has had it too: on the broker's loop it is kept by a callback run
    after the current one. So a test that waited for a record and then fails finds it in pytest's
    report of its call."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.thread_id: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=MAX_RECORDS)
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread_id:
            return
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon(self.keep, record)
        else:
            self.keep(record)

    def keep(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()


class _LoggerLevel:
    """Lowers the ``lastwill`` logger's level while brokers capture (so that INFO records exist even when
    the application logs only warnings), and puts it back when the last one stops."""

    lock = threading.Lock()
    users = 0
    saved = logging.NOTSET

    @classmethod
    def acquire(cls, level: int) -> None:
        logger = logging.getLogger("lastwill")
        with cls.lock:
            if cls.users == 0:
                cls.saved = logger.level
            cls.users += 1
            if logger.getEffectiveLevel() > level:
                logger.setLevel(level)

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                logging.getLogger("lastwill").setLevel(cls.saved)


class BrokerThread:
    """``lastwill.Broker`` on its own event loop (uvloop when available) in a daemon thread.

    ``start()`` returns once it listens (or raises what stopped it); ``stop()`` stops it and may be
    called more than once; both are also ``with BrokerThread(...) as broker:``. A bad setting raises
    ``ConfigError`` from the constructor.
    """

    def __init__(self, config: Config | None = None, *, log_level: int | str | None = logging.INFO,
                 **settings: Any) -> None:
        if config is None:  # a Config given is used as it is (with ``settings`` changed)
            settings.setdefault("listen", ["127.0.0.1:0"])
            if "data_dir" not in settings:
                settings.setdefault("memory", True)
        self.config = (config or Config()).replace(**settings)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.broker: Broker | None = None
        self.error: BaseException | None = None
        level = logging.getLevelName(log_level.upper()) if isinstance(log_level, str) else log_level
        self._capture = _Capture(level) if level is not None else None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lastwill-broker", daemon=True)

    # ---- life ------------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._capture is not None:
            self._capture.thread_id = threading.get_ident()
        try:
            import uvloop
            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        if self._capture is not None:
            self._capture.loop = self.loop
        try:
            self.broker = Broker(self.config)
            self.loop.run_until_complete(self.broker.start())
        except BaseException as e:  # raised again by start(), in the caller's thread
            self.error = e
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
            self.loop.run_until_complete(self.broker.stop())
        finally:
            self.loop.close()

    def start(self) -> BrokerThread:
        capture = self._capture
        if capture is not None:
            _LoggerLevel.acquire(capture.level)
            logging.getLogger("lastwill").addHandler(capture)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise TimeoutError(f"the broker did not start within {START_TIMEOUT:g} s")
        if self.error is not None:
            self._thread.join(START_TIMEOUT)  # it is ending on its own
            self._release_log()
            raise self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # the loop is closed: the thread is ending on its own
                pass
            self._thread.join(START_TIMEOUT)
        self._release_log()

    def _release_log(self) -> None:
        capture = self._capture
        if capture is not None and capture in logging.getLogger("lastwill").handlers:
            logging.getLogger("lastwill").removeHandler(capture)
            _LoggerLevel.release()

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- where and what ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.broker.addresses[0][0]

    @property
    def port(self) -> int:
        """The port of the first listener (``listen``): a free one chosen at start with port 0."""
        return self.broker.port

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Run ``fn(*args)`` on the broker's loop and return its result or raise its exception
        (to inspect the broker's state, e.g. ``broker.call(lambda: len(broker.broker.core.sessions))``)."""
        future = asyncio.run_coroutine_threadsafe(_call(fn, args), self.loop)
        return future.result(timeout)

    # ---- the broker's log ------------------------------------------------------------------------------
    @property
    def records(self) -> list[logging.LogRecord]:
        """The records the broker logged so far (on its thread, from ``log_level`` up), oldest first."""
        if self._capture is None:
            return []
        with self._capture.changed:
            return list(self._capture.records)

    def log_lines(self) -> list[str]:
        """The records as ``LEVEL logger: message`` lines."""
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]

    def wait_for_log(self, text: str, timeout: float = 5.0) -> logging.LogRecord:
        """The first record whose message contains ``text``, waiting up to ``timeout`` seconds for it;
        AssertionError with the last lines of the log if none comes."""
        capture = self._capture
        if capture is None:
            raise RuntimeError("this BrokerThread captures no log (log_level=None)")
        deadline = CLOCK.monotonic() + timeout
        with capture.changed:
            while True:
                for record in capture.records:
                    if text in record.getMessage():
                        return record
                left = deadline - CLOCK.monotonic()
                if left <= 0:
                    tail = "\n".join(f"  {r.levelname} {r.name}: {r.getMessage()}"
                                     for r in list(capture.records)[-20:])
                    raise AssertionError(f"the broker logged nothing containing {text!r} within {timeout:g} s; "
                                         f"its last lines:\n{tail}")
                capture.changed.wait(left)


async def _call(fn: Callable[..., T], args: tuple) -> T:
    return fn(*args)
