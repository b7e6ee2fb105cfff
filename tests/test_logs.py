"""The operator's log (src/lastwill/logs.py): text as it always was, JSON with the same fields,
log_file and its reopening on SIGHUP."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time

import pytest

from lastwill.config import Config
from lastwill.errors import ConfigError
from lastwill.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    batching,
    configure,
    fast_logger,
    flush,
    formatter,
    reopen,
)


def record(msg="connect client_id=%s from %s", args=("sensor-1", "127.0.0.1:5000"), name="lastwill",
           level=logging.INFO, **extra) -> logging.LogRecord:
    r = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    r.created = time.mktime((2026, 11, 25, 21, 42, 52, 0, 0, -1)) + 0.404
    r.msecs = 404.0
    r.__dict__.update(extra)
    return r


def test_text_format_is_the_one_lastwill_always_wrote():
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    assert formatter("text").format(record()) == \
        "2026-11-25 21:42:52,404 INFO lastwill: connect client_id=sensor-1 from 127.0.0.1:5000"


def test_json_has_the_same_fields_and_the_structured_ones():
    line = JsonFormatter().format(record(settings={"max_keep_alive": 300}, version="0.1.0"))
    assert "\n" not in line
    out = json.loads(line)
    assert list(out) == ["time", "level", "logger", "message", "settings", "version"]
    assert out["time"].startswith("2026-11-25T21:42:52.404") and out["time"][23] in "+-"  # local time, its offset
    assert (out["level"], out["logger"], out["message"]) == ("INFO", "lastwill",
                                                             "connect client_id=sensor-1 from 127.0.0.1:5000")
    assert out["settings"] == {"max_keep_alive": 300} and out["version"] == "0.1.0"


def test_json_keeps_a_traceback_and_odd_values_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        r = record(msg="internal error %r", args=(b"\x00\xff",), level=logging.ERROR, peer=("::1", 1883, 0, 0),
                   when=object())
        r.exc_info = sys.exc_info()
    line = JsonFormatter().format(r)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "internal error b'\\x00\\xff'" and out["level"] == "ERROR"
    assert out["exception"].startswith("Traceback") and "ValueError: bad\nthing" in out["exception"]
    assert out["peer"] == ["::1", 1883, 0, 0] and out["when"].startswith("<object object")


@contextlib.contextmanager
def bare_root():
    """The root logger without pytest's handlers (added for each phase of a test, so this is entered
    in the test's body), as in a fresh `lastwill serve` process."""
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    root.handlers = []
    try:
        yield root
    finally:
        for h in root.handlers:
            h.close()
        root.handlers = handlers
        root.setLevel(level)


def test_log_file_in_json_and_opened_again_after_logrotate(tmp_path):
    path = tmp_path / "lastwill.log"
    with bare_root() as root:
        handler = configure(Config(log_file=str(path), log_format="json", log_level="debug").validate())
        assert root.handlers == [handler] and root.level == logging.DEBUG
        # loggers of this test's own (other tests may leave a level on lastwill's)
        logging.getLogger("logtest.will").debug("will client_id=%s armed", "a")
        path.rename(tmp_path / "lastwill.log.1")  # what logrotate does, then it sends SIGHUP
        logging.getLogger("logtest").info("still the old file until reopened")
        assert reopen(handler)
        logging.getLogger("logtest").warning("in the new file")
    old = [json.loads(line) for line in (tmp_path / "lastwill.log.1").read_text().splitlines()]
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["logger"], r["level"], r["message"]) for r in old] == [
        ("logtest.will", "DEBUG", "will client_id=a armed"), ("logtest", "INFO", "still the old file until reopened")]
    assert [r["message"] for r in new] == ["in the new file"]


def test_stderr_in_text_is_not_reopened():
    with bare_root() as root:
        handler = configure(Config().validate())
        assert root.handlers == [handler] and root.level == logging.INFO
        assert handler.stream is sys.stderr
        assert handler.formatter.format(record()) == formatter("text").format(record())
        assert not reopen(handler) and not reopen(None)


def test_a_log_file_that_cannot_be_opened_is_named(tmp_path):
    bad = tmp_path / "no" / "such" / "dir.log"
    with bare_root() as root:
        with pytest.raises(ConfigError) as err:
            configure(Config(log_file=str(bad)).validate())
        assert root.handlers == []
    assert str(err.value) == f"config key 'log_file': cannot open {str(bad)!r} for appending: No such file or directory"


def test_logging_already_configured_is_left_alone(monkeypatch):
    root = logging.getLogger()
    mine = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [mine])
    assert configure(Config(log_format="json").validate()) is None and root.handlers == [mine]


# ---- the cost of a line (issue 10): the hot paths' lines kept as arguments, written once per loop turn
class Sink:
    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_fast_logger_writes_the_line_the_standard_logger_writes(log_format):
    with bare_root() as root:
        handler = configure(Config(log_format=log_format).validate())
        handler.stream = sink = Sink()
        fast, std = fast_logger("logtest.fast"), logging.getLogger("logtest.fast")
        fast.info("connect client_id=%s from %s", "sensor-1", "127.0.0.1:5000")
        std.info("connect client_id=%s from %s", "sensor-1", "127.0.0.1:5000")
        assert root.handlers == [handler]
    a, b = sink.writes[0].rstrip("\n"), sink.writes[1].rstrip("\n")
    if log_format == "json":  # the same fields, in the same order; the times a few microseconds apart
        ja, jb = json.loads(a), json.loads(b)
        assert list(ja) == list(jb) == ["time", "level", "logger", "message"]
        assert [ja[k] for k in ("level", "logger", "message")] == [jb[k] for k in ("level", "logger", "message")]
        a, b = ja["time"], jb["time"]
    assert a[:19] == b[:19] or a[:16] == b[:16]  # the same second (or minute, at a second's edge)
    assert a[23:] == b[23:]


def test_lines_wait_for_the_end_of_the_turn_and_an_error_writes_them_at_once_in_order():
    with bare_root():
        handler = configure(Config().validate())
        handler.stream = sink = Sink()
        batching(True)
        try:
            fast_logger("logtest").info("one %d", 1)
            logging.getLogger("logtest").warning("two")
            fast_logger("logtest").warning("three")
            assert sink.writes == []  # held until the end of the loop turn
            flush()
            assert len(sink.writes) == 1 and [line.split(": ", 1)[1] for line in sink.writes[0].splitlines()] == \
                ["one 1", "two", "three"]
            fast_logger("logtest").info("four")
            logging.getLogger("logtest").error("five")  # an error is written at once, after what came before
            assert [line.split(": ", 1)[1] for line in sink.writes[1].splitlines()] == ["four", "five"]
        finally:
            batching(False)


def test_fast_logger_is_the_standard_logger_when_logging_is_not_lastwills(caplog):
    caplog.set_level(logging.INFO, logger="logtest")
    fast_logger("logtest").info("embedded %s", "broker")
    assert [r.getMessage() for r in caplog.records] == ["embedded broker"]


def test_a_handler_on_lastwills_logger_gets_the_records_of_the_fast_path():
    """lastwill.testing captures the broker's records with a handler on the "lastwill" logger: the
    fast path must not go around it."""
    with bare_root():
        handler = configure(Config().validate())
        handler.stream = Sink()
        captured = []

        class Keep(logging.Handler):
            def emit(self, record):
                captured.append(record.getMessage())

        keep = Keep()
        logging.getLogger("logtest").addHandler(keep)
        try:
            fast_logger("logtest.will").info("will client_id=%s armed", "a")
        finally:
            logging.getLogger("logtest").removeHandler(keep)
    assert captured == ["will client_id=a armed"]
