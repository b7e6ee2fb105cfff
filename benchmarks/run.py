#!/usr/bin/env python3
"""Benchmark lastwill against mosquitto on this machine, in the same run, reported as ratios.

    .venv/bin/python benchmarks/run.py [--quick] [--scenarios a,b] [--duration S] [--runs N]
                                       [--out FILE] [--write-doc] [--profile]

For every run, scenario and broker (brokers interleaved per scenario, so that both see the same
machine load), a fresh broker is started on a free 127.0.0.1 port pinned to CPU 0, the load
generator (benchmarks/loadgen/, one process, uvloop) runs pinned to CPU 1, and the broker is
stopped. The table gives the median over runs of each broker's number and the ratio
lastwill / mosquitto, with the brokers' peak RSS, their CPU use, the load generator's CPU use and
how busy the two cores were over the measuring window. Results go to benchmarks/results/ as JSON;
``--write-doc`` also rewrites the generated part of docs/benchmarks.md.

``--profile`` instead runs lastwill alone under py-spy during the fan-in scenario and prints
the functions with the most samples (self and inclusive).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen"  # a package run as a directory: python benchmarks/loadgen SCENARIO ...
RESULTS = HERE / "results"
DOC = ROOT / "docs" / "benchmarks.md"
# broker variants: name -> extra lastwill flags (mosquitto has its own config below)
LASTWILL_VARIANTS = {
    "lastwill": [],                   # the defaults: durable (SQLite in ./lastwill-data, fsync batch)
    "lastwill-memory": ["--memory"],  # nothing kept across restarts, like mosquitto with persistence false
    "lastwill-fsync-always": ["--fsync", "always"],  # every commit fsynced before its acknowledgements
    "lastwill-fsync-off": ["--fsync", "off"],        # the OS decides when to write
}
BROKERS = ("mosquitto", "lastwill")  # the default comparison; --brokers adds lastwill-memory
LASTWILL_SRC: Path | None = None  # --lastwill-src: run lastwill from this src/ directory instead
# --base-src: broker "lastwill-base" is lastwill (its defaults) from this src/ directory: a before/after
# comparison in one run, the two interleaved like every other pair of brokers
BASE_SRC: Path | None = None
# --defaults: both brokers exactly as installed, logging on (lastwill's default log level; mosquitto with
# Debian's configuration: persistence on, log to a file, connection messages on); otherwise lastwill
# runs with --log-level warning and mosquitto quieted (MOSQUITTO_CONF)
DEFAULTS = False
MOSQUITTO_CONF_DEFAULTS = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {dir}/
log_dest file {dir}/mosquitto.log
"""
BROKER_CPU = "0"
LOADGEN_CPU = "1"

# mosquitto: the limits lastwill does not have (or has larger) are raised so that neither broker
# drops or throttles what the other would deliver. lastwill runs with its defaults.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
# QoS 0 to an online client is dropped by mosquitto once this many packets are queued for it;
# lastwill queues QoS 0 for online clients without a limit: make it large.
max_queued_messages 1000000
# outgoing QoS 1/2 in flight per client: lastwill allows 65535 to an MQTT 3.1.1 client.
max_inflight_messages 65535
# lastwill runs with --log-level warning: no per-connection log lines on either side
connection_messages false
log_dest stderr
log_type error
log_type warning
"""
# wills_5000_qos1: mosquitto as users get it, with its default queue and in-flight limits
# (max_queued_messages 1000, max_inflight_messages 20): what issue 6 compares against
MOSQUITTO_CONF_DEFAULT_LIMITS = "".join(
    line for line in MOSQUITTO_CONF.splitlines(keepends=True)
    if not line.startswith(("max_queued_messages", "max_inflight_messages", "# QoS 0 to an online",
                            "# lastwill queues QoS 0", "# outgoing QoS 1/2")))


class Metric:
    """A table row: result key, label ({clients} etc. are filled from the first record), digits,
    and whether a ratio to the first broker makes sense."""

    def __init__(self, key: str, label: str, digits: int = 0, ratio: bool = True):
        self.key, self.label, self.digits, self.ratio = key, label, digits, ratio

    def label_for(self, record: dict) -> str:
        fill = {k: (f"{v:,}" if type(v) is int else v) for k, v in record.items()
                if isinstance(v, (int, float, str))}
        try:
            return self.label.format(**fill)
        except (KeyError, ValueError, IndexError):
            return self.label.replace("{", "").replace("}", "")


def throughput(metric: str) -> list[Metric]:
    return [Metric("rate", metric), Metric("rate_per_cpu_s", metric.split("/")[0] + " per broker CPU-second")]


def will_delays(what: str = "will delay") -> list[Metric]:
    return [Metric("delay_ms_p50", f"{what} p50, ms", 1), Metric("delay_ms_p99", f"{what} p99, ms", 1),
            Metric("delay_ms_max", f"{what} max, ms", 1),
            Metric("wills_received", "wills received (of {clients})", ratio=False),
            Metric("connect_all_s", "time to connect the {clients} clients, s", 2)]


class Scenario:
    def __init__(self, name: str, loadgen: str, title: str, metric: str | list[Metric],
                 extra: list[str] | None = None, quick_extra: list[str] | None = None,
                 mosquitto_conf: str = MOSQUITTO_CONF):
        self.name, self.loadgen, self.title = name, loadgen, title
        self.metrics = throughput(metric) if isinstance(metric, str) else metric
        self.metric = self.metrics[0].label  # the headline
        self.extra = extra or []
        self.quick_extra = quick_extra or []
        self.mosquitto_conf = mosquitto_conf


SCENARIOS = {s.name: s for s in [
    Scenario("fanin_qos0", "fanin_qos0", "QoS 0 fan-in: 50 pub -> 1 sub (bench/fanin/+), 64 B",
             "delivered msg/s"),
    Scenario("fanout_qos0", "fanout_qos0", "QoS 0 fan-out: 1 pub -> 100 subs, 64 B", "delivered msg/s"),
    Scenario("fanin_qos1", "fanin_qos1", "QoS 1 fan-in: 10 pub (window 100) -> 1 sub that acks, 64 B",
             "delivered msg/s"),
    Scenario("fanin_qos1_persistent", "fanin_qos1_persistent",
             "QoS 1 fan-in to a persistent session (clean session 0, subscribed first); lost = PUBACKed, "
             "never delivered", throughput("delivered msg/s") + [
                 Metric("lost", "lost (acked by the broker, never delivered)", ratio=False),
                 Metric("duplicates", "duplicate deliveries", ratio=False)],
             quick_extra=["--drain-max", "5"]),
    Scenario("latency_qos1", "latency_qos1", "QoS 1 latency: 1 pub paced at 1,000 msg/s -> 1 sub that acks",
             [Metric("lat_ms_p50", "latency p50, ms", 3), Metric("lat_ms_p99", "latency p99, ms", 3),
              Metric("lat_ms_max", "latency max, ms", 3),
              Metric("lost", "messages lost (sent in the window, not delivered)", ratio=False),
              Metric("lat_kernel_ms_p99", "latency p99 to the kernel's receive time, ms", 3),
              Metric("floor_ms_p99", "load generator's loopback floor p99, ms (no broker)", 3, ratio=False),
              Metric("broker_runq_wait_pct", "broker waiting for its CPU (run queue), % of the window", 2,
                     ratio=False),
              Metric("loadgen_runq_wait_pct", "load generator waiting for its CPU, % of the window", 2,
                     ratio=False)],
             quick_extra=["--floor", "0.5", "--drain", "0.5"]),
    Scenario("connect_rate", "connect_rate", "connection rate: CONNECT with will / CONNACK / DISCONNECT, "
             "128 in parallel", "connects/s", ["--concurrency", "128"]),
    Scenario("connect_hold_5000", "connect_hold", "5,000 connections with wills, 128 in flight, all kept open",
             [Metric("rate", "connects/s (until the last of {clients} CONNACKs)"),
              Metric("kib_per_conn", "broker RSS per idle connection, KiB", 2),
              Metric("rss_before_mib", "broker RSS before, MiB", 1),
              Metric("rss_held_mib", "broker RSS with the {clients} connected, MiB", 1),
              Metric("connected", "connected (of {clients})", ratio=False)],
             ["--clients", "5000", "--concurrency", "128"], ["--hold", "0.5"]),
    Scenario("will_punctuality", "will_punctuality", "will punctuality: 200 clients, keep-alive 1 s, go silent",
             will_delays(), ["--will-timeout", "8"]),
    Scenario("will_punctuality_1000", "will_punctuality",
             "will punctuality: 1,000 clients, keep-alive 1 s, go silent", will_delays(),
             ["--clients", "1000", "--will-timeout", "8"]),
    Scenario("delayed_will_1000", "delayed_will", "MQTT 5 delayed wills: 1,000 clients, will delay 2 s "
             "(quick: 1 s), session expiry 60 s, all dropped at once", will_delays("delay after drop + will delay"),
             ["--clients", "1000", "--concurrency", "128", "--will-timeout", "8"], ["--will-delay", "1"]),
    Scenario("wills_5000_qos1", "wills_drop_qos1", "5,000 QoS 1 wills at once to a QoS 1 observer "
             "(mosquitto: default limits)",
             [Metric("wills_received", "wills received (of {clients})", ratio=False),
              # no ratios: the brokers may have delivered different numbers of wills
              Metric("last_ms", "time from the drop to the last will, ms", 1, ratio=False),
              Metric("arrival_ms_p50", "will arrival p50 after the drop, ms", 1, ratio=False),
              Metric("arrival_ms_p99", "will arrival p99 after the drop, ms", 1, ratio=False),
              Metric("drop_s", "time to close the {clients} sockets (load generator), s", 3, ratio=False)],
             ["--clients", "5000", "--concurrency", "128", "--will-timeout", "10"], ["--will-timeout", "6"],
             mosquitto_conf=MOSQUITTO_CONF_DEFAULT_LIMITS),
    Scenario("will_under_load", "will_under_load", "will punctuality as above, while the QoS 0 fan-in runs",
             will_delays() + [Metric("background_rate", "fan-in delivered msg/s meanwhile")],
             ["--will-timeout", "8"]),
    Scenario("fanin_qos0_open", "fanin_qos0", "stress: QoS 0 fan-in, open loop (no end-to-end cap)",
             "delivered msg/s", ["--backlog", "0"]),
]}
DEFAULT_SCENARIOS = list(SCENARIOS)
# --quick is meant as a smoke test (CI): it leaves out the two stress scenarios, whose lastwill runs
# take 10-30 s more today (findings 1 and 2 in docs/benchmarks.md)
QUICK_SCENARIOS = [s for s in SCENARIOS if s not in ("will_under_load", "fanin_qos0_open")]


# ---------------------------------------------------------------------------------------------
# machine facts
# ---------------------------------------------------------------------------------------------

def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_facts() -> dict:
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        import uvloop
        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    try:
        import lastwill
        lw = lastwill.__version__
    except ImportError:
        lw = "?"
    mosq = sh(["mosquitto", "-h"]).splitlines()
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    import hashlib
    h = hashlib.sha256()
    src = LASTWILL_SRC or ROOT / "src"
    for f in sorted(src.rglob("*.py")):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
    dirty = bool(sh(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"]))
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uv,
        "mosquitto": mosq[0] if mosq else "not found",
        "lastwill": lw,
        "git_commit": (f"{LASTWILL_SRC} (--lastwill-src)" if LASTWILL_SRC else
                       commit + ("+dirty src/" if dirty else "")),
        "src_sha": h.hexdigest()[:12],  # what was measured, when src/ has uncommitted edits
    }


# ---------------------------------------------------------------------------------------------
# brokers
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mqtt_ping(port: int, timeout: float = 1.0) -> bool:
    """CONNECT, wait for a CONNACK with code 0, DISCONNECT. True if the broker answered."""
    connect = bytes([0x10, 18, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 6]) + b"bprobe"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(connect)
            got = b""
            while len(got) < 4:
                chunk = s.recv(16)
                if not chunk:
                    return False
                got += chunk
            s.sendall(b"\xe0\x00")
            return got[0] == 0x20 and got[3] == 0
    except OSError:
        return False


class BrokerProcess:
    def __init__(self, kind: str, workdir: Path, wrap: list[str] | None = None,
                 mosquitto_conf: str = MOSQUITTO_CONF):
        self.kind = kind
        self.port = free_port()
        # each instance gets its own working directory: lastwill keeps its data in ./lastwill-data,
        # and a broker must not recover the previous scenario's sessions and wills
        self.dir = workdir / f"{kind}-{self.port}"
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "broker.log"
        if kind == "mosquitto":
            conf = self.dir / "mosquitto.conf"
            if DEFAULTS:
                conf.write_text(MOSQUITTO_CONF_DEFAULTS.format(port=self.port, dir=self.dir))
                self.dir.chmod(0o777)  # mosquitto started as root runs as user mosquitto: its log and store
            else:
                conf.write_text(mosquitto_conf.format(port=self.port))
            cmd = ["mosquitto", "-c", str(conf)]
        else:
            cmd = [sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{self.port}"] + \
                ([] if DEFAULTS else ["--log-level", "warning"]) + LASTWILL_VARIANTS.get(kind, [])
        self.cmd = ["taskset", "-c", BROKER_CPU] + (wrap or []) + cmd
        self.log = open(self.log_path, "wb")
        env = None
        if kind == "lastwill-base":
            env = dict(os.environ, PYTHONPATH=str(BASE_SRC))
        elif kind != "mosquitto" and LASTWILL_SRC:
            env = dict(os.environ, PYTHONPATH=str(LASTWILL_SRC))
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
                                     start_new_session=True, env=env)
        self.peak_rss_kb = 0
        self.killed_for_rss = False
        deadline = time.monotonic() + 15
        while not mqtt_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start on port {self.port}: {self.log_text()[-500:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status_kb(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def stop(self) -> dict:
        hwm = self.status_kb("VmHWM")
        self.peak_rss_kb = max(self.peak_rss_kb, hwm)
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        data = self.dir / "lastwill-data"
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) if data.exists() else None
        shutil.rmtree(data, ignore_errors=True)
        return {"exit_code": self.proc.returncode, "stop_s": round(time.monotonic() - t0, 2),
                "data_dir_bytes": size}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class RssWatch(threading.Thread):
    """Samples the broker's RSS every 100 ms; kills it if it passes ``limit_kb`` (0 = never)."""

    def __init__(self, broker: BrokerProcess, limit_kb: int):
        super().__init__(daemon=True)
        self.broker, self.limit_kb = broker, limit_kb
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            rss = self.broker.status_kb("VmRSS")
            self.broker.peak_rss_kb = max(self.broker.peak_rss_kb, rss)
            if self.limit_kb and rss > self.limit_kb and self.broker.proc.poll() is None:
                self.broker.killed_for_rss = True
                self.broker.proc.kill()
                return


# ---------------------------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------------------------

def run_one(kind: str, sc: Scenario, args, workdir: Path) -> dict:
    load_before = loadavg()
    broker = BrokerProcess(kind, workdir, mosquitto_conf=sc.mosquitto_conf)
    watch = RssWatch(broker, args.rss_limit_mb * 1024)
    watch.start()
    cmd = ["taskset", "-c", LOADGEN_CPU, sys.executable, str(LOADGEN), sc.loadgen,
           "--port", str(broker.port), "--broker-pid", str(broker.pid),
           "--duration", str(args.duration), "--warmup", str(args.warmup)]
    cmd += ["--mqtt", str(args.mqtt)] + sc.extra + (sc.quick_extra if args.quick else [])
    t0 = time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warmup + args.duration + 90)
        lines = out.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"failed": f"no output; stderr: {out.stderr[-500:]}"}
        if out.stderr.strip():
            result["loadgen_stderr"] = out.stderr.strip()[-1000:]
    except subprocess.TimeoutExpired:
        result = {"failed": "load generator timed out"}
    except json.JSONDecodeError as e:
        result = {"failed": f"bad load generator output: {e}"}
    result["elapsed_s"] = round(time.monotonic() - t0, 2)
    watch.done.set()
    watch.join()
    alive = broker.proc.poll() is None
    stop = broker.stop()
    log = broker.log_text()
    bad = [line for line in log.splitlines()
           if any(w in line for w in ("ERROR", "Error", "Traceback", "WARNING", "Warning", "CRITICAL"))]
    result.update(
        broker=kind, scenario=sc.name, port=broker.port,
        broker_peak_rss_kb=broker.peak_rss_kb,
        broker_alive_at_end=alive, broker_killed_for_rss=broker.killed_for_rss,
        broker_stop=stop, broker_log_lines=len(log.splitlines()), broker_log_problems=bad[:20],
        load_before=load_before, load_after=loadavg(),
    )
    # delivered per second of broker CPU: the broker's capacity if it had the core to itself
    # (less sensitive than msg/s to other processes taking CPU 0 away from it)
    if result.get("rate") is not None and (result.get("broker_cpu_pct") or 0) >= 5:
        result["rate_per_cpu_s"] = result["rate"] / (result["broker_cpu_pct"] / 100)
    # CPU used by neither broker nor load generator over the window, in % of one core (of 200)
    if "cpu0_busy_pct" in result and result.get("broker_cpu_pct") is not None:
        used = result.get("cpu0_busy_pct", 0) + result.get("cpu1_busy_pct", 0)
        result["other_cpu_pct"] = round(max(0.0, used - result["broker_cpu_pct"] - result["loadgen_cpu_pct"]), 1)
    return result


def headline(r: dict) -> float | None:
    if "failed" in r:
        return None
    return r.get(SCENARIOS[r["scenario"]].metrics[0].key)


def fmt_num(v, digits=0) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def med(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(records: list[dict], scenarios: list[str], brokers=BROKERS) -> list[dict]:
    rows = []
    for name in scenarios:
        sc = SCENARIOS[name]
        per = {b: [r for r in records if r["scenario"] == name and r["broker"] == b] for b in brokers}

        def m(b: str, key: str, per=per):
            return med([r.get(key) for r in per[b] if "failed" not in r])

        common = {
            "rss_mib": {b: (round(m(b, "broker_peak_rss_kb") / 1024, 1) if m(b, "broker_peak_rss_kb") else None)
                        for b in brokers},
            "broker_cpu": {b: m(b, "broker_cpu_pct") for b in brokers},
            "loadgen_cpu": {b: m(b, "loadgen_cpu_pct") for b in brokers},
            "other_cpu": {b: m(b, "other_cpu_pct") for b in brokers},
            "failed": {b: sum(1 for r in per[b] if "failed" in r) for b in brokers},
            "runs": {b: len(per[b]) for b in brokers},
        }
        first = next((r for b in brokers for r in per[b] if "failed" not in r), {})
        for mt in sc.metrics:
            key = mt.key
            label = mt.label_for(first)
            vals = {b: m(b, key) for b in brokers}
            spread = {b: (min(xs), max(xs)) if len(xs := [r[key] for r in per[b] if r.get(key) is not None]) > 1
                      else None for b in brokers}
            ratios = {}
            for b in brokers[1:]:
                ok = mt.ratio and vals[brokers[0]] and vals[b] is not None
                ratios[b] = vals[b] / vals[brokers[0]] if ok else None
            rows.append({"scenario": name, "title": sc.title, "metric": label, "key": key,
                         "digits": mt.digits, "headline": mt is sc.metrics[0] or key == "background_rate",
                         "values": vals, "spread": spread, "ratios": ratios, **common})
    return rows


def cell(row: dict, broker: str, digits: int) -> str:
    """The median, and for the headline metrics the range over runs: '228,462 (227,792–238,263)'."""
    text = fmt_num(row["values"][broker], digits)
    sp = (row.get("spread") or {}).get(broker)
    if sp and row.get("headline", row["key"] in ("rate", "delay_ms_p50", "background_rate")):
        text += f" ({fmt_num(sp[0], digits)}–{fmt_num(sp[1], digits)})"
    return text


SHORT = {"mosquitto": "m", "lastwill": "l", "lastwill-memory": "lm", "lastwill-fsync-always": "la",
         "lastwill-fsync-off": "lo"}


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}" if x >= 0.01 else f"{x:.4f}"


def table(rows: list[dict], brokers=BROKERS) -> str:
    base = brokers[0]
    short = " / ".join(SHORT.get(b, b) for b in brokers)
    head = ("| scenario | metric | " + " | ".join(brokers) + " | "
            + " | ".join(f"{b} / {base}" for b in brokers[1:])
            + f" | peak RSS MiB ({short}) | broker CPU % ({short}) | loadgen CPU % ({short}) "
              f"| other CPU % ({short}) |")
    ncols = 2 + len(brokers) + len(brokers) - 1 + 4
    lines = [head, "|" + "---|" * ncols]
    last = None
    for r in rows:
        first = r["scenario"] != last
        last = r["scenario"]
        digits = r.get("digits", 2 if r["key"] == "connect_all_s" else 1 if r["key"].startswith("delay") else 0)
        ratios = r.get("ratios") or {brokers[1]: r.get("ratio")}

        def group(d, nd=0):
            return " / ".join(fmt_num(d.get(b), nd) for b in brokers)
        fail = ""
        if any(r["failed"].values()):
            fail = " (failed runs: " + ", ".join(f"{b} {n}" for b, n in r["failed"].items() if n) + ")"
        lines.append(
            f"| {r['scenario'] if first else ''} | {r['metric']}{fail} | "
            + " | ".join(cell(r, b, digits) for b in brokers) + " | "
            + " | ".join(fmt_ratio(ratios.get(b)) for b in brokers[1:]) + " "
            + (f"| {group(r['rss_mib'], 1)} | {group(r['broker_cpu'])} | {group(r['loadgen_cpu'])} "
               f"| {group(r['other_cpu'])} |" if first else "| | | | |"))
    return "\n".join(lines)


def env_block(meta: dict) -> str:
    m = meta["machine"]
    return "\n".join([
        f"- date: {m['date_utc']} (run took {meta['elapsed_s']:.0f} s; {meta['runs']} run(s) per cell, "
        f"median shown; window {meta['duration']} s after {meta['warmup']} s warm-up)",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}",
        f"- software: Python {m['python']}, uvloop {m['uvloop']}, {m['mosquitto']}, "
        f"lastwill {m['lastwill']} at {m['git_commit']}"
        + (f" (src/ fingerprint {m['src_sha']})" if m.get("src_sha") else ""),
        "- brokers: " + "; ".join(
            f"{b}: " + (("mosquitto -c (MOSQUITTO_CONF_DEFAULTS in benchmarks/run.py: Debian's settings, "
                         "persistence on, log to a file, connection messages on)" if meta.get("defaults") else
                         "mosquitto -c (generated config: MOSQUITTO_CONF in benchmarks/run.py; for wills_5000_qos1 "
                         "MOSQUITTO_CONF_DEFAULT_LIMITS, i.e. mosquitto's default queue and in-flight limits)")
                        if b == "mosquitto" else
                        "python -m lastwill serve "
                        + ("(log level info, the default) " if meta.get("defaults") else "--log-level warning ")
                        + " ".join(LASTWILL_VARIANTS.get(b, []))
                        + ("(defaults: durable, SQLite WAL in its working directory, fsync batch)"
                           if not LASTWILL_VARIANTS.get(b) else ""))
            for b in meta.get("brokers", BROKERS)),
        f"- protocol: MQTT {'3.1.1' if meta.get('mqtt', 4) == 4 else '5.0'} for every client\n"
        f"- pinning: broker on CPU {BROKER_CPU} (`taskset -c {BROKER_CPU}`), load generator on CPU {LOADGEN_CPU}",
        f"- load average (1/5/15 min) before: {meta['load_before']}, after: {meta['load_after']}; "
        f"'other CPU %' is the CPU used on the two cores by neither broker nor load generator "
        f"during the window (other engineers' test runs), in % of one core",
    ])


def write_doc(text_table: str, env: str) -> None:
    start, end = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
    body = f"{start}\n{env}\n\n{text_table}\n{end}"
    doc = DOC.read_text() if DOC.exists() else ""
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + body + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n## Results\n\n" + body + "\n"
    DOC.write_text(doc)


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------

def profile(args) -> int:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / f"profile-{args.profile_scenario}-{stamp}.txt"
    workdir = Path(tempfile.mkdtemp(prefix="lastwill-bench-"))
    sc = SCENARIOS[args.profile_scenario]
    broker = BrokerProcess(args.profile_broker, workdir)
    dur = max(args.duration, 5)
    lg = subprocess.Popen(["taskset", "-c", LOADGEN_CPU, sys.executable, str(LOADGEN), sc.loadgen,
                           "--port", str(broker.port), "--broker-pid", str(broker.pid),
                           "--duration", str(dur + 1), "--warmup", "1"] + sc.extra,
                          stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    spy = subprocess.run(["taskset", "-c", LOADGEN_CPU, pyspy, "record", "--pid", str(broker.pid),
                          "--duration", str(int(dur)), "--rate", str(args.profile_rate),
                          "--function", "--format", "raw", "--output", str(raw)]
                         + (["--native"] if args.profile_native else ["--nonblocking"]), capture_output=True, text=True)
    lg_out = lg.communicate(timeout=60)[0]
    broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    if spy.returncode != 0 or not raw.exists():
        print("py-spy failed:", spy.stderr[-1000:], file=sys.stderr)
        return 1
    self_t: dict[str, int] = {}
    total_t: dict[str, int] = {}
    n = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        n += c
        frames = stack.split(";")
        leaf = frames[-1]
        self_t[leaf] = self_t.get(leaf, 0) + c
        for f in set(frames):
            total_t[f] = total_t.get(f, 0) + c

    def short(frame: str) -> str:
        return frame.replace(str(ROOT) + "/", "").replace(sys.prefix + "/lib/python3.11/", "")

    print(f"py-spy: {n} samples of {args.profile_broker} during {sc.name} ({dur} s at {args.profile_rate} Hz); raw stacks: {raw}")
    print(f"load generator: {lg_out.strip()[:300]}")
    print("\ntop 10 by own (self) samples:")
    for f, c in sorted(self_t.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {100 * c / n:5.1f}%  {short(f)}")
    print("\ntop 15 by inclusive samples:")
    for f, c in sorted(total_t.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * c / n:5.1f}%  {short(f)}")
    return 0


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 s windows, 1 run: a smoke test (< 60 s)")
    p.add_argument("--scenarios", help=f"comma-separated, from: {', '.join(SCENARIOS)} "
                   f"(default: all; with --quick all but will_under_load and fanin_qos0_open)")
    p.add_argument("--duration", type=float, help="measuring window per scenario, s (default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="traffic before the window, s (default 1; quick 0.5)")
    p.add_argument("--runs", type=int, default=1, help="runs per cell; the table shows the median")
    p.add_argument("--brokers", default=",".join(BROKERS),
                   help="comma-separated, the first is the base of the ratios: mosquitto, "
                        + ", ".join(LASTWILL_VARIANTS) + f" (default {','.join(BROKERS)})")
    p.add_argument("--lastwill-src", metavar="DIR",
                   help="run lastwill from this src/ directory (PYTHONPATH), e.g. an exported commit: "
                        "git archive COMMIT src | tar -x -C /tmp/x; --lastwill-src /tmp/x/src")
    p.add_argument("--mqtt", type=int, choices=(4, 5), default=4,
                   help="protocol level the load generator speaks: 4 = MQTT 3.1.1 (default), 5 = MQTT 5.0")
    p.add_argument("--out", help="JSON file (default benchmarks/results/bench-<UTC time>.json)")
    p.add_argument("--write-doc", action="store_true", help="rewrite the results block of docs/benchmarks.md")
    p.add_argument("--from-json", metavar="FILE", help="only print (and with --write-doc, write) the table "
                   "of an earlier run's JSON")
    p.add_argument("--rss-limit-mb", type=int, default=2048, help="kill a broker above this RSS (0 = never)")
    p.add_argument("--base-src", metavar="DIR", help="add broker 'lastwill-base': lastwill from this src/ "
                   "directory (e.g. git worktree of the commit before a change), for before/after in one run")
    p.add_argument("--defaults", action="store_true", help="both brokers as installed, logging on (lastwill's "
                   "default log level; mosquitto with Debian's settings), instead of both quieted")
    p.add_argument("--profile", action="store_true", help="profile lastwill with py-spy instead")
    p.add_argument("--profile-scenario", default="fanin_qos0", choices=list(SCENARIOS))
    p.add_argument("--profile-broker", default="lastwill", choices=list(LASTWILL_VARIANTS))
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--profile-native", action="store_true",
                   help="py-spy --native: C frames too (uvloop, sqlite3), to see where the C share goes; "
                   "py-spy then stops the broker at each sample (no --nonblocking)")
    args = p.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    args.warmup = args.warmup or (0.5 if args.quick else 1.0)
    global LASTWILL_SRC, BASE_SRC, DEFAULTS
    DEFAULTS = args.defaults
    if args.base_src:
        BASE_SRC = Path(args.base_src).resolve()
        if not (BASE_SRC / "lastwill" / "__main__.py").exists():
            p.error(f"--base-src {args.base_src}: no lastwill/__main__.py there")
    if args.lastwill_src:
        LASTWILL_SRC = Path(args.lastwill_src).resolve()
        if not (LASTWILL_SRC / "lastwill" / "__main__.py").exists():
            p.error(f"--lastwill-src {args.lastwill_src}: no lastwill/__main__.py there")
    brokers = tuple(b.strip() for b in args.brokers.split(",") if b.strip())
    bad = [b for b in brokers if b != "mosquitto" and b not in LASTWILL_VARIANTS
           and not (b == "lastwill-base" and BASE_SRC)]
    if bad or len(brokers) < 2:
        p.error(f"--brokers: need 2+ of mosquitto, {', '.join(LASTWILL_VARIANTS)}; got {args.brokers!r}")
    if args.scenarios is None:
        args.scenarios = ",".join(QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    for tool in ("taskset", "mosquitto"):
        if not shutil.which(tool):
            p.error(f"{tool} not found (apt-get install util-linux mosquitto)")
    if (os.cpu_count() or 1) < 2:
        p.error("needs 2 CPUs (broker on CPU 0, load generator on CPU 1)")
    try:  # thousands of connections (connect_hold_5000, wills_5000_qos1): brokers inherit the limit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    try:  # keep this process off the broker's core
        os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    except OSError:
        pass
    if args.profile:
        return profile(args)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        meta = saved["meta"]
        kinds = tuple(meta.get("brokers", BROKERS))
        text = table(summarize(saved["records"], meta["scenarios"], kinds), kinds)
        env = env_block(meta)
        print(env + "\n\n" + text)
        if args.write_doc:
            write_doc(text, env)
            print(f"updated {DOC}")
        return 0

    meta = {"machine": machine_facts(), "load_before": loadavg(), "runs": args.runs, "quick": args.quick,
            "duration": args.duration, "warmup": args.warmup, "scenarios": scenarios, "mqtt": args.mqtt,
            "brokers": list(brokers), "defaults": DEFAULTS, "base_src": str(BASE_SRC) if BASE_SRC else None,
            "mosquitto_conf": MOSQUITTO_CONF.format(port="PORT"),
            "mosquitto_conf_default_limits": MOSQUITTO_CONF_DEFAULT_LIMITS.format(port="PORT")}
    print(f"{meta['machine']['date_utc']}  load {meta['load_before']}  "
          f"{len(scenarios)} scenario(s) x {len(brokers)} brokers x {args.runs} run(s)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="lastwill-bench-"))
    workdir.chmod(0o755)  # (--defaults: mosquitto, started as root, runs as user mosquitto)
    records = []
    t0 = time.monotonic()
    for run in range(args.runs):
        for name in scenarios:
            for kind in brokers:
                r = run_one(kind, SCENARIOS[name], args, workdir)
                r["run"] = run + 1
                records.append(r)
                val = headline(r)
                print(f"  run {run + 1} {name:17s} {kind:15s} "
                      + (f"FAILED: {r['failed']}" if "failed" in r else
                         f"{fmt_num(val, SCENARIOS[name].metrics[0].digits):>10s} "
                         f"{SCENARIOS[name].metrics[0].label_for(r)}"
                         f"  rss {r['broker_peak_rss_kb'] / 1024:.0f} MiB"
                         f"  cpu broker {r.get('broker_cpu_pct')}% loadgen {r.get('loadgen_cpu_pct')}%"
                         f" other {r.get('other_cpu_pct')}%")
                      + (f"  [{len(r['broker_log_problems'])} broker log problem line(s)]"
                         if r["broker_log_problems"] else ""), flush=True)
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    meta["load_after"] = loadavg()
    rows = summarize(records, scenarios, brokers)
    text = table(rows, brokers)
    env = env_block(meta)
    print()
    print(env)
    print()
    print(text)
    problems = [(r["broker"], r["scenario"], line) for r in records for line in r["broker_log_problems"]]
    if problems:
        print("\nbroker log lines with errors/warnings (first 10):")
        for b, s, line in problems[:10]:
            print(f"  {b} {s}: {line}")
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (
        "bench-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "records": records}, indent=1))
    print(f"\nJSON: {out}")
    if args.write_doc:
        write_doc(text, env)
        print(f"updated {DOC}")
    shutil.rmtree(workdir, ignore_errors=True)
    failed = sum(1 for r in records if "failed" in r)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
