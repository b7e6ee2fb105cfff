"""The broker's log for operators (``lastwill serve``): where it goes and in which format.

``log_format = "text"`` is the format lastwill always had, one line per event:
``2026-11-25 21:42:52,404 INFO lastwill: connect client_id=...`` (the standard library's Formatter,
unchanged, so the cost per line is the same). ``"json"`` writes one JSON object per line with the
same fields, ``time`` (ISO 8601, local time with its UTC offset, milliseconds), ``level``, ``logger``
and ``message``, then the structured fields a log call passes with ``extra=`` and ``exception`` for
a traceback. ``log_file`` appends to a file instead of stderr; ``reopen()`` (SIGHUP) opens it again,
so that logrotate can move it away.

Embedding (``lastwill.Broker``) does not touch logging: the application configures it.

The cost of a line. At the default level the broker writes a line per connect, disconnect and will
decision, and through the standard library each cost more than the core's whole handling of a
CONNECT (benchmarks/log_cost.py; a LogRecord, a formatted time, a locked write and flush per line).
So while ``lastwill serve`` owns the log (``configure``), the lines of the hot paths (``FastLogger``)
are kept as their arguments and written with the rest of the loop turn's lines, in one write at the
end of the turn (edge/server.py calls ``flush``); the text is the same. Records from other code take
the standard path into the same buffer, in order; ERROR and above are written at once. Before the
broker's loop runs, and after it stops, every line is written at once. A kill -9 loses at most the
current turn's lines (whose state changes were not committed either).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from .config import Config, bad_value

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# the attributes every LogRecord has; any other one came from extra= and is a structured field
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's extra fields.

    Kept cheap (benchmarks/log_cost.py): the date and UTC offset are formatted once per second, the
    encoder is built once, and the extra fields are found with one set difference."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""
        self._stamp_of = (-1, -1)  # (second, msecs) of _stamp: the lines of a loop turn share it
        self._stamp = ""
        self._offset = ""
        self._encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            t = time.localtime(second)
            offset = t.tm_gmtoff // 60
            sign = "+" if offset >= 0 else "-"
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", t)
            self._offset = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
            self._second = second
        return f"{self._prefix}.{int(msecs):03d}{self._offset}"

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """A line of no more than these fields (FastLogger's)."""
        return self._encode({"time": self._time(created, _msecs(created)), "level": levelname, "logger": name,
                             "message": message})

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self._time(record.created, record.msecs), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        extra = record.__dict__.keys() - _STANDARD
        if extra:
            for key, value in record.__dict__.items():  # in the order the log call gave them
                if key in extra and key not in out:
                    out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return self._encode(out)


def _msecs(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord computes its msecs


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, the standard Formatter's text to the byte, with the date formatted once per second."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._prefix = ""
        self._stamp_of = (-1, -1)  # (second, msecs) of _stamp: the lines of a loop turn share it
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self._asctime(record.created, int(record.msecs))

    def _asctime(self, created: float, msecs: int) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return self.default_msec_format % (self._prefix, msecs)

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """A line of no more than these fields (FastLogger's), as format() writes it."""
        at = (int(created), _msecs(created))
        if at != self._stamp_of:
            self._stamp = self._asctime(created, at[1])
            self._stamp_of = at
        return f"{self._stamp} {levelname} {name}: {message}"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class LineHandler(logging.Handler):
    """The handler ``configure`` installs: lines in ``log_format`` to stderr or ``log_file``. While
    ``batching`` (the broker's loop runs) they are kept and written once per loop turn (``flush``);
    ERROR and above, and every line otherwise, are written at once."""

    def __init__(self, stream, fmt: logging.Formatter, path: str = "") -> None:
        super().__init__()
        self.stream = stream
        self.path = path  # log_file ("" for stderr): reopen() opens it again
        self.setFormatter(fmt)
        self.batching = False
        # formatted lines (str), or the arguments of a FastLogger line: (created, levelno, name, fmt, args)
        self.pending: list = []
        self._write_lock = threading.Lock()  # (records may come from the password-check threads)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record))
        except Exception:  # pragma: no cover - a bad format string: as logging does
            self.handleError(record)
            return
        if not self.batching or record.levelno >= logging.ERROR:
            self.flush()

    def line(self, name: str, levelno: int, fmt: str, args: tuple) -> None:
        """A FastLogger line: kept as its arguments, formatted when written."""
        self.pending.append((time.time(), levelno, name, fmt, args))
        if not self.batching or len(self.pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        with self._write_lock:
            pending, self.pending = self.pending, []
            out = []
            fmt_line = self.formatter.line
            levels: dict[int, str] = {}
            for item in pending:
                if type(item) is str:
                    out.append(item)
                else:
                    created, levelno, name, msg, args = item
                    level = levels.get(levelno)
                    if level is None:
                        level = levels[levelno] = logging.getLevelName(levelno)
                    out.append(fmt_line(created, level, name, msg % args if args else msg))
            out.append("")
            try:
                self.stream.write("\n".join(out))
                self.stream.flush()
            except (OSError, ValueError):  # pragma: no cover - stderr closed, disk full: logging never stops the broker
                pass

    def reopen(self) -> bool:
        if not self.path:
            return False
        try:
            stream = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            logging.getLogger("lastwill").error("log_file %r: cannot open it again, still writing to the old "
                                                "file: %s", self.path, e.strerror)
            return False
        self.flush()
        old, self.stream = self.stream, stream
        old.close()
        return True

    def close(self) -> None:
        global _active
        self.flush()
        if self.path:
            self.stream.close()
        if _active is self:
            _active = None
        super().close()


_ROOT = logging.getLogger()
_active: LineHandler | None = None  # the handler configure() installed (None: logging is not ours)


class FastLogger:
    """A logger for the broker's hot paths: the lines ``logging.getLogger(name)`` would write, without a
    LogRecord when the log is ``configure``'s alone (``lastwill serve``); the standard logger
    otherwise (an application embedding the broker, a test capturing records). debug, info and
    warning take the fast path; error, exception and critical are the standard logger's."""

    __slots__ = ("logger", "name", "chain", "error", "exception", "critical")

    def __init__(self, name: str) -> None:
        self.logger = logger = logging.getLogger(name)
        self.name = name
        # the loggers whose handlers see its records, but the root (e.g. lastwill.will, lastwill)
        chain = []
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            chain.append(logging.getLogger(".".join(parts[:i])))
        self.chain = tuple(chain)
        self.error, self.exception, self.critical = logger.error, logger.exception, logger.critical

    def _log(self, level: int, fmt: str, args: tuple) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        handler = _active
        if handler is not None and len(_ROOT.handlers) == 1:
            for c in self.chain:  # (a loop, not any() of a generator: this runs per line)
                if c.handlers:
                    break
            else:
                handler.line(self.name, level, fmt, args)
                return
        logger.log(level, fmt, *args)

    def debug(self, fmt: str, *args) -> None:
        self._log(logging.DEBUG, fmt, args)

    def info(self, fmt: str, *args) -> None:
        self._log(logging.INFO, fmt, args)

    def warning(self, fmt: str, *args) -> None:
        self._log(logging.WARNING, fmt, args)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802
        return self.logger.isEnabledFor(level)


def fast_logger(name: str) -> FastLogger:
    return FastLogger(name)


def batching(on: bool) -> None:
    """The broker's loop runs (True): lines wait for the end of the loop turn (``flush``)."""
    if _active is not None:
        _active.batching = on
        if not on:
            _active.flush()


def flush() -> None:
    """The end of a loop turn: write the turn's lines."""
    if _active is not None and _active.pending:
        _active.flush()


def configure(config: Config) -> logging.Handler | None:
    """Send the root logger's records to stderr or ``log_file``, in ``log_format``, from ``log_level``
    up (like logging.basicConfig: nothing is changed if the root logger already has a handler).
    Returns the handler installed, or None. Raises ConfigError if log_file cannot be opened."""
    global _active
    root = logging.getLogger()
    if root.handlers:
        return None
    if config.log_file:
        try:
            stream = open(config.log_file, "a", encoding="utf-8")
        except OSError as e:
            raise bad_value("log_file", f"cannot open {config.log_file!r} for appending: {e.strerror}") from None
        handler = LineHandler(stream, formatter(config.log_format), config.log_file)
    else:
        handler = LineHandler(sys.stderr, formatter(config.log_format))
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    _active = handler
    return handler


def lean_records() -> None:
    """For a process whose log is ``configure``'s (``lastwill serve``): LogRecords without what they
    cost and no line of lastwill's shows, the thread, process and caller (the logging HOWTO,
    "Optimization"). Process-wide, so not for an application that embeds the broker."""
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


def reopen(handler: logging.Handler | None) -> bool:
    """Open ``log_file`` again (after logrotate moved it): later records go to a new file of that
    name. Returns False (and changes nothing) for stderr or a file that cannot be opened."""
    return isinstance(handler, LineHandler) and handler.reopen()
