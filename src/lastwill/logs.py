"""The broker's log for operators (``lastwill serve``): where it goes and in which format.

``log_format = "text"`` is the format lastwill always had, one line per event:
``2026-11-25 21:42:52,404 INFO lastwill: connect client_id=...`` (the standard library's Formatter,
unchanged, so the cost per line is the same). ``"json"`` writes one JSON object per line with the
same fields, ``time`` (ISO 8601, local time with its UTC offset, milliseconds), ``level``, ``logger``
and ``message``, then the structured fields a log call passes with ``extra=`` and ``exception`` for
a traceback. ``log_file`` appends to a file instead of stderr; ``reopen()`` (SIGHUP) opens it again,
so that logrotate can move it away.

Embedding (``lastwill.Broker``) does not touch logging: the application configures it.
"""

from __future__ import annotations

import json
import logging
import sys
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


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(config: Config) -> logging.Handler | None:
    """Send the root logger's records to stderr or ``log_file``, in ``log_format``, from ``log_level``
    up (like logging.basicConfig: nothing is changed if the root logger already has a handler).
    Returns the handler installed, or None. Raises ConfigError if log_file cannot be opened."""
    root = logging.getLogger()
    if root.handlers:
        return None
    if config.log_file:
        try:
            handler: logging.Handler = logging.FileHandler(config.log_file, encoding="utf-8")
        except OSError as e:
            raise bad_value("log_file", f"cannot open {config.log_file!r} for appending: {e.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(config.log_format))
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    return handler


def reopen(handler: logging.Handler | None) -> bool:
    """Open ``log_file`` again (after logrotate moved it): later records go to a new file of that
    name. Returns False (and changes nothing) for stderr or a file that cannot be opened."""
    if not isinstance(handler, logging.FileHandler):
        return False
    try:
        stream = open(handler.baseFilename, "a", encoding="utf-8")
    except OSError as e:
        logging.getLogger("lastwill").error("log_file %r: cannot open it again, still writing to the old "
                                            "file: %s", handler.baseFilename, e.strerror)
        return False
    old = handler.setStream(stream)
    if old is not None:
        old.close()
    return True
