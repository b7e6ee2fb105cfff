"""Presence across a real crash: the broker runs as a process, is killed with SIGKILL while clients
are online, and restarts on the same store. A client that does not come back reads ``offline`` once
the recovery grace period is over (with its will and a $SYS disconnected event); one that comes back
within it stays ``online``. The clients are paho-mqtt.
"""

from __future__ import annotations

import json
import queue
import time

import pytest

from tests.integration.conftest import Observer, StepClient
from tests.integration.test_durability import GRACE, BrokerProcess, free_port

pytestmark = pytest.mark.integration


def drain(o: Observer, seconds: float) -> list:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(o.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
    return out


def retained_states(port: int, client_id: str) -> dict[str, bytes]:
    """What a new subscriber to presence/# reads: the retained state of every client."""
    o = Observer(port, "presence/#", client_id=client_id)
    got = {m.topic: m.payload for m in drain(o, 1.0) if m.retain}
    o.close()
    return got


def test_presence_reads_offline_after_grace_when_the_client_never_returns_after_kill9(tmp_path):
    port = free_port()
    broker = BrokerProcess(port, tmp_path / "data", tmp_path / "broker.log",
                           presence_topic="presence/{client_id}", node_name="itest")
    broker.start()
    try:
        gone = StepClient(port, "dev-gone", version=5, will=("dead/dev-gone", b"gone", 1, False))
        back = StepClient(port, "dev-back", version=4, will=("dead/dev-back", b"back", 1, False), clean=False)
        before = retained_states(port, "look-1")
        assert before["presence/dev-gone"] == b"online" and before["presence/dev-back"] == b"online"

        broker.kill9()
        del gone, back  # their sockets died with the broker
        broker.start()
        started = time.monotonic()
        watch = Observer(port, "presence/#", client_id="watch")
        dead = Observer(port, "dead/#", client_id="dead")
        sysw = Observer(port, "$SYS/brokers/itest/clients/+/disconnected", client_id="sysw", qos=0)
        first = {m.topic: m.payload for m in drain(watch, 0.3)}
        assert first["presence/dev-gone"] == b"online"  # the grace period runs: not yet known to be gone
        back = StepClient(port, "dev-back", version=4, clean=False)  # back within the grace period
        # the connection the crash ended is announced when it comes back, its will cancelled [MQTT-3.1.3-9]
        event = json.loads(sysw.get(timeout=3).payload)
        assert event["clientid"] == "dev-back" and event["reason"] == "broker_crash"
        assert event["will"] == {"decision": "cancelled", "fire_at": None, "rule": "MQTT-3.1.3-9"}

        # dev-gone: offline once the grace period is over, then its will, then the $SYS event
        offline_at = None
        deadline = started + GRACE + 5
        while offline_at is None and time.monotonic() < deadline:
            for m in drain(watch, 0.1):
                if m.topic == "presence/dev-gone" and m.payload == b"offline":
                    offline_at = time.monotonic()
        assert offline_at is not None, (tmp_path / "broker.log").read_text()[-3000:]
        assert offline_at - started >= GRACE - 0.3
        assert dead.get(timeout=3).payload == b"gone"
        event = json.loads(sysw.get(timeout=3).payload)
        assert event["clientid"] == "dev-gone" and event["reason"] == "broker_crash"
        assert event["will"] == {"decision": "published", "fire_at": None, "rule": "MQTT-3.1.2-8"}

        time.sleep(0.5)
        after = retained_states(port, "look-2")
        assert after["presence/dev-gone"] == b"offline"
        assert after["presence/dev-back"] == b"online"  # it came back: never offline, no will
        assert [m.payload for m in drain(dead, 0.2)] == []
        for o in (watch, dead, sysw):
            o.close()
        back.disconnect()
    finally:
        broker.terminate()
    assert "Traceback" not in (tmp_path / "broker.log").read_text()
