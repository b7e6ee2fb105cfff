"""A slow subscriber never makes the broker buffer without bound (docs/security.md "Slow subscribers").

A real ``lastwill serve`` process with its default limits: a subscriber stops reading its socket
while a publisher floods its topic. The policy: backpressure on its socket (above 1 MiB unsent the
broker stops writing to it), then its session queue (max_queued_messages, max_queued_bytes), then
drop and count. Measured: the broker's RSS from /proc, the drops in /metrics, the log line; and the
other clients keep working meanwhile, losing nothing.
"""

from __future__ import annotations

import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Pingreq, Publish, Will
from tests.integration.serve import ServeProcess
from tests.rawclient import RawClient

pytestmark = pytest.mark.integration

FLOOD_SECONDS = 6.0
PAYLOAD = b"f" * 1000


@pytest.fixture
def serve(tmp_path):
    made: list[ServeProcess] = []

    def make(*args: str, **kw) -> ServeProcess:
        b = ServeProcess(tmp_path / f"broker{len(made)}.log", *args, **kw).start()
        made.append(b)
        return b
    yield make
    for b in made:
        b.kill()


class Bystanders:
    """A paho QoS 1 publisher and subscriber on their own topic: every acknowledged message must arrive."""

    def __init__(self, port: int):
        self.acked: set[bytes] = set()
        self.received: set[bytes] = set()
        self.latencies: list[float] = []
        self._infos: list = []  # (MQTTMessageInfo, payload); no lock of ours around publish() (paho's own)
        self.sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ok-sub", protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.sub.on_subscribe = lambda *a: ready.set()
        self.sub.on_message = self._on_message
        self.sub.connect("127.0.0.1", port)
        self.sub.subscribe("ok/#", 1)
        self.sub.loop_start()
        assert ready.wait(5)
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ok-pub", protocol=mqtt.MQTTv5)
        self.pub.connect("127.0.0.1", port)
        self.pub.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_message(self, client, userdata, m) -> None:
        self.received.add(m.payload)
        sent_at = float(m.payload.split(b"@")[1])
        self.latencies.append(time.monotonic() - sent_at)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            payload = f"{i}@{time.monotonic()}".encode()
            self._infos.append((self.pub.publish("ok/t", payload, 1), payload))
            i += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.acked = {payload for info, payload in self._infos if info.is_published()}
            if len(self.acked) == len(self._infos) and self.acked <= self.received:
                break
            time.sleep(0.1)
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


def flood(port: int, seconds: float, qos: int = 0, at_least: int = 0) -> tuple[int, int]:
    """Publish 1 kB messages on flood/x as fast as the broker reads them, for ``seconds`` and then on
    until ``at_least`` bytes are sent (a broker slowed by a busy machine reads slower; 4 x ``seconds``
    at most); (messages, bytes) sent."""
    c = RawClient(port, timeout=2)
    c.connect("flooder", 4)
    batch = b"".join(encode(Publish("flood/x", PAYLOAD, qos, False, False, (i + 1) if qos else None), 4)
                     for i in range(100))
    drain = threading.Thread(target=lambda: _drain(c), daemon=True)  # PUBACKs, if any
    drain.start()
    n = sent = 0
    started = time.monotonic()
    deadline, last = started + seconds, started + 4 * seconds
    while time.monotonic() < deadline or (sent < at_least and time.monotonic() < last):
        c.send_raw(batch)
        n += 100
        sent += len(batch)
    c.disconnect()
    return n, sent


def _drain(c: RawClient) -> None:
    try:
        while c.sock.recv(1 << 16):
            pass
    except OSError:
        pass


def test_slow_subscriber_memory_bounded_drops_counted_others_unharmed(serve):
    b = serve("--log-level", "info", admin=True)
    slow = RawClient(b.port, rcvbuf=4096)
    slow.connect("slow", 5)
    assert slow.subscribe("flood/#", 1) == [1]  # QoS 1: the broker must hold what it cannot send
    others = Bystanders(b.port)
    time.sleep(0.3)
    rss_before = b.rss_kib()
    peak = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], b.rss_kib())
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    n, sent = flood(b.port, FLOOD_SECONDS, at_least=250_000_000)  # QoS 0 in, QoS 0 out (min of the two)
    flood_time = time.monotonic() - started
    time.sleep(0.5)
    sampling.set()
    sampler.join()
    rss_after = b.rss_kib()
    metrics = b.metrics()
    others.stop()

    dropped = metrics['lastwill_messages_dropped_total{reason="queue_bytes"}'] + \
        metrics['lastwill_messages_dropped_total{reason="queue_full"}']
    queued = metrics["lastwill_messages_queued"]
    growth_mib = (peak[0] - rss_before) / 1024
    print(f"\nslow subscriber: {n} messages ({sent / 1e6:.0f} MB) flooded in {flood_time:.1f}s; "
          f"broker RSS {rss_before / 1024:.1f} MiB before, peak {peak[0] / 1024:.1f}, after {rss_after / 1024:.1f}; "
          f"queued {queued:.0f}, dropped {dropped:.0f}; bystander latency max "
          f"{max(others.latencies) * 1000:.0f} ms over {len(others.latencies)} messages")
    # the policy, end to end: the queue filled up to max_queued_bytes (16 MiB of 1 kB messages), the rest dropped
    assert sent > 200e6, "the flood was too small to show anything"
    assert dropped > 0 and dropped + queued + 2000 >= n * 0.5
    assert 15_000 <= queued <= 16 * 1024 * 1024 // (len(PAYLOAD) + len("flood/x")) + 1
    assert metrics['lastwill_limit_hits_total{limit="max_queued_bytes"}'] == \
        metrics['lastwill_messages_dropped_total{reason="queue_bytes"}'] > 0
    # memory stays bounded: the queue (16 MiB of payloads plus bookkeeping) and the socket buffer,
    # not the hundreds of MB that were published
    assert growth_mib < 80, f"RSS grew by {growth_mib:.0f} MiB"
    assert "client_id=slow queue full" in b.log_text()
    # the others lost nothing and were not held up for long
    assert others.acked and others.acked <= others.received, len(others.acked - others.received)
    assert max(others.latencies) < 5.0
    # the slow subscriber is still connected and gets its queue once it reads again
    got = 0
    deadline = time.monotonic() + 20
    while got < queued and time.monotonic() < deadline:
        packets = slow.read(timeout=5)
        slow.ack(packets)
        got += sum(1 for p in packets if isinstance(p, Publish))
    assert got >= queued
    # the broker moves a queue into flight as the client acknowledges (at most 4 MiB in flight): the
    # last of it leaves the queue once the last acknowledgements are in, so read on until it is empty
    deadline = time.monotonic() + 20
    while b.metrics()["lastwill_messages_queued"] and time.monotonic() < deadline:
        slow.ack(slow.read(timeout=1))
    assert b.metrics()["lastwill_messages_queued"] == 0
    assert b.problems() == []


def test_client_that_sends_but_never_reads_is_closed_memory_bounded(serve):
    """PINGREQs (or QoS 1 PUBLISHes) without ever reading the answers: the answers cannot be queued
    forever. Above 8 MiB + max_packet_size unsent, the connection is closed, and its will published."""
    b = serve("--log-level", "info", admin=True)
    watcher = RawClient(b.port)
    watcher.connect("watcher", 5)
    assert watcher.subscribe("dead/#", 1) == [1]
    c = RawClient(b.port, rcvbuf=4096, timeout=2)
    c.connect("deaf", 4, will=Will("dead/deaf", b"deaf is gone", 1, False))
    rss_before = b.rss_kib()
    batch = encode(Pingreq(), 4) * 10_000
    sent = 0
    closed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c.send_raw(batch)
            sent += len(batch)
        except (ConnectionError, OSError):
            closed = True
            break
    rss_peak = b.hwm_kib()
    assert closed, f"still open after {sent / 1e6:.0f} MB of PINGREQ"
    w = watcher.expect("Publish", timeout=5)
    assert (w.topic, w.payload) == ("dead/deaf", b"deaf is gone")  # a connection lost: the will goes
    assert "client_id=deaf from" in b.log_text() and "does not read" in b.log_text()
    assert b.metrics()['lastwill_limit_hits_total{limit="unsent_bytes"}'] == 1
    print(f"\nsends but never reads: closed after {sent / 1e6:.1f} MB of PINGREQ; RSS {rss_before / 1024:.1f} MiB "
          f"before, peak {rss_peak / 1024:.1f} MiB")
    assert (rss_peak - rss_before) / 1024 < 40
    assert b.problems() == []


def test_websocket_client_that_sends_but_never_reads_is_closed(broker_factory, monkeypatch):
    """The same rule on a ws_listen connection: PINGREQs in binary frames, never a read. (The broker
    runs in this process with a limit of 1 MiB instead of 8: the rule is the same, and a broker slowed
    down by a busy machine reaches it within the test's minute.)"""
    from lastwill.edge import server
    from tests.integration.transports import RawWebSocket
    from tests.rawbytes import connect_packet

    monkeypatch.setattr(server, "UNSENT_HARD_LIMIT", 1024 * 1024)
    b = broker_factory(ws_listen=["127.0.0.1:0"])
    port = b.broker.ports("ws")[0]
    watcher = RawClient(b.port)
    watcher.connect("watcher", 5)
    assert watcher.subscribe("dead/#", 1) == [1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(2)
    sock.connect(("127.0.0.1", port))
    ws = RawWebSocket(port, sock=sock)
    ws.send_frame(connect_packet("deaf-ws", will=("dead/deaf-ws", b"gone")))
    frame = encode(Pingreq(), 4) * 10_000
    sent = 0
    closed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ws.send_frame(frame)
            sent += len(frame)
        except OSError:
            closed = True
            break
    assert closed, f"still open after {sent / 1e6:.0f} MB of PINGREQ"
    w = watcher.expect("Publish", timeout=5)
    assert (w.topic, w.payload) == ("dead/deaf-ws", b"gone")
    assert b.call(lambda: b.broker.server.core.limit_hits.get("unsent_bytes")) == 1
    assert sent < 60e6
