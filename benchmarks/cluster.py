"""lastwill as a cluster on Redis, against one lastwill node and mosquitto, in the same run (ratios).

Brokers (each fresh per measurement, every broker-side process pinned to CPU 0, the load generator to
CPU 1, as in run.py):

- ``mosquitto``, ``lastwill`` (one process, ``--memory``);
- ``cluster-1``: one ``lastwill serve --cluster`` node on a redis-server (AOF, appendfsync always),
  publishers and subscribers on that node;
- ``cluster-2``: two nodes on one redis-server, publishers on n1, subscribers on n2 (every message
  crosses nodes through Redis);
- ``cluster-3``: three nodes, publishers on n1, subscribers spread over n1, n2 and n3 (round robin).

Scenarios: the load generator's (benchmarks/loadgen), with ``--sub-port`` for the second node.
For the cluster brokers the Redis script calls (EVALSHA) and pipelines during the run are read from
``INFO commandstats`` / ``INFO stats``: calls per delivered message or per CONNECT.

    .venv/bin/python benchmarks/cluster.py                       # ~3 min
    .venv/bin/python benchmarks/cluster.py --scenarios fanin_qos0 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: brokers, machine facts)

SCENARIOS = {
    # name: (loadgen scenario, extra args, headline key)
    "fanin_qos0": ("fanin_qos0", [], "rate"),
    "fanout_qos0": ("fanout_qos0", [], "rate"),
    "fanin_qos1": ("fanin_qos1", [], "rate"),
    "fanin_qos1_persistent": ("fanin_qos1_persistent", [], "rate"),
    "latency_qos1": ("latency_qos1", ["--rate", "500"], "lat_ms_p50"),
    "connect_rate": ("connect_rate", [], "rate"),
    "wills_2000_qos1": ("wills_drop_qos1", ["--clients", "2000"], "last_ms"),
}
BROKERS = ("mosquitto", "lastwill", "cluster-1", "cluster-2", "cluster-3")


class Redis:
    def __init__(self, workdir: Path):
        self.port = run.free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.proc = subprocess.Popen(
            ["taskset", "-c", run.BROKER_CPU, shutil.which("redis-server") or "/usr/bin/redis-server",
             "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--maxmemory-policy", "noeviction",
             "--logfile", str(self.dir / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def counters(self) -> dict[str, int]:
        stats = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_evalsha:"):
                stats["evalsha"] = int(line.split("calls=")[1].split(",")[0])
        for line in self.cli("INFO", "stats").splitlines():
            if line.startswith("total_commands_processed:"):
                stats["commands"] = int(line.split(":")[1])
        return stats

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Node:
    def __init__(self, workdir: Path, redis: Redis, node_id: str):
        self.port = run.free_port()
        self.dir = workdir / f"{node_id}-{self.port}"
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "broker.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", run.BROKER_CPU, sys.executable, "-m", "lastwill", "serve", "--listen",
             f"127.0.0.1:{self.port}", "--log-level", "warning", "--cluster", f"redis://127.0.0.1:{redis.port}/0",
             "--node-id", node_id], stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 20
        while not run.mqtt_ping(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()[-500:]
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuWindow(threading.Thread):
    """The broker-side processes' CPU time over the steady part of the load generator's window (from 1 s
    after its warm-up to 0.2 s before its end: connecting its clients takes well under 1 s here)."""

    def __init__(self, pids: list[int], warmup: float, duration: float):
        super().__init__(daemon=True)
        self.pids, self.start_at, self.span = pids, warmup + 1.0, max(0.5, duration - 1.2)
        self.cpu: float | None = None
        self.each: list[float] = []

    def run(self) -> None:
        time.sleep(self.start_at)
        t0, c0 = time.monotonic(), [cpu_seconds([p]) for p in self.pids]
        time.sleep(self.span)
        self.span = time.monotonic() - t0
        self.each = [cpu_seconds([p]) - c for p, c in zip(self.pids, c0, strict=True)]
        self.cpu = sum(self.each)


def measure(broker: str, scenario: str, args, workdir: Path) -> dict:
    loadgen, extra, _ = SCENARIOS[scenario]
    redis = None
    nodes: list = []
    proc = None
    if broker == "mosquitto":
        proc = run.BrokerProcess("mosquitto", workdir)
        port = sub_port = proc.port
        pid = proc.pid
    elif broker == "lastwill":
        proc = run.BrokerProcess("lastwill-memory", workdir)
        port = sub_port = proc.port
        pid = proc.pid
    else:
        redis = Redis(workdir)
        nodes = [Node(workdir, redis, "n1")]
        if broker in ("cluster-2", "cluster-3"):
            nodes.append(Node(workdir, redis, "n2"))
        if broker == "cluster-3":
            nodes.append(Node(workdir, redis, "n3"))
        port, sub_port, pid = nodes[0].port, nodes[-1].port, nodes[0].pid
    before = redis.counters() if redis else {}
    cmd = ["taskset", "-c", run.LOADGEN_CPU, sys.executable, str(run.LOADGEN), loadgen, "--port", str(port),
           "--sub-port", str(sub_port), "--broker-pid", str(pid), "--duration", str(args.duration),
           "--warmup", str(args.warmup), *extra]
    if broker == "cluster-3":  # the subscribers spread over the three nodes (one third on the publishers' n1)
        cmd += ["--sub-ports", ",".join(str(n.port) for n in nodes)]
    pids = [n.pid for n in nodes] + ([redis.proc.pid] if redis else []) + ([proc.pid] if proc else [])
    window = CpuWindow(pids, args.warmup, args.duration)
    window.start()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
        lines = out.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"failed": out.stderr[-500:]}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        result = {"failed": repr(e)}
    window.join(5)
    if window.cpu is not None and result.get("rate"):
        # CPU time of every broker-side process (the nodes and redis-server) per delivered message
        result["cpu_us_per_msg"] = round(window.cpu / (result["rate"] * window.span) * 1e6, 2)
        # the same, per process: the nodes n1, n2, ... then redis-server (or the one broker)
        result["cpu_us_per_msg_each"] = [round(c / (result["rate"] * window.span) * 1e6, 2) for c in window.each]
    if redis is not None:
        after = redis.counters()
        result["redis_evalsha"] = after.get("evalsha", 0) - before.get("evalsha", 0)
        result["redis_commands"] = after.get("commands", 0) - before.get("commands", 0)
        problems = [line for n in nodes for line in n.log_path.read_text(errors="replace").splitlines()
                    if "Traceback" in line or "ERROR" in line]
        result["node_log_problems"] = problems[:10]
    for n in nodes:
        n.stop()
    if redis is not None:
        redis.stop()
    if proc is not None:
        proc.stop()
    result.update(broker=broker, scenario=scenario)
    return result


def per_unit(r: dict) -> str:
    """Redis script calls per delivered message (or per CONNECT, per will)."""
    units = r.get("count") or r.get("wills_received") or r.get("acked_by_broker")
    calls = r.get("redis_evalsha")
    if not units or calls is None:
        return ""
    return f"{calls / units:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--brokers", default=",".join(BROKERS))
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    scenarios = args.scenarios.split(",")
    brokers = args.brokers.split(",")
    records = []
    with tempfile.TemporaryDirectory(prefix="lw-cluster-bench-") as tmp:
        for _ in range(args.runs):
            for sc in scenarios:
                for b in brokers:
                    r = measure(b, sc, args, Path(tmp))
                    records.append(r)
                    key = SCENARIOS[sc][2]
                    print(f"{sc:24} {b:10} {key}={r.get(key)} cpu_us_per_msg={r.get('cpu_us_per_msg')} "
                          f"{r.get('cpu_us_per_msg_each')} "
                          f"lost={r.get('lost')} "
                          f"evalsha={r.get('redis_evalsha', '')} per={per_unit(r)} "
                          f"{'FAILED ' + str(r['failed'])[:200] if 'failed' in r else ''}", flush=True)
    print()
    print(f"| scenario | metric | {' | '.join(brokers)} | cluster-2 / lastwill | cluster-2 / mosquitto | "
          f"cluster-3 / lastwill |")
    print(f"|---|---|{'---|' * len(brokers)}---|---|---|")
    for sc in scenarios:
        key = SCENARIOS[sc][2]
        med = {}
        for b in brokers:
            values = [r[key] for r in records if r["broker"] == b and r["scenario"] == sc and r.get(key) is not None]
            med[b] = statistics.median(values) if values else None
        cells = [f"{med[b]:,.1f}" if med[b] is not None else "-" for b in brokers]

        def ratio(a, b, med=med):
            return f"{med[a] / med[b]:.2f}" if med.get(a) and med.get(b) else "-"
        print(f"| {sc} | {key} | {' | '.join(cells)} | {ratio('cluster-2', 'lastwill')} | "
              f"{ratio('cluster-2', 'mosquitto')} | {ratio('cluster-3', 'lastwill')} |")
        cpu = {b: [r["cpu_us_per_msg"] for r in records if r["broker"] == b and r["scenario"] == sc
                   and r.get("cpu_us_per_msg") is not None] for b in brokers}
        print(f"| {sc} | CPU us/msg (median of {args.runs}) | "
              f"{' | '.join(f'{statistics.median(v):.2f}' if v else '-' for v in cpu.values())} | | | |")
    facts = run.machine_facts()
    out = HERE / "results" / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": facts, "records": records}, indent=1))
    print(f"\nload average {run.loadavg()}; details in {out}")
    return 0 if not any("failed" in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
