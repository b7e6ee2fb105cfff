"""$SYS/broker/... end to end, side by side with Debian's real mosquitto: the same topic names and
payload formats (what monitoring tools parse), read by a paho-mqtt subscriber; bytes and messages
counted by the edge; and /metrics with the process, platform and build collectors."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lastwill import __version__
from tests.integration.conftest import Observer, StepClient
from tests.integration.serve import free_port

pytestmark = pytest.mark.integration

NUMBER = r"\d+"
LOAD = r"\d+\.\d\d"
# what a tool reads, and the format of its payload (the brief's list: mosquitto's names)
FORMATS = {
    "uptime": r"\d+ seconds",
    "clients/connected": NUMBER, "clients/total": NUMBER, "clients/disconnected": NUMBER,
    "clients/maximum": NUMBER, "clients/active": NUMBER, "clients/inactive": NUMBER,
    "messages/received": NUMBER, "messages/sent": NUMBER,
    "publish/messages/received": NUMBER, "publish/messages/sent": NUMBER,
    "bytes/received": NUMBER, "bytes/sent": NUMBER,
    "subscriptions/count": NUMBER, "retained messages/count": NUMBER,
    **{f"load/{kind}/{w}": LOAD for kind in ("messages/received", "messages/sent", "bytes/received", "bytes/sent",
                                               "publish/received", "publish/sent", "connections", "sockets")
       for w in ("1min", "5min", "15min")},
}


def sys_tree(port: int, seconds: float, client_id: str) -> dict[str, str]:
    """The latest payload of every $SYS/broker/... topic a subscriber gets within ``seconds``."""
    o = Observer(port, "$SYS/broker/#", qos=0, client_id=client_id)
    got: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = o.get(timeout=left)
            except queue.Empty:
                break
            got[m.topic.removeprefix("$SYS/broker/")] = m.payload.decode()
    finally:
        o.close()
    return got


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def mosquitto(tmp_path):
    exe = shutil.which("mosquitto")
    if exe is None:
        pytest.fail("mosquitto missing: scripts/test.sh installs mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\nuser root\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _port_open(port):
        assert proc.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def test_sys_broker_topics_and_formats_match_mosquittos(broker_factory, mosquitto):
    broker = broker_factory(sys_interval=1)
    ours = sys_tree(broker.port, 2.5, "tool-1")
    theirs = sys_tree(mosquitto, 2.5, "tool-1")
    for topic, pattern in FORMATS.items():
        assert topic in theirs, f"mosquitto does not publish $SYS/broker/{topic}"
        assert re.fullmatch(pattern, theirs[topic]), (topic, theirs[topic])
        assert topic in ours, f"lastwill does not publish $SYS/broker/{topic}"
        assert re.fullmatch(pattern, ours[topic]), (topic, ours[topic])
    assert theirs["version"].startswith("mosquitto version ")
    assert ours["version"] == f"lastwill version {__version__}"


def test_sys_broker_counts_real_traffic(broker_factory):
    broker = broker_factory(sys_interval=1)
    before = sys_tree(broker.port, 1.5, "tool-1")
    pub = StepClient(broker.port, "pub", version=5)
    for i in range(20):
        pub.publish(f"t/{i}", b"x" * 1000, qos=1)  # ~20 KB in, 20 PUBACKs out
    keeper = StepClient(broker.port, "keeper", version=5, clean=False, session_expiry=300)
    keeper.crash()
    deadline = time.monotonic() + 10
    while True:
        after = sys_tree(broker.port, 1.5, "tool-2")
        if int(after.get("bytes/received", 0)) >= int(before["bytes/received"]) + 20_000:
            break
        assert time.monotonic() < deadline, after
    assert int(after["publish/messages/received"]) >= 20
    assert int(after["messages/received"]) >= int(before["messages/received"]) + 21  # 20 PUBLISH, a CONNECT, ...
    assert int(after["messages/sent"]) > int(before["messages/sent"]) + 20  # CONNACKs, PUBACKs, SUBACKs...
    assert int(after["bytes/sent"]) > int(before["bytes/sent"])
    assert int(after["clients/disconnected"]) >= 1  # keeper's session stays


def test_metrics_have_process_platform_and_build_info(broker_factory):
    broker = broker_factory(admin_listen="127.0.0.1:0")
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.broker.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["process_resident_memory_bytes"].value > 1_000_000
    assert samples["process_cpu_seconds_total"].value > 0
    assert samples["process_open_fds"].value > 3
    assert samples["python_info"].labels["major"] == "3"
    build = samples["lastwill_build_info"]
    assert build.value == 1 and build.labels["version"] == __version__ and build.labels["python"].startswith("3.")
