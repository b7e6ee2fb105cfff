"""mosquitto's ``$SYS/broker/...`` topics, which monitoring tools read (Home Assistant's MQTT sensors,
MQTT Explorer, mosquitto_sub -t '$SYS/#'): same names, same payloads (plain text numbers), same load
averages, every ``sys_interval`` seconds (mosquitto's default 10; 0: none).

As mosquitto 2.0 does (src/sys_tree.c): ``$SYS/broker/version`` once at start; at each update
``uptime`` (``"N seconds"``), and every other value only when it changed since it was last published;
retained, so that a new subscriber reads them at once. The load averages are mosquitto's exponential
moving averages of per-minute rates over 1, 5 and 15 minutes: at each update, with ``dt`` the seconds
since the last one, ``rate = delta x 60 / dt`` and ``load = rate + exp(-dt / window) x (load - rate)``,
published with two decimals when they moved by 0.01 or more (0.00 at the first update).

Differences: the messages are QoS 0 (mosquitto: QoS 2) and carry no Message Expiry (mosquitto: 60 s,
so that a value that does not change for a minute disappears); they are never written to the store
(core/persistence.py), since they describe this run. ``clients/maximum`` is the highest
``clients/total`` seen at an update, as mosquitto computes it. Bytes and the packets sent are counted
by the edge, which knows each read's and write's size (``edge_counts``); the core counts the packets
it decodes and what it does with PUBLISH.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .message import Message
from .timers import TimerKind, TimerQueue

_SYS = TimerKind.SYS.value
WINDOWS = ((60.0, "1min"), (300.0, "5min"), (900.0, "15min"))
# (load topic, the counter it is the rate of); counters: see SysTree.counts
LOADS = (("messages/received", "packets_in"), ("messages/sent", "packets_out"),
         ("publish/received", "publish_in"), ("publish/sent", "publish_out"), ("publish/dropped", "dropped"),
         ("bytes/received", "bytes_in"), ("bytes/sent", "bytes_out"),
         ("sockets", "sockets"), ("connections", "connects"))
# the counters published as they are (topic -> counter)
TOTALS = (("messages/received", "packets_in"), ("messages/sent", "packets_out"),
          ("publish/messages/received", "publish_in"), ("publish/messages/sent", "publish_out"),
          ("publish/messages/dropped", "dropped"), ("bytes/received", "bytes_in"), ("bytes/sent", "bytes_out"))

Counts = Callable[[], dict[str, int]]
EdgeCounts = Callable[[], tuple[int, int, int]]  # bytes received, bytes sent, packets sent


class SysTree:
    """``counts()``: the core's own numbers (packets_in, publish_in, publish_out, dropped, sockets,
    connects, clients_total, clients_connected, subscriptions, retained); ``edge_counts()``: the edge's.
    ``publish(message, now)``: the router."""

    def __init__(self, interval: int, timers: TimerQueue, publish: Callable[[Message, float], int],
                 counts: Counts) -> None:
        self.interval = interval
        self.timers = timers
        self.publish = publish
        self.counts = counts
        self.edge_counts: EdgeCounts = lambda: (0, 0, 0)
        self.started: float | None = None
        self.last_update: float | None = None
        self.last: dict[str, int] = {}  # counters at the last update
        self.published: dict[str, str] = {}  # topic -> payload last published
        self.loads: dict[str, float] = {}
        self.maximum = 0
        timers.register(TimerKind.SYS, self.update)

    def start(self, now: float, version: str, edge_counts: EdgeCounts | None = None) -> None:
        """The broker started: ``$SYS/broker/version`` now, then an update every ``interval`` seconds."""
        if not self.interval:
            return
        if edge_counts is not None:
            self.edge_counts = edge_counts
        self.started = now
        self._put("version", f"lastwill version {version}", now)
        self.update(0, now)

    def update(self, _ident, now: float) -> None:
        self.timers.schedule((_SYS, 0), now + self.interval)
        c = dict(self.counts())
        c["bytes_in"], c["bytes_out"], c["packets_out"] = self.edge_counts()
        self._put("uptime", f"{int(now - self.started)} seconds", now, always=True)
        total, connected = c["clients_total"], c["clients_connected"]
        self.maximum = max(self.maximum, total)
        for topic, value in (("clients/total", total), ("clients/maximum", self.maximum),
                             ("clients/connected", connected), ("clients/active", connected),
                             ("clients/disconnected", total - connected), ("clients/inactive", total - connected),
                             ("subscriptions/count", c["subscriptions"]),
                             ("retained messages/count", c["retained"])):
            self._put(topic, str(value), now)
        for topic, key in TOTALS:
            self._put(topic, str(c[key]), now)
        self._loads(c, now)
        self.last = c
        self.last_update = now

    def _loads(self, c: dict[str, int], now: float) -> None:
        initial = self.last_update is None
        dt = 0.0 if initial else now - self.last_update
        for name, key in LOADS:
            rate = 0.0 if initial or dt <= 0 else (c[key] - self.last.get(key, 0)) * 60.0 / dt
            for window, suffix in WINDOWS:
                topic = f"load/{name}/{suffix}"
                current = self.loads.get(topic, 0.0)
                new = current if initial else rate + math.exp(-dt / window) * (current - rate)
                self.loads[topic] = new
                if initial or abs(new - current) >= 0.01:
                    self._put(topic, f"{new:.2f}", now, always=True)

    def _put(self, topic: str, payload: str, now: float, always: bool = False) -> None:
        topic = "$SYS/broker/" + topic
        if not always and self.published.get(topic) == payload:
            return
        self.published[topic] = payload
        self.publish(Message(topic, payload.encode(), 0, True), now)
