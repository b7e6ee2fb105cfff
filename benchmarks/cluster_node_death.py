"""A node holding N clients with wills is killed (kill -9): when do the survivors' wills arrive?

One redis-server (AOF, appendfsync always), two ``lastwill serve --cluster`` nodes (lease, heartbeat and
grace as given, recovery grace 0). N MQTT 3.1.1 clients with a QoS 1 will connect to n1; an observer
(QoS 1, ``w/#``) is on n2. n1 is killed; every will must arrive once. Reported against the lease end the
engine recorded for n1 (Redis ``TIME``, wall clock ms): the first and last arrival, the spread, the claim
throughput (wills per second between the first and the last), duplicates and missing ones.

    .venv/bin/python benchmarks/cluster_node_death.py --clients 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import run  # noqa: E402

from lastwill.codec.decoder import Decoder  # noqa: E402
from lastwill.codec.encoder import encode  # noqa: E402
from lastwill.codec.packets import Connect, Puback, Publish, Subscribe, Subscription, Will  # noqa: E402


def start_node(tmp: Path, redis_port: int, node_id: str, args) -> tuple[subprocess.Popen, int]:
    port = run.free_port()
    log = open(tmp / f"{node_id}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{port}",
                             "--log-level", "warning", "--cluster", f"redis://127.0.0.1:{redis_port}/0",
                             "--node-id", node_id, "--cluster-lease", str(args.lease), "--cluster-heartbeat",
                             str(args.beat), "--cluster-grace", str(args.grace), "--recovery-grace", "0",
                             "--sys-interval", "0"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    deadline = time.monotonic() + 30
    while not run.mqtt_ping(port):
        assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
        time.sleep(0.05)
    return proc, port


async def hold(port: int, n: int, concurrency: int = 64) -> list:
    writers = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode(Connect(client_id=f"dev{i}", protocol_level=4, keep_alive=600,
                                        will=Will(f"w/dev{i}", f"tok{i}".encode(), 1, False)), 4))
            data = await reader.readexactly(4)
            assert data == b"\x20\x02\x00\x00", data
            writers.append(writer)
    await asyncio.gather(*(one(i) for i in range(n)))
    return writers


async def observe(port: int, n: int, arrivals: dict, timeout: float, started: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    dec = Decoder(server_side=False, protocol_level=4)
    writer.write(encode(Connect(client_id="observer", protocol_level=4, keep_alive=600), 4))
    writer.write(encode(Subscribe(1, [Subscription("w/#", 1)]), 4))
    started.set()
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in arrivals.values()) < n and time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if not data:
            break
        now = time.time()
        for p in dec.feed(data):
            if isinstance(p, Publish):
                arrivals.setdefault(p.payload.decode(), []).append(now)
                writer.write(encode(Puback(p.packet_id), 4))


async def main_async(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lw-node-death-"))
    redis_port = run.free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes", "--appendfsync",
                              "always", "--save", "", "--logfile", str(tmp / "redis.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = []
    try:
        time.sleep(0.5)
        n1, p1 = start_node(tmp, redis_port, "n1", args)
        n2, p2 = start_node(tmp, redis_port, "n2", args)
        nodes = [n1, n2]
        arrivals: dict[str, list[float]] = {}
        started = asyncio.Event()
        obs = asyncio.ensure_future(observe(p2, args.clients, arrivals, args.timeout, started))
        await started.wait()
        t0 = time.monotonic()
        writers = await hold(p1, args.clients)
        connect_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        killed_at = time.time()
        n1.send_signal(signal.SIGKILL)
        n1.wait()
        await obs
        epoch = subprocess.run(["redis-cli", "-p", str(redis_port), "HGET", "lw:nodeid", "n1"],
                               capture_output=True, text=True).stdout.strip()
        lease_end = int(subprocess.run(["redis-cli", "-p", str(redis_port), "HGET", f"lw:node:{epoch}", "lease_end"],
                                       capture_output=True, text=True).stdout.strip()) / 1000
        firsts = sorted(v[0] for v in arrivals.values())
        for w in writers:
            w.close()
        out = {
            "clients": args.clients, "lease_s": args.lease, "beat_s": args.beat, "grace_s": args.grace,
            "connect_s": round(connect_s, 2), "received": len(arrivals),
            "missing": args.clients - len(arrivals), "duplicates": sum(len(v) - 1 for v in arrivals.values()),
            "lease_end_after_kill_s": round(lease_end - killed_at, 3),
        }
        if firsts:
            out.update(first_after_lease_end_s=round(firsts[0] - lease_end, 3),
                       last_after_lease_end_s=round(firsts[-1] - lease_end, 3),
                       last_after_kill_s=round(firsts[-1] - killed_at, 3),
                       spread_s=round(firsts[-1] - firsts[0], 3),
                       claims_per_s=round(len(firsts) / max(1e-3, firsts[-1] - firsts[0])))
        return out
    finally:
        for p in nodes:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--lease", type=float, default=10.0)
    p.add_argument("--beat", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result))
    return 0 if result.get("missing") == 0 and result.get("duplicates") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
