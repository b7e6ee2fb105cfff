"""10,000 concurrent connections with wills, all dropped at once: every will delivered exactly once.

A real ``lastwill serve`` process (which raises its own descriptor limit at start-up); the 10,000
connections are held by a separate process (load_holder.py, raw asyncio sockets, half MQTT 3.1.1 and
half 5.0, each with a QoS 1 will on load/will/<i>), opened in batches; SIGKILL of that process
drops them all at once. A raw-socket MQTT 5.0 observer (lastwill's codec) subscribed to
load/will/# at QoS 1 acknowledges every PUBLISH and counts. The figures (connect time, drop to
last will, broker RSS) are printed for docs/security.md "Load".

``LASTWILL_LOAD_CONNECTIONS`` changes N (default 10000).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Puback, Publish, Subscribe, Subscription
from tests.integration.serve import ServeProcess

pytestmark = pytest.mark.integration

N = int(os.environ.get("LASTWILL_LOAD_CONNECTIONS", "10000"))
REPO = Path(__file__).resolve().parents[2]


class WillObserver(asyncio.Protocol):
    """MQTT 5.0, QoS 1 subscription to load/will/#: acknowledges and counts every will."""

    def __init__(self, n: int):
        self.decoder = Decoder(server_side=False, protocol_level=5)
        self.counts = [0] * n
        self.dups = 0
        self.total = 0
        self.last_at = 0.0
        self.suback = asyncio.get_running_loop().create_future()
        self.all_in = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(encode(Connect(client_id="will-observer", keep_alive=0, protocol_level=5), 5))
        transport.write(encode(Subscribe(1, [Subscription("load/will/#", 1)]), 5))

    def data_received(self, data: bytes) -> None:
        acks = []
        for p in self.decoder.feed(data):
            if isinstance(p, Publish):
                self.counts[int(p.payload)] += 1
                self.total += 1
                self.dups += p.dup
                self.last_at = time.monotonic()
                acks.append(encode(Puback(p.packet_id), 5))
            elif type(p).__name__ == "Suback" and not self.suback.done():
                self.suback.set_result(p.reason_codes)
        if acks:
            self.transport.write(b"".join(acks))
        if self.total >= len(self.counts) and not self.all_in.done():
            self.all_in.set_result(None)


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.fail(f"the hard descriptor limit ({hard}) is below the {n} this test needs: raise it "
                    f"(ulimit -Hn, or LimitNOFILE=) or set LASTWILL_LOAD_CONNECTIONS")
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n if hard == resource.RLIM_INFINITY else hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_10000_connections_with_wills_dropped_at_once_every_will_exactly_once_MQTT_3_1_2_8(tmp_path):
    raise_nofile(N + 200)  # the holder process inherits it (and raises its own too)
    # started with the usual soft limit, 1024: `lastwill serve` raises its own to the hard limit
    broker = ServeProcess(tmp_path / "broker.log", "--log-level", "info", nofile_soft=1024).start()
    holder = None
    try:
        log = broker.log_text()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert f"descriptor limit (RLIMIT_NOFILE) raised from 1024 to {hard}" in log  # and said so
        holder, figures = asyncio.run(_run(broker, tmp_path))
        print(f"\nload: {N} connections with wills: connected in {figures['connect_s']:.2f}s "
              f"({N / figures['connect_s']:.0f}/s); broker RSS {figures['rss_idle_mib']:.1f} MiB idle, "
              f"{figures['rss_connected_mib']:.1f} MiB with {N} connected "
              f"({figures['per_conn_kib']:.1f} KiB per connection), peak {figures['rss_peak_mib']:.1f} MiB; "
              f"SIGKILL to last will {figures['drop_to_last_will_s']:.2f}s, to first "
              f"{figures['drop_to_first_will_s']:.3f}s; test {figures['total_s']:.1f}s")
        assert figures["received"] == N and figures["missing"] == 0 and figures["duplicates"] == 0
        assert figures["dup_flags"] == 0
        assert broker.problems() == []
        assert broker.stop() == 0
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        broker.kill()


async def _run(broker: ServeProcess, tmp_path: Path):
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    _, obs = await loop.create_connection(lambda: WillObserver(N), "127.0.0.1", broker.port)
    assert await asyncio.wait_for(obs.suback, 10) == [1]
    rss_idle = broker.rss_kib()
    holder = subprocess.Popen([sys.executable, "-m", "tests.integration.load_holder", str(broker.port), str(N)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=open(tmp_path / "holder.err", "w"),
                              text=True)
    line = await asyncio.wait_for(loop.run_in_executor(None, holder.stdout.readline), 120)
    result = json.loads(line or '{"error": "no output"}')
    assert "error" not in result, f"{result} {(tmp_path / 'holder.err').read_text()[-2000:]}"
    assert result["connected"] == N
    await asyncio.sleep(0.5)
    rss_connected = broker.rss_kib()
    assert obs.total == 0, "a will was published while every client was connected"

    dropped_at = time.monotonic()
    holder.send_signal(signal.SIGKILL)  # every connection ends at once, without DISCONNECT
    first_will = None
    try:
        while not obs.all_in.done():
            await asyncio.wait([obs.all_in], timeout=0.01)
            if first_will is None and obs.total:
                first_will = time.monotonic()
            if time.monotonic() - dropped_at > 90:
                break
    finally:
        holder.wait(10)
    last = obs.last_at
    await asyncio.sleep(1.0)  # a duplicate would come now
    figures = {
        "connect_s": result["seconds"],
        "rss_idle_mib": rss_idle / 1024,
        "rss_connected_mib": rss_connected / 1024,
        "per_conn_kib": (rss_connected - rss_idle) / N,
        "rss_peak_mib": broker.hwm_kib() / 1024,
        "drop_to_first_will_s": (first_will or last) - dropped_at,
        "drop_to_last_will_s": last - dropped_at,
        "received": obs.total,
        "missing": sum(1 for c in obs.counts if c == 0),
        "duplicates": sum(c - 1 for c in obs.counts if c > 1),
        "dup_flags": obs.dups,
        "total_s": time.monotonic() - started,
    }
    return holder, figures
