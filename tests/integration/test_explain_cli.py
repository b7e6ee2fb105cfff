"""`lastwill explain` and `lastwill wills` against a real broker's admin API: the text a user pastes
into an issue (aligned, local times, rules), tokens, and the errors when something is wrong."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from lastwill.admin_client import duration, local
from lastwill.cli import main
from tests.integration.conftest import StepClient

pytestmark = pytest.mark.integration

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url(b) -> str:
    return f"http://127.0.0.1:{b.broker.admin_port}"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def admin(broker_factory):
    return broker_factory(admin_listen="127.0.0.1:0")


def wait_for_kinds(capsys, b, client_id: str, n: int) -> dict:
    deadline = time.monotonic() + 5
    while True:
        rc, out, _ = run(capsys, "explain", client_id, "--admin", url(b), "--json")
        body = json.loads(out) if rc == 0 else {"events": []}
        if len(body["events"]) >= n or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_explain_prints_one_aligned_line_per_event(admin, capsys):
    c = StepClient(admin.port, "sensor-7", version=5, session_expiry=60, will=("dead/sensor-7", b"off", 1, False),
                   will_props={"WillDelayInterval": 30})
    c.crash()
    time.sleep(0.05)
    c = StepClient(admin.port, "sensor-7", version=5, clean=False, session_expiry=60,
                   will=("dead/sensor-7", b"off", 1, False))  # back before the delay: cancelled
    c.disconnect()  # DISCONNECT 0x00: cancelled too
    body = wait_for_kinds(capsys, admin, "sensor-7", 6)
    assert [e["kind"] for e in body["events"]] == ["armed", "connection-ended", "deferred", "cancelled",
                                                  "armed", "cancelled"]
    rc, out, err = run(capsys, "explain", "sensor-7", "--admin", url(admin))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "client 'sensor-7': not connected; its session is kept"
    assert lines[1] == "will:   none"
    assert lines[2].startswith("status: the will was cancelled, never published: DISCONNECT with reason 0x00")
    header = next(i for i, line in enumerate(lines) if line.startswith("TIME"))
    head = lines[header]
    rows = lines[header + 1:]
    assert len(rows) == 6 and all(TIME.match(r) for r in rows)
    # the columns line up under their headings
    for row, event in zip(rows, body["events"], strict=True):
        assert row[head.index("EVENT"):].startswith(event["kind"] + " ")
        assert row[head.index("RULE"):].startswith(f"[{event['rule']}]")
        assert row[head.index("DETAIL"):].startswith(event["detail"])
        assert row.startswith(local(event["at"]))  # local time, to the millisecond
    since_end = head.index("SINCE PREV") + len("SINCE PREV")
    assert rows[0][len("2000-01-01 00:00:00.000"):since_end].strip() == ""  # nothing before the first
    for previous, row, event in zip(body["events"][:-1], rows[1:], body["events"][1:], strict=True):
        assert row[:since_end].endswith("+" + duration(event["at"] - previous["at"]))
    assert [re.search(r"\[(MQTT-[\d.-]+)\]", r).group(1) for r in rows] == [
        "MQTT-3.1.2-7", "MQTT-3.1.2-8", "MQTT-3.1.3-9", "MQTT-3.1.3-9", "MQTT-3.1.2-7", "MQTT-3.14.4-3"]
    assert "; due " in rows[2]  # the deferred will's deadline, as a local time


def test_explain_of_a_will_nobody_received(admin, capsys):
    StepClient(admin.port, "lonely", version=4, will=("lost/lonely", b"bye", 0, False)).crash()
    wait_for_kinds(capsys, admin, "lonely", 3)
    rc, out, _ = run(capsys, "explain", "lonely", "--admin", url(admin))
    assert rc == 0
    assert "status: the will was published on 'lost/lonely', but no subscription matched it" in out
    assert "published         [MQTT-3.1.2-8]  published on 'lost/lonely', but no subscription matched it" in out


def test_explain_json(admin, capsys):
    live = StepClient(admin.port, "live", version=5, will=("dead/live", b"x", 1, False))
    rc, out, _ = run(capsys, "explain", "live", "--admin", url(admin), "--json")
    body = json.loads(out)
    assert rc == 0 and body["connected"] is True and [e["kind"] for e in body["events"]] == ["armed"]
    live.disconnect()


def test_explain_unknown_client(admin, capsys):
    rc, out, err = run(capsys, "explain", "ghost", "--admin", url(admin))
    assert rc == 1 and out == ""
    assert err.startswith("lastwill: unknown client 'ghost': no session and no will timeline (HTTP 404")


def test_explain_without_a_broker_says_what_to_do(capsys):
    port = free_port()
    rc, _, err = run(capsys, "explain", "x", "--admin", f"127.0.0.1:{port}")
    assert rc == 1
    assert f"cannot reach the admin API at http://127.0.0.1:{port}" in err and "admin_listen" in err


def test_explain_with_a_token_from_the_flag_the_config_or_the_environment(broker_factory, capsys, tmp_path,
                                                                          monkeypatch):
    b = broker_factory(admin_listen="127.0.0.1:0", admin_token="t0ken")
    StepClient(b.port, "dev", version=5, will=("dead/dev", b"x", 1, False)).crash()
    wait = time.monotonic() + 5
    rc, _, err = run(capsys, "explain", "dev", "--admin", url(b))
    assert rc == 1 and "refused the request (401" in err and "--token" in err
    while run(capsys, "explain", "dev", "--admin", url(b), "--token", "t0ken")[0] != 0:
        assert time.monotonic() < wait
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text(f'admin_listen = "127.0.0.1:{b.broker.admin_port}"\nadmin_token = "t0ken"\n')
    rc, out, _ = run(capsys, "explain", "dev", "--config", str(cfg))  # URL and token from the file
    assert rc == 0 and "connection-ended" in out
    monkeypatch.setenv("LASTWILL_ADMIN_TOKEN", "t0ken")
    rc, out, _ = run(capsys, "wills", "--admin", url(b))
    assert rc == 0 and out.startswith("no pending wills")


def test_explain_with_a_bad_config_file(capsys, tmp_path):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text('admin_listen = "nowhere"\n')
    rc, _, err = run(capsys, "explain", "x", "--config", str(cfg))
    assert rc == 2 and "config key 'admin_listen'" in err


def test_wills_lists_pending_wills_soonest_first(admin, capsys):
    rc, out, _ = run(capsys, "wills", "--admin", url(admin))
    assert rc == 0 and out.startswith("no pending wills (no armed wills)")
    for client_id, delay in (("later", 300), ("soon", 30)):
        StepClient(admin.port, client_id, version=5, session_expiry=600, will=(f"dead/{client_id}", b"x", 1, True),
                   will_props={"WillDelayInterval": delay}).crash()
    armed = StepClient(admin.port, "armed", version=5, will=("dead/armed", b"x", 1, False))
    deadline = time.monotonic() + 5
    while True:
        rc, out, _ = run(capsys, "wills", "--admin", url(admin))
        if out.startswith("2 pending") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    lines = out.splitlines()
    assert lines[0].startswith("2 pending will(s), soonest first (1 armed will(s) of connected clients)")
    head = lines[2]
    assert head.split() == ["CLIENT", "TOPIC", "QOS", "RETAIN", "PUBLISHED", "AT", "IN", "CAUSE"]
    soon, later = lines[3], lines[4]
    assert soon.startswith("soon ") and later.startswith("later ")
    for row, topic in ((soon, "dead/soon"), (later, "dead/later")):
        assert row[head.index("TOPIC"):].startswith(topic)
        assert row[head.index("RETAIN"):].startswith("1")
        assert row[head.index("CAUSE"):] == "connection lost: EOF (peer closed its side)"
    in_end = head.index(" IN ") + 3  # right-aligned under its heading
    left_soon = soon[:in_end].split()[-1]
    left_later = later[:in_end].split()[-1]
    assert re.fullmatch(r"2\d\.\d{3}s", left_soon) and re.fullmatch(r"(4m5\d\.\d|5m00\.0)s", left_later)
    armed.disconnect()


def test_explain_as_a_process(admin):
    StepClient(admin.port, "proc", version=5, will=("dead/proc", b"x", 1, False)).crash()
    deadline = time.monotonic() + 5
    while True:
        proc = subprocess.run([sys.executable, "-m", "lastwill", "explain", "proc", "--admin", url(admin)],
                              capture_output=True, text=True, timeout=30)
        if "published" in proc.stdout or time.monotonic() > deadline:
            break
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("client 'proc': not connected; no session")


@pytest.mark.parametrize("seconds,text", [(0, "0.000s"), (3.25, "3.250s"), (59.9994, "59.999s"),
                                          (59.9996, "1m00.0s"), (125.3, "2m05.3s"), (299.98, "5m00.0s"),
                                          (3600 * 3 + 120, "3h02m"),
                                          (86400 * 2 + 3600 * 3, "2d03h"), (-1, "0.000s")])
def test_durations_read_well(seconds, text):
    assert duration(seconds) == text


def test_wills_and_explain_find_the_admin_api_from_the_environment(broker_factory, capsys, tmp_path, monkeypatch):
    """No --admin: $LASTWILL_ADMIN, else the broker's admin_listen from $LASTWILL_CONFIG's file or
    $LASTWILL_ADMIN_LISTEN; the token from $LASTWILL_ADMIN_TOKEN (over the file's)."""
    b = broker_factory(admin_listen="127.0.0.1:0", admin_token="t0ken")
    port = b.broker.admin_port
    monkeypatch.setenv("LASTWILL_ADMIN", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LASTWILL_ADMIN_TOKEN", "t0ken")
    rc, out, _ = run(capsys, "wills")
    assert rc == 0 and out.startswith("no pending wills")
    monkeypatch.delenv("LASTWILL_ADMIN")
    monkeypatch.delenv("LASTWILL_ADMIN_TOKEN")
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text(f'admin_listen = "127.0.0.1:{port}"\nadmin_token = "wrong"\n')
    monkeypatch.setenv("LASTWILL_CONFIG", str(cfg))
    rc, _, err = run(capsys, "wills")  # found through the file, whose token is refused
    assert rc == 1 and f"the admin API at http://127.0.0.1:{port} refused the request (401" in err
    monkeypatch.setenv("LASTWILL_ADMIN_TOKEN", "t0ken")  # the environment wins over the file, as for serve
    rc, out, _ = run(capsys, "wills")
    assert rc == 0 and out.startswith("no pending wills")
    monkeypatch.delenv("LASTWILL_CONFIG")
    monkeypatch.setenv("LASTWILL_ADMIN_LISTEN", f"127.0.0.1:{port}")
    rc, _, err = run(capsys, "explain", "nobody")  # reached: the broker answers 404 for an unknown client
    assert rc == 1 and err.startswith("lastwill: unknown client 'nobody': no session and no will timeline (HTTP 404")
