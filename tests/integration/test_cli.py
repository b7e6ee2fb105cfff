"""`lastwill serve` as a process: flags, config file errors, clean shutdown on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from lastwill.cli import main

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(tmp_path / "data")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cli-check")
        assert c.connect("127.0.0.1", port) == 0
        c.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "listening on 127.0.0.1:" in err and "shutting down" in err


def test_config_file_unknown_key_named(tmp_path, capsys):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text('listen = ["127.0.0.1:0"]\nrecieve_maximum = 10\n')
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'recieve_maximum'" in err


def test_config_file_bad_value_named(tmp_path, capsys):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("receive_maximum = 0\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    assert "'receive_maximum': expected an integer from 1 to 65535, got 0" in capsys.readouterr().err


def test_config_file_invalid_toml(tmp_path, capsys):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("listen = [\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_bad_listen_flag_named(capsys):
    assert main(["serve", "--listen", "127.0.0.1:notaport"]) == 2
    assert "'listen': expected HOST:PORT" in capsys.readouterr().err


def test_bad_integer_flag_named(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--receive-maximum", "lots"])
    assert "--receive-maximum: expected an integer, got 'lots'" in capsys.readouterr().err


# ---- the flags come from the config schema; errors on one line, then a short usage -----------------
SERVE_USAGE = "usage: lastwill serve [--config FILE] [--SETTING VALUE ...] ('lastwill serve --help' for more)\n"


def serve_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_serve_flag_has_its_help_default_and_choices(capsys, monkeypatch):
    from lastwill.config import SCHEMA

    text = " ".join(serve_help(capsys, monkeypatch).split())
    for s in SCHEMA:
        limits = f"; from {s.bounds[0]} to {s.bounds[1]}" if s.bounds else ""
        assert f"{s.help} (default: {s.default_text()}{limits})" in text, s.name
        if s.choices:
            assert f"{s.flag} {{{','.join(s.choices)}}}" in text, s.name
    assert text.count("(default: ") == len(SCHEMA) + 1  # and --config


def test_serve_help_shows_a_choice_flag_exactly(capsys, monkeypatch):
    out = serve_help(capsys, monkeypatch)
    assert out.startswith("usage: lastwill serve [--config FILE] [--SETTING VALUE ...]\n\nRun the broker.")
    start = out.index("  --shutdown-wills")
    assert out[start:out.index("\n  --", start) + 1] == (  # up to the next flag, whichever it is
        "  --shutdown-wills {keep,publish}\n"
        "                        the wills of clients connected at a clean shutdown: keep them pending for\n"
        "                        the next start, or publish them (default: keep)\n")
    start = out.index("  --receive-maximum")
    assert out[start:out.index("\n  --", start) + 1] == (
        "  --receive-maximum N   QoS 1 and 2 messages a client may have unacknowledged (MQTT 5 Receive\n"
        "                        Maximum) (default: 1024; from 1 to 65535)\n")


def test_log_level_flag_is_case_insensitive():
    from lastwill.cli import build_parser, config_from_args

    args = build_parser().parse_args(["serve", "--log-level", "DEBUG", "--fsync", "Off"])
    config = config_from_args(args, environ={})
    assert (config.log_level, config.fsync) == ("debug", "off")


def test_bad_integer_flag_is_one_line_then_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--max-keep-alive", "abc"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("lastwill serve: argument --max-keep-alive: expected an integer, got 'abc'\n"
                                       + SERVE_USAGE)


def test_unknown_flag_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--max-keepalive", "300"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "lastwill serve: unknown flag --max-keepalive; did you mean --max-keep-alive?\n" \
        + SERVE_USAGE
    with pytest.raises(SystemExit):
        main(["serve", "--colour=blue"])
    assert capsys.readouterr().err == "lastwill serve: unknown flag --colour\n" + SERVE_USAGE
    with pytest.raises(SystemExit):
        main(["wills", "--tokn", "x"])
    assert capsys.readouterr().err == (
        "lastwill wills: unknown flag --tokn; did you mean --token?\n"
        "usage: lastwill wills [-h] [--admin URL] [--token T] [--config FILE] [--json] ('lastwill wills --help' for "
        "more)\n")


def test_flags_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--max-keep", "300"])
    assert capsys.readouterr().err.startswith("lastwill serve: unknown flag --max-keep; did you mean --max-keep-alive?")


def test_config_file_misspelled_key_exact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lastwill.toml").write_text("max_keepalive = 300\n")
    assert main(["serve", "--config", "lastwill.toml"]) == 2
    assert capsys.readouterr().err == ("lastwill: config file 'lastwill.toml': unknown key 'max_keepalive'; did you "
                                       "mean 'max_keep_alive'?\n")


def test_mosquitto_conf_given_to_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mosquitto.conf").write_text("# mosquitto\n\nlistener 1883\nallow_anonymous true\n")
    assert main(["serve", "--config", "mosquitto.conf"]) == 2
    assert capsys.readouterr().err == (
        "lastwill: config file 'mosquitto.conf': this is a mosquitto.conf (line 3: 'listener 1883'): lastwill does "
        "not read mosquitto's format; its settings are TOML keys, listed with mosquitto's equivalents in "
        "docs/configuration.md\n")


def test_settings_from_the_environment_and_their_precedence(tmp_path, monkeypatch):
    from lastwill.cli import build_parser, load_from_args

    cfg = tmp_path / "lastwill.toml"
    cfg.write_text('max_keep_alive = 100\nreceive_maximum = 10\nadmin_token = "from-file"\n')
    monkeypatch.setenv("LASTWILL_CONFIG", str(cfg))
    monkeypatch.setenv("LASTWILL_MAX_KEEP_ALIVE", "200")
    monkeypatch.setenv("LASTWILL_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("LASTWILL_LISTEN", "127.0.0.1:1884,[::1]:1884")
    monkeypatch.setenv("LASTWILL_LOG_LEVEL", "WARNING")
    parser = build_parser()
    loaded = load_from_args(parser.parse_args(["serve"]))
    c = loaded.config
    assert (c.max_keep_alive, c.receive_maximum, c.admin_token) == (200, 10, "from-env")
    assert c.listen == ["127.0.0.1:1884", "[::1]:1884"] and c.log_level == "warning"
    assert loaded.origin["receive_maximum"] == f"config file {str(cfg)!r}"
    c = load_from_args(parser.parse_args(["serve", "--max-keep-alive", "300", "--listen", "127.0.0.1:1885"])).config
    assert (c.max_keep_alive, c.listen) == (300, ["127.0.0.1:1885"])


def test_bad_environment_value_is_named(capsys, monkeypatch):
    monkeypatch.setenv("LASTWILL_FSYNC", "sometimes")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == ("lastwill: config key 'fsync': expected one of always, batch, off, got "
                                       "'sometimes' (from LASTWILL_FSYNC)\n")
    monkeypatch.setenv("LASTWILL_FSYNC", "always")
    monkeypatch.setenv("LASTWILL_MAX_KEEP_ALIVE", "5m")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "lastwill: environment variable LASTWILL_MAX_KEEP_ALIVE: expected an integer, " \
                                      "got '5m'\n"


# ---- the operator's log ---------------------------------------------------------------------------
def start_serve(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    import os

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{port}", *args],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)


def stop_serve(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return err


def test_text_log_lines_and_the_start_up_summary(tmp_path):
    from lastwill import __version__

    proc, port = start_serve("--data-dir", str(tmp_path / "data"), "--max-keep-alive", "300",
                             env={"LASTWILL_ADMIN_TOKEN": "s3cret", "LASTWILL_MAX_KEEPALIVE": "1"})
    err = stop_serve(proc)
    lines = err.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.fullmatch(stamp + rf"INFO lastwill: lastwill {re.escape(__version__)} starting \(Python "
                        rf"\d+\.\d+\.\d+, pid {proc.pid}\)", lines[0]), lines[0]
    assert re.fullmatch(stamp + "INFO lastwill: settings: store in " + re.escape(str(tmp_path / "data")) +
                        r" \(fsync batch\), log text to stderr; not defaults: admin_token=<hidden> "
                        r"\(LASTWILL_ADMIN_TOKEN\), listen=127\.0\.0\.1:\d+ \(--listen\), max_keep_alive=300 "
                        r"\(--max-keep-alive\), data_dir=\S+ \(--data-dir\)", lines[1]), lines[1]
    assert re.fullmatch(stamp + "WARNING lastwill: environment variable LASTWILL_MAX_KEEPALIVE is not a setting "
                        r"\(ignored\); did you mean LASTWILL_MAX_KEEP_ALIVE\?", lines[2]), lines[2]
    assert any(re.fullmatch(stamp + rf"INFO lastwill: listening on 127\.0\.0\.1:{port}", line) for line in lines)
    assert "s3cret" not in err


def test_json_log_file_one_object_per_line_reopened_on_sighup(tmp_path):
    log_file = tmp_path / "lastwill.log"
    proc, port = start_serve("--memory", "--log-format", "JSON", "--log-file", str(log_file),
                             env={"LASTWILL_ADMIN_TOKEN": "s3cret"})
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="json-log")
        assert c.connect("127.0.0.1", port) == 0
        c.loop(0.5)
        c.disconnect()
        deadline = time.monotonic() + 5
        while "disconnect client_id=json-log" not in log_file.read_text():
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.05)
        log_file.rename(tmp_path / "lastwill.log.1")
        proc.send_signal(signal.SIGHUP)
        while not log_file.exists() or "reloading" not in log_file.read_text():
            assert time.monotonic() < deadline + 5, "no new log file after SIGHUP"
            time.sleep(0.05)
    finally:
        err = stop_serve(proc)
    assert err == ""  # everything went to the file
    first = [json.loads(line) for line in (tmp_path / "lastwill.log.1").read_text().splitlines()]
    second = [json.loads(line) for line in log_file.read_text().splitlines()]
    for rec in first + second:
        assert list(rec)[:4] == ["time", "level", "logger", "message"], rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", rec["time"])
    start, settings = first[0], first[1]
    assert start["message"].startswith("lastwill ") and start["pid"] == proc.pid and "version" in start
    assert settings["settings"]["admin_token"] == "<hidden>" and settings["settings"]["memory"] is True
    assert settings["origin"] == {"admin_token": "LASTWILL_ADMIN_TOKEN", "listen": "--listen", "memory": "--memory",
                                  "log_format": "--log-format", "log_file": "--log-file"}
    assert any(r["logger"] == "lastwill" and r["message"].startswith("connect client_id=json-log from 127.0.0.1:")
               for r in first)
    assert [r["message"] for r in second][:2] == [f"SIGHUP: log_file {log_file} opened again",
                                                  "SIGHUP: reloading password_file and acl_file"]
    assert second[-1]["message"] == "shutting down"
    assert "s3cret" not in (tmp_path / "lastwill.log.1").read_text()


def test_sighup_during_start_up_is_done_once_started(tmp_path):
    """systemctl reload right after start (Type=exec): a SIGHUP that arrives while the broker starts
    (after its first log line, before the event loop handles signals) must not kill it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(tmp_path / "data")], stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert " starting (Python " in first, first
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, f"killed by the SIGHUP: {proc.returncode}"
                assert time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)
    finally:
        err = first + stop_serve(proc)
    assert err.index("listening on") < err.index("SIGHUP: reloading password_file and acl_file")
