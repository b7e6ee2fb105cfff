"""`lastwill serve` as a process: flags, config file errors, clean shutdown on SIGTERM."""

from __future__ import annotations

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
