"""mosquitto_pub / mosquitto_sub (Debian's mosquitto-clients) and the seed's Go client against lastwill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def seed_client_dir() -> Path:
    env = os.environ.get("LASTWILL_SEED_CLIENT_DIR")
    return Path(env) if env else REPO.parent / "shared" / "seed-client"


def test_seed_client_check_passes_v311_MQTT_3_1_2_8(broker, mosquitto_clients):
    """The user's own scenario: will on test/lwt, normal disconnect gives no will, a crash gives one."""
    check = seed_client_dir() / "check.sh"
    assert check.exists(), f"seed client not found at {check}"
    env = dict(os.environ)
    env.setdefault("SEED_CLIENT_BIN_DIR", str(REPO / ".cache" / "seed-client-bin"))
    proc = subprocess.run(["bash", str(check), "127.0.0.1", str(broker.port)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert "seed-client: PASS" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0


def _sub(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-F", "%t|%r|%q|%p", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_subscribed(port: int, topic: str) -> None:
    time.sleep(0.3)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_sub_killed_publishes_will_MQTT_3_1_2_8(broker, observer_factory, mosquitto_clients, version):
    obs = observer_factory(broker.port, "m/#")
    dying = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
                              "-t", "idle/topic", "-i", f"dying-{version}", "--will-topic", "m/will",
                              "--will-payload", "mosq-gone", "--will-qos", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    dying.send_signal(signal.SIGKILL)
    dying.wait(5)
    m = obs.get(timeout=3)
    assert (m.topic, m.payload, m.qos) == ("m/will", b"mosq-gone", 1)


def test_mosquitto_sub_clean_exit_no_will_MQTT_3_14_4_3(broker, observer_factory, mosquitto_clients):
    obs = observer_factory(broker.port, "m/#")
    proc = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "idle/x",
                           "-i", "polite", "--will-topic", "m/will", "--will-payload", "no", "-W", "1"],
                          capture_output=True, timeout=10)
    assert proc.returncode in (0, 27)  # 27: the -W timeout expired, then a normal DISCONNECT
    obs.expect_none(1.0)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_sub_qos_and_retained_MQTT_3_3_1_5(broker, mosquitto_clients, version):
    port = str(broker.port)
    for qos in ("0", "1", "2"):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", version, "-q", qos, "-r",
                        "-t", f"ret/{qos}", "-m", f"v{qos}"], check=True, timeout=10)
    out = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", version, "-q", "2",
                          "-t", "ret/#", "-F", "%t|%r|%p", "-C", "3", "-W", "5"],
                         capture_output=True, text=True, timeout=10)
    assert sorted(out.stdout.split()) == ["ret/0|1|v0", "ret/1|1|v1", "ret/2|1|v2"], out.stderr
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-r", "-t", "ret/0", "-n"], check=True,
                   timeout=10)
    out = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", version, "-t", "ret/#",
                          "-F", "%t", "--retained-only", "-W", "1"], capture_output=True, text=True, timeout=10)
    assert sorted(out.stdout.split()) == ["ret/1", "ret/2"]


def test_mosquitto_sub_receives_live_messages_v5(broker, mosquitto_clients):
    port = str(broker.port)
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-q", "1",
                            "-t", "live/+", "-C", "2", "-W", "5", "-F", "%t|%p"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    for i in range(2):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-q", "1",
                        "-t", f"live/{i}", "-m", f"p{i}", "-D", "publish", "user-property", "k", "v"],
                       check=True, timeout=10)
    out, _ = sub.communicate(timeout=10)
    assert out.split() == ["live/0|p0", "live/1|p1"]
