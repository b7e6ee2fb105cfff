"""presence_offline_expiry end to end: a paho-mqtt MQTT 5 subscriber reads the retained ``offline``
with its Message Expiry Interval; once it lapses a new subscriber gets no retained message for it."""

from __future__ import annotations

import queue
import time

import pytest

from tests.integration.conftest import Observer, StepClient

pytestmark = pytest.mark.integration


def retained_now(port: int, topic: str, client_id: str) -> list:
    """The retained messages a fresh subscription to ``topic`` gets (within 0.5 s of its SUBACK)."""
    o = Observer(port, topic, client_id=client_id)
    out = []
    try:
        while True:
            m = o.get(timeout=0.5)
            if m.retain:
                out.append(m)
    except queue.Empty:
        pass
    o.close()
    return out


def test_offline_presence_carries_message_expiry_then_disappears(lastwill_broker_factory):
    broker = lastwill_broker_factory(presence_topic="presence/{client_id}", presence_offline_expiry=2)
    dev = StepClient(broker.port, "dev-e2e", version=5)
    dev.crash()
    broker.wait_for_log("disconnect client_id=dev-e2e")
    [m] = retained_now(broker.port, "presence/dev-e2e", "reader-1")
    assert m.payload == b"offline"
    assert 1 <= m.properties.MessageExpiryInterval <= 2
    deadline = time.monotonic() + 10
    while retained_now(broker.port, "presence/dev-e2e", "reader-2"):
        assert time.monotonic() < deadline, "the offline presence message never expired"
    # what presence/# reads now: the readers' own presence, not dev-e2e's
    topics = {m.topic for m in retained_now(broker.port, "presence/#", "reader-3")}
    assert "presence/reader-3" in topics and "presence/dev-e2e" not in topics
