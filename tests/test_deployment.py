"""contrib/lastwill.service, contrib/lastwill.toml and the Dockerfile: checked by the tools that read
them where they can be (systemd-analyze), and their commands run with their environment where they
cannot (the image is not built here: no Docker)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from lastwill.config import load
from lastwill.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "contrib" / "lastwill.service"
EXAMPLE = REPO / "contrib" / "lastwill.toml"
DOCKERFILE = REPO / "Dockerfile"
INSTALLED = "/opt/lastwill/bin/lastwill"  # where the unit expects the venv (its comment says how)
LASTWILL = str(Path(sys.executable).parent / "lastwill")  # this venv's console script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze missing: scripts/test.sh installs the 'systemd' package")
    return path


def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart on this venv's lastwill (systemd-analyze verify wants it to exist);
    nothing else changed."""
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 1
    path = tmp_path / "lastwill.service"
    path.write_text(text.replace(INSTALLED, LASTWILL))
    return path


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    proc = subprocess.run([systemd_analyze(), "verify", str(unit_here(tmp_path))], capture_output=True, text=True)
    # verify exits 0 even for unknown or unparsable settings: it only warns, so no output is the test
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path):
    """The test above is not vacuous: a misspelled or bad setting is reported."""
    path = unit_here(tmp_path)
    path.write_text(path.read_text().replace("ProtectSystem=strict", "ProtectSystem=strcit")
                    .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    proc = subprocess.run([systemd_analyze(), "verify", str(path)], capture_output=True, text=True)
    assert "Failed to parse protect system value" in proc.stderr and "Unknown key" in proc.stderr


def test_systemd_unit_exposure_is_ok(tmp_path):
    """systemd-analyze security's exposure score (0 best, 10 worst) at most 2.0 ("OK")."""
    proc = subprocess.run([systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager",
                           str(unit_here(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    score = re.search(r"Overall exposure level for lastwill\.service: (\d+\.\d)", proc.stdout)
    assert score and float(score.group(1)) <= 2.0


def test_systemd_unit_reload_state_directory_and_hardening():
    s = unit_settings()
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"] == [f"{INSTALLED} serve"]
    assert s["StateDirectory"] == ["lastwill"] and "LASTWILL_DATA_DIR=%S/lastwill" in s["Environment"]
    assert s["DynamicUser"] == ["yes"] and s["User"] == ["lastwill"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("CapabilityBoundingSet", "")):
        assert s[key] == [value], key


def test_systemd_unit_command_runs_with_its_environment_and_reloads(tmp_path):
    """ExecStart with the unit's Environment= (%S in a temporary directory), the example config, the
    ports and password file moved by LASTWILL_ variables; ExecReload's SIGHUP; SIGTERM stops it."""
    state = tmp_path / "state"
    env = {**os.environ}
    for item in unit_settings()["Environment"]:
        key, _, value = item.partition("=")
        env[key] = value.replace("%S", str(state))
    assert env["LASTWILL_CONFIG"] == "/etc/lastwill/lastwill.toml"
    env["LASTWILL_CONFIG"] = str(EXAMPLE)  # what the unit's comment installs there
    port = free_port()
    passwords = tmp_path / "passwords"
    subprocess.run([LASTWILL, "passwd", str(passwords), "alice", "--password-stdin", "--iterations", "1000"],
                   input="secret\n", text=True, check=True)
    env.update(LASTWILL_LISTEN=f"127.0.0.1:{port}", LASTWILL_PASSWORD_FILE=str(passwords),
               LASTWILL_ADMIN_LISTEN=f"127.0.0.1:{free_port()}")
    command = shlex.split(unit_settings()["ExecStart"][0].replace(INSTALLED, LASTWILL))
    state.mkdir()
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the broker did not start"
                time.sleep(0.05)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="svc")
        c.username_pw_set("alice", "secret")  # the password file named by LASTWILL_PASSWORD_FILE
        connacks = []
        c.on_connect = lambda client, userdata, flags, rc, props: connacks.append(rc)
        c.connect("127.0.0.1", port)
        while not connacks and time.monotonic() < deadline:
            c.loop(0.1)
        c.disconnect()
        assert connacks == [0]
        proc.send_signal(signal.SIGHUP)  # ExecReload
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "SIGHUP: reloading password_file and acl_file" in err
    assert (state / "lastwill" / "lastwill.db").exists()  # the StateDirectory holds the store


def test_example_config_is_valid_and_refuses_anonymous_clients():
    config = load(EXAMPLE).config
    assert config.listen == ["0.0.0.0:1883"] and config.password_file and not config.anonymous_allowed()


# ---- the Dockerfile ---------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word, rest))
            pending = ""
    return out


def docker_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_base_user_volume_healthcheck():
    steps = dockerfile()
    words = [w for w, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    user = [rest for w, rest in steps if w == "USER"]
    assert user == ["lastwill"] and words.index("USER") < words.index("ENTRYPOINT")
    assert ("VOLUME", '["/data"]') in steps and docker_env()["LASTWILL_DATA_DIR"] == "/data"
    assert any(w == "RUN" and "useradd --system" in rest and "chown lastwill:lastwill /data" in rest for w, rest in steps)
    assert [rest for w, rest in steps if w == "HEALTHCHECK"][0].endswith('CMD ["lastwill", "wills"]')
    assert ("ENTRYPOINT", '["lastwill"]') in steps and ("CMD", '["serve"]') in steps


def test_dockerfile_settings_need_a_password_file_or_anonymous_clients():
    """Listening on 0.0.0.0 in the image: start-up refuses until the user chooses (README "Docker")."""
    env = docker_env()
    with pytest.raises(ConfigError, match="config key 'allow_anonymous': listener '0.0.0.0:1883' is not a loopback"):
        load(None, env)
    assert load(None, {**env, "LASTWILL_ALLOW_ANONYMOUS": "true"}).config.anonymous_allowed()


def test_dockerfile_healthcheck_command_tells_up_from_down(tmp_path):
    """The image's command and HEALTHCHECK, run here with the image's ENV (ports and /data moved)."""
    env = {**os.environ, **docker_env()}
    port, admin = free_port(), free_port()
    env.update(LASTWILL_LISTEN=f"127.0.0.1:{port}", LASTWILL_ADMIN_LISTEN=f"127.0.0.1:{admin}",
               LASTWILL_DATA_DIR=str(tmp_path / "data"))
    health = ["lastwill", "wills"]
    proc = subprocess.Popen([LASTWILL, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([LASTWILL, *health[1:]], env=env, capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "healthcheck never passed"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0
    down = subprocess.run([LASTWILL, *health[1:]], env=env, capture_output=True, text=True)
    assert down.returncode == 1 and f"cannot reach the admin API at http://127.0.0.1:{admin}" in down.stderr
