"""Authentication and authorization on real sockets: paho-mqtt and raw CONNECTs against a broker with
password_file and acl_file, `lastwill passwd`, files shared with the real mosquitto, and SIGHUP
reloads of a running `lastwill serve` (docs/security.md)."""

from __future__ import annotations

import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from lastwill.auth import PasswordFile, hash_password
from lastwill.cli import main
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Pingreq, Will
from tests.integration.test_durability import BrokerProcess, free_port, wait_until
from tests.rawclient import RawSocket

pytestmark = pytest.mark.integration

ACL = """\
# anonymous clients may only read public/
topic read public/#

user alice
topic readwrite alice/#
topic write dead/alice
topic read public/#

user bob
topic read #
"""


def write_passwords(path: Path, iterations: int = 1000, **users: str) -> Path:
    path.write_text("".join(f"{u}:{hash_password(p, iterations)}\n" for u, p in users.items()))
    return path


@pytest.fixture
def secured(tmp_path, broker_factory):
    pw = write_passwords(tmp_path / "passwords", alice="wonderland", bob="builder")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    # (login_backoff 0: these tests send wrong passwords in a row; throttling: test_login_throttle_sockets.py)
    return broker_factory(password_file=str(pw), acl_file=str(acl), login_backoff=0)


def paho(port: int, client_id: str, user: str | None = None, password: str | None = None, version: int = 5,
         will: tuple | None = None, wait: bool = True):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311)
    if user is not None:
        c.username_pw_set(user, password)
    if will:
        c.will_set(*will)
    result: dict = {}
    c.on_connect = lambda cl, u, flags, rc, props: result.setdefault("rc", rc)
    c.on_disconnect = lambda cl, u, flags, rc, props: result.setdefault("disconnected", rc)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if wait:
        assert wait_until(lambda: "rc" in result, 10), "no CONNACK"
    c.result = result
    return c


def raw_connack(port: int, connect: Connect) -> tuple[bytes, float]:
    """Send one CONNECT on a plain socket; return the CONNACK's bytes and how long the answer took."""
    c = RawSocket(port, timeout=10)
    try:
        started = time.perf_counter()
        c.send(encode(connect, connect.protocol_level))
        return c.read(), time.perf_counter() - started
    finally:
        c.close()


# ==== authentication ==============================================================================


def test_good_and_bad_password_with_paho_v5_MQTT_3_1_4_2(secured):
    good = paho(secured.port, "a1", "alice", "wonderland")
    assert good.result["rc"] == 0 and good.is_connected()
    bad = paho(secured.port, "a2", "alice", "wonderLand")
    assert bad.result["rc"].value == 0x86 and str(bad.result["rc"]) == "Bad user name or password"
    assert wait_until(lambda: not bad.is_connected(), 5)
    for c in (good, bad):
        c.loop_stop()
        c.disconnect()


def test_bad_password_return_code_4_v311_MQTT_3_2_2_5(secured):
    data, _ = raw_connack(secured.port, Connect("x", protocol_level=4, username="bob", password=b"nope"))
    assert data == b"\x20\x02\x00\x04"  # CONNACK, session present 0, return code 4
    data, _ = raw_connack(secured.port, Connect("x", protocol_level=4, username="bob", password=b"builder"))
    assert data == b"\x20\x02\x00\x00"


@pytest.mark.parametrize("level", [4, 5])
def test_unknown_user_gets_the_same_bytes_as_a_wrong_password(secured, level):
    props = {"request_problem_information": 0} if level == 5 else {}  # no Reason String: the bare answer
    wrong, _ = raw_connack(secured.port, Connect("x", protocol_level=level, username="alice", password=b"no",
                                                 properties=dict(props)))
    unknown, _ = raw_connack(secured.port, Connect("x", protocol_level=level, username="nobody", password=b"no",
                                                   properties=dict(props)))
    assert wrong == unknown == (b"\x20\x03\x00\x86\x00" if level == 5 else b"\x20\x02\x00\x04")


def test_unknown_user_answer_takes_as_long_as_a_wrong_password(tmp_path, broker_factory):
    """The hash runs for unknown users too (200,000 iterations here): an unknown user is not answered
    faster. Medians of 5; noise on a shared machine only makes answers slower, so the bound is loose."""
    pw = write_passwords(tmp_path / "pw", iterations=200_000, alice="wonderland")
    b = broker_factory(password_file=str(pw), login_backoff=0)
    known, unknown = [], []
    for i in range(5):
        known.append(raw_connack(b.port, Connect(f"k{i}", protocol_level=5, username="alice", password=b"no"))[1])
        unknown.append(raw_connack(b.port, Connect(f"u{i}", protocol_level=5, username="zz", password=b"no"))[1])
    k, u = statistics.median(known), statistics.median(unknown)
    assert k > 0.02, f"a wrong password was answered in {k:.4f}s: the hash did not run"
    assert u >= 0.5 * k, f"unknown user answered in {u:.4f}s, wrong password in {k:.4f}s"


def test_password_check_does_not_block_other_clients(tmp_path, broker_factory):
    """A slow hash (3,000,000 iterations: over a second here) runs in a thread: a connected client's
    PINGREQs are answered meanwhile."""
    pw = write_passwords(tmp_path / "pw", iterations=3_000_000, slow="pw")
    # connect_timeout bounds the password check too: room for a machine slowed by other work
    b = broker_factory(password_file=str(pw), allow_anonymous=True, connect_timeout=60, login_backoff=0)
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.sendall(encode(Connect("pinger", protocol_level=5), 5))
        assert s.recv(64)[:1] == b"\x20"
        done: dict = {}

        def slow_login():
            done["answer"] = raw_connack(b.port, Connect("slow", protocol_level=5, username="slow", password=b"pw"))

        t = threading.Thread(target=slow_login)
        t.start()
        time.sleep(0.1)  # the slow check is under way
        worst = 0.0
        while t.is_alive():
            started = time.perf_counter()
            s.sendall(encode(Pingreq(), 5))
            assert s.recv(16) == b"\xd0\x00"
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.02)
        t.join()
    data, took = done["answer"]
    assert data[:4] == b"\x20\x09\x00\x00" or data[3] == 0, data  # accepted
    assert took > 0.5, f"the slow login took only {took:.3f}s: the test proves nothing"
    assert worst < 0.25, f"a PINGREQ waited {worst:.3f}s while a password was checked"


def test_file_made_by_real_mosquitto_passwd_works_with_lastwill(tmp_path, broker_factory):
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.fail("mosquitto_passwd missing: scripts/test.sh installs the mosquitto package")
    f = tmp_path / "pw"
    subprocess.run([exe, "-b", "-c", str(f), "dave", "d4ve"], check=True)
    b = broker_factory(password_file=str(f), login_backoff=0)
    ok = paho(b.port, "d1", "dave", "d4ve")
    bad = paho(b.port, "d2", "dave", "dave")
    assert ok.result["rc"] == 0 and bad.result["rc"].value == 0x86
    for c in (ok, bad):
        c.loop_stop()
        c.disconnect()


def test_file_made_by_lastwill_passwd_works_with_real_mosquitto(tmp_path):
    exe = shutil.which("mosquitto")
    if exe is None or shutil.which("mosquitto_pub") is None:
        pytest.fail("mosquitto missing: scripts/test.sh installs mosquitto and mosquitto-clients")
    f = tmp_path / "pw"
    r = subprocess.run([sys.executable, "-m", "lastwill", "passwd", str(f), "erin", "--password-stdin"],
                       input="3rin\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # user root: started as root (CI), mosquitto would switch to user mosquitto, who cannot read tmp_path
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {f}\nuser root\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _port_open(port) or proc.poll() is not None, 10) and proc.poll() is None, \
            f"mosquitto did not start: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        pub = ["mosquitto_pub", "-p", str(port), "-t", "t", "-m", "m", "-u", "erin"]
        assert subprocess.run(pub + ["-P", "3rin"], capture_output=True, timeout=10).returncode == 0
        assert subprocess.run(pub + ["-P", "erin"], capture_output=True, timeout=10).returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


# ==== authorization ===============================================================================


def test_will_not_authorized_refused_at_connect_v5_MQTT_3_1_4_2(secured):
    c = paho(secured.port, "w1", "alice", "wonderland", will=("dead/bob", b"x", 1, False))
    assert c.result["rc"].value == 0x87
    c.loop_stop()

def test_will_not_authorized_refused_at_connect_v311_MQTT_3_2_2_5(secured):
    data, _ = raw_connack(secured.port, Connect("w2", protocol_level=4, username="alice", password=b"wonderland",
                                                will=Will("dead/bob", b"x", 1, False, {})))
    assert data == b"\x20\x02\x00\x05"  # return code 5: not authorized


def test_publish_denied_puback_0x87_and_subscribe_denied_per_filter_v5(secured):
    alice = paho(secured.port, "a1", "alice", "wonderland")
    acks: dict = {}
    alice.on_publish = lambda c, u, mid, rc, props: acks.__setitem__(mid, rc)
    granted: dict = {}
    alice.on_subscribe = lambda c, u, mid, rcs, props: granted.__setitem__(mid, [r.value for r in rcs])
    denied = alice.publish("public/x", b"no", qos=1)
    allowed = alice.publish("alice/x", b"yes", qos=1)
    _, mid = alice.subscribe([("alice/#", 1), ("public/+", 1), ("secret/#", 1)])
    assert wait_until(lambda: len(acks) == 2 and mid in granted, 5)
    assert acks[denied.mid].value == 0x87 and acks[allowed.mid].value == 0
    assert granted[mid] == [1, 1, 0x87]
    assert alice.is_connected()
    alice.loop_stop()
    alice.disconnect()


def test_allowed_will_published_to_a_reader_v5_MQTT_3_1_2_8(secured):
    bob = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bob", protocol=mqtt.MQTTv5)
    bob.username_pw_set("bob", "builder")
    got = []
    subscribed = threading.Event()
    bob.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    bob.on_subscribe = lambda *a: subscribed.set()
    bob.on_connect = lambda c, *a: c.subscribe("#", 1)
    bob.connect("127.0.0.1", secured.port)
    bob.loop_start()
    assert subscribed.wait(5)
    dying = paho(secured.port, "dev", "alice", "wonderland", will=("dead/alice", b"gone", 1, False))
    assert dying.result["rc"] == 0
    dying.loop_stop()
    dying.socket().close()  # no DISCONNECT: the will is published [MQTT-3.1.2-8]
    assert wait_until(lambda: ("dead/alice", b"gone") in got, 5)
    bob.loop_stop()
    bob.disconnect()


# ==== lastwill passwd =============================================================================


def run_passwd(*args: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lastwill", "passwd", *args], input=password,
                          capture_output=True, text=True, timeout=60)


def test_passwd_cli_add_change_delete(tmp_path):
    f = tmp_path / "sub" / "pw"
    f.parent.mkdir()
    r = run_passwd(str(f), "alice", "--password-stdin", "--iterations", "1000", password="one\n")
    assert r.returncode == 0 and "user 'alice' added" in r.stderr
    assert f.stat().st_mode & 0o777 == 0o600
    assert run_passwd(str(f), "bob", "--password-stdin", password="two\n").returncode == 0
    pw = PasswordFile.load(f)
    assert pw.verify("alice", b"one") and pw.verify("bob", b"two") and pw.entries["bob"].iterations == 210_000
    r = run_passwd(str(f), "alice", "--password-stdin", "--iterations", "1000", password="three\n")
    assert r.returncode == 0 and "changed" in r.stderr
    pw = PasswordFile.load(f)
    assert pw.verify("alice", b"three") and not pw.verify("alice", b"one") and list(pw.entries) == ["alice", "bob"]
    r = run_passwd(str(f), "bob", "--delete")
    assert r.returncode == 0 and list(PasswordFile.load(f).entries) == ["alice"]
    r = run_passwd(str(f), "bob", "--delete")
    assert r.returncode == 1 and "user 'bob' is not in" in r.stderr


@pytest.mark.parametrize("user,password,expected", [
    ("a:b", "x\n", "cannot contain ':'"),
    ("", "x\n", "the user name is empty"),
    ("carol", "\n", "empty password refused"),
])
def test_passwd_cli_refuses_bad_input_and_changes_nothing(tmp_path, user, password, expected):
    f = tmp_path / "pw"
    write_passwords(f, alice="a")
    before = f.read_text()
    r = run_passwd(str(f), user, "--password-stdin", password=password)
    assert r.returncode == 1 and expected in r.stderr and f.read_text() == before


def test_passwd_cli_refuses_a_damaged_file_naming_the_line(tmp_path):
    f = tmp_path / "pw"
    f.write_text("alice:" + hash_password("a", 1000) + "\nbroken line\n")
    r = run_passwd(str(f), "bob", "--password-stdin", password="b\n")
    assert r.returncode == 1 and f"password_file '{f}' line 2: expected 'user:hash'" in r.stderr


def test_passwd_prompts_twice_with_getpass(tmp_path, monkeypatch, capsys):
    import getpass
    f = tmp_path / "pw"
    answers = iter(["s3cret", "s3cret", "one", "two"])
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert main(["passwd", str(f), "alice", "--iterations", "1000"]) == 0
    assert prompts == ["Password: ", "Reenter password: "] and PasswordFile.load(f).verify("alice", b"s3cret")
    assert main(["passwd", str(f), "alice"]) == 1  # the two answers differ
    assert "do not match" in capsys.readouterr().err and PasswordFile.load(f).verify("alice", b"s3cret")


# ==== start-up and SIGHUP =========================================================================


def test_serve_refuses_a_bad_acl_file_naming_file_and_line(tmp_path, capsys):
    acl = tmp_path / "acl"
    acl.write_text("topic read a\ntopic sometimes b\n")
    assert main(["serve", "--memory", "--listen", "127.0.0.1:0", "--acl-file", str(acl)]) == 2
    err = capsys.readouterr().err
    assert f"acl_file '{acl}' line 2: unknown access 'sometimes'" in err


def test_serve_refuses_a_missing_password_file(tmp_path, capsys):
    assert main(["serve", "--memory", "--listen", "127.0.0.1:0", "--password-file", str(tmp_path / "no")]) == 2
    assert f"password_file '{tmp_path / 'no'}': cannot read it" in capsys.readouterr().err


def test_serve_refuses_anonymous_access_on_a_non_loopback_listener(capsys):
    assert main(["serve", "--memory", "--listen", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err
    assert "config key 'allow_anonymous': listener '0.0.0.0:0' is not a loopback address" in err


@pytest.fixture
def brokers():
    """`lastwill serve` processes started by a test; killed at the end whatever happened."""
    made: list[BrokerProcess] = []
    yield made
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(10)


def test_sighup_reloads_acl_and_passwords_without_dropping_connections(tmp_path, brokers):
    pw = write_passwords(tmp_path / "pw", alice="wonderland", bob="builder")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    port = free_port()
    log = tmp_path / "broker.log"
    broker = BrokerProcess(port, tmp_path / "data", log, password_file=pw, acl_file=acl)
    brokers.append(broker)
    broker.start()
    alice = paho(port, "a1", "alice", "wonderland")
    acks: dict = {}
    alice.on_publish = lambda c, u, mid, rc, props: acks.__setitem__(mid, rc.value)

    def publish(topic: str) -> int:
        info = alice.publish(topic, b"x", qos=1)
        assert wait_until(lambda: info.mid in acks, 5), "no PUBACK"
        return acks[info.mid]

    assert publish("alice/1") == 0
    acl.write_text(ACL.replace("topic readwrite alice/#", "topic read alice/#"))
    write_passwords(pw, alice="wonderland", bob="builder", carol="c4rol")
    broker.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reloaded acl_file" in log.read_text(), 10), log.read_text()[-2000:]
    text = log.read_text()
    assert "SIGHUP: reloading password_file and acl_file" in text and "reloaded password_file" in text
    assert alice.is_connected() and publish("alice/2") == 0x87  # the same connection, the new rules
    carol = paho(port, "c1", "carol", "c4rol")
    assert carol.result["rc"] == 0

    acl.write_text("topic readwrite #\nuser alice\ntopic bogus alice/#\n")  # a bad file: the old rules stay
    broker.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "line 3: unknown access 'bogus'" in log.read_text(), 10), log.read_text()[-2000:]
    assert f"reload: acl_file '{acl}' line 3: unknown access 'bogus'" in log.read_text()
    assert "the previous acl_file stays in force" in log.read_text()
    assert alice.is_connected() and publish("alice/3") == 0x87 and publish("public/x") == 0x87
    for c in (alice, carol):
        c.loop_stop()
        c.disconnect()
    broker.terminate()
    assert broker.proc.returncode == 0


def test_denials_counted_in_metrics_and_explained(tmp_path, broker_factory):
    """Broker.reload() (what SIGHUP calls) takes away alice's right to publish her will; the will
    is then denied at publication: on its timeline, in the summary `lastwill explain` prints, and
    counted, with the refused login and the denied PUBLISH."""
    from tests.integration.test_admin import get

    pw = write_passwords(tmp_path / "pw", alice="wonderland", bob="builder")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    b = broker_factory(password_file=str(pw), acl_file=str(acl), admin_listen="127.0.0.1:0", login_backoff=0)
    raw_connack(b.port, Connect("x", protocol_level=5, username="alice", password=b"bad"))
    dying = paho(b.port, "dev", "alice", "wonderland", will=("dead/alice", b"gone", 1, False))
    acks: dict = {}
    dying.on_publish = lambda c, u, mid, rc, props: acks.__setitem__(mid, rc.value)
    info = dying.publish("public/x", b"no", qos=1)
    assert wait_until(lambda: acks.get(info.mid) == 0x87, 5)
    acl.write_text(ACL.replace("topic write dead/alice\n", ""))
    assert b.call(b.broker.reload) is True
    dying.loop_stop()
    dying.socket().close()
    assert wait_until(lambda: "denied" in str(get(b, "/api/clients/dev/timeline")[1]), 5)
    status, body, _ = get(b, "/api/clients/dev/timeline")
    assert status == 200 and body["summary"].startswith("the will was due but not published: the ACL denied it")
    metrics = get(b, "/metrics")[1]
    for line in ("lastwill_wills_denied_total 1.0", "lastwill_connects_refused_auth_total 1.0",
                 "lastwill_publish_denied_total 1.0"):
        assert line in metrics, line
    acl.write_text("topic bogus x\n")
    assert b.call(b.broker.reload) is False  # a bad file: the rules in force stay
