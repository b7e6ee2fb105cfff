"""mosquitto's $SYS/broker/... topics on the core with a fake clock (core/systree.py): names and
payloads, retained, published every sys_interval and only when they change (uptime always),
mosquitto's load averages, never stored, never matched by a leading wildcard."""

from __future__ import annotations

import math

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Pingreq
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness


class Edge:
    """The edge's counters as the core reads them: bytes received, bytes sent, packets sent."""

    def __init__(self) -> None:
        self.rx = self.tx = self.packets = 0

    def __call__(self) -> tuple[int, int, int]:
        return self.rx, self.tx, self.packets


def started(**config) -> tuple[Harness, Edge]:
    h = Harness(**config)
    edge = Edge()
    h.dispatch(h.core.start_sys(h.now, "9.9.9", edge))
    return h, edge


def values(sub) -> dict[str, str]:
    out = {}
    for m in sub.messages():
        out[m.topic.removeprefix("$SYS/broker/")] = m.payload.decode()
    return out


def test_sys_broker_topics_as_mosquitto_names_them():
    h, edge = started(sys_interval=10)
    sub = h.subscriber("$SYS/broker/#", client_id="tool", qos=0)
    got = values(sub)  # retained: a new subscriber reads them at once
    assert got["version"] == "lastwill version 9.9.9"
    assert got["uptime"] == "0 seconds"
    assert (got["clients/total"], got["clients/connected"], got["clients/disconnected"], got["clients/maximum"]) == \
        ("0", "0", "0", "0")
    # as mosquitto's, the count includes the broker's own retained $SYS messages (here: the version)
    assert got["retained messages/count"] == "1" and got["subscriptions/count"] == "0"
    for name in ("messages/received", "messages/sent", "publish/messages/received", "publish/messages/sent",
                 "bytes/received", "bytes/sent"):
        assert got[name] == "0", name
    for kind in ("messages/received", "messages/sent", "bytes/received", "bytes/sent", "publish/received",
                 "publish/sent", "connections", "sockets"):
        for window in ("1min", "5min", "15min"):
            assert got[f"load/{kind}/{window}"] == "0.00"


def test_sys_broker_values_follow_the_broker_and_only_changes_are_published():
    h, edge = started(sys_interval=10)
    tool = h.subscriber("$SYS/broker/#", client_id="tool", qos=0)
    values(tool)
    pub = h.connect("pub")
    pub.publish("a/b", b"x", retain=True)
    h.connect("gone", session_expiry_interval=300).drop()
    edge.rx, edge.tx, edge.packets = 1000, 2000, 7
    sys_retained = len(h.core.retained.find("$SYS/#"))
    h.advance(10)
    got = values(tool)
    assert got["uptime"] == "10 seconds"
    assert (got["clients/total"], got["clients/connected"], got["clients/disconnected"]) == ("3", "2", "1")
    assert got["clients/maximum"] == "3"
    assert got["subscriptions/count"] == "1" and got["retained messages/count"] == str(1 + sys_retained)
    assert (got["bytes/received"], got["bytes/sent"], got["messages/sent"]) == ("1000", "2000", "7")
    assert got["publish/messages/received"] == "1"
    pub.send_bytes(encode(Pingreq(), 5) * 2)  # packets as the edge hands them in: bytes
    h.advance(0)
    h.advance(10)
    assert values(tool)["messages/received"] == "2"  # every kind of packet, as mosquitto counts
    h.advance(10)  # nothing changed but the time: uptime, and the loads as they decay
    got = values(tool)
    assert got["uptime"] == "30 seconds"
    assert "clients/total" not in got and "bytes/received" not in got and "version" not in got


def test_sys_broker_load_averages_are_mosquittos():
    h, edge = started(sys_interval=10)
    tool = h.subscriber("$SYS/broker/load/bytes/received/+", client_id="tool", qos=0)
    values(tool)
    edge.rx = 600  # 600 bytes in 10 s: 3600 per minute
    h.advance(10)
    got = values(tool)
    rate = 3600.0
    one = rate + math.exp(-10 / 60) * (0.0 - rate)
    five = rate + math.exp(-10 / 300) * (0.0 - rate)
    fifteen = rate + math.exp(-10 / 900) * (0.0 - rate)
    assert got == {"load/bytes/received/1min": f"{one:.2f}", "load/bytes/received/5min": f"{five:.2f}",
                   "load/bytes/received/15min": f"{fifteen:.2f}"}
    assert got["load/bytes/received/1min"] == "552.67"  # 3600 x (1 - e^(-1/6))
    h.advance(10)  # no more bytes: the averages decay towards 0
    got = values(tool)
    assert got["load/bytes/received/1min"] == f"{0.0 + math.exp(-10 / 60) * (one - 0.0):.2f}"


def test_sys_broker_is_retained_and_not_matched_by_a_leading_wildcard_MQTT_4_7_2_1():
    h, _ = started(sys_interval=10)
    everything = h.subscriber("#", client_id="all", qos=0)
    assert [m.topic for m in everything.messages() if m.topic.startswith("$SYS")] == []
    h.advance(30)
    assert [m.topic for m in everything.messages() if m.topic.startswith("$SYS")] == []
    late = h.subscriber("$SYS/broker/uptime", client_id="late", qos=1)
    [m] = late.messages()
    assert m.retain and m.qos == 0 and m.payload == b"30 seconds"


def test_sys_broker_values_are_never_stored():
    store = MemoryStorage()
    h = Harness(store=store, sys_interval=10)
    h.dispatch(h.core.start_sys(h.now, "9.9.9", Edge()))
    h.connect("pub").publish("kept", b"v", retain=True)
    h.advance(20)
    assert set(store.load().retained) == {"kept"}


def test_sys_interval_0_publishes_nothing():
    h, _ = started(sys_interval=0)
    assert h.core.retained.find("$SYS/#") == [] and h.core.next_deadline() is None
