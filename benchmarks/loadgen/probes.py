"""What the load generator reads about itself and the broker over a measuring window: CPU time
(getrusage, /proc/PID/stat), core busy time (/proc/stat), RSS (/proc/PID/status) and run-queue
wait (/proc/PID/task/*/schedstat)."""

from __future__ import annotations

import os
import resource
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def cores_busy() -> dict[str, tuple[int, int]]:
    """{"cpu0": (busy jiffies, all jiffies), ...} from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals[:8]]
                    idle = v[3] + v[4]  # idle + iowait
                    out[name] = (sum(v) - idle, sum(v))
    except OSError:
        pass
    return out


def rss_kb(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_delay_ns(pid: int | str | None) -> int | None:
    """Time the process's threads spent runnable but waiting for a CPU (the run queue), in ns:
    the second field of /proc/PID/task/*/schedstat. None where schedstats are not available."""
    if not pid:
        return None
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        return None
    return total


class Window:
    """Snapshots at the start and the end of the measuring window."""

    def __init__(self, broker_pid: int | None):
        self.broker_pid = broker_pid

    def snap(self, count: int, sent: int = 0) -> dict:
        return {"t": time.monotonic(), "count": count, "sent": sent, "cpu": cpu_self(),
                "broker_cpu": cpu_of(self.broker_pid), "cores": cores_busy(),
                "runq": run_delay_ns("self"), "broker_runq": run_delay_ns(self.broker_pid)}

    @staticmethod
    def summary(a: dict, b: dict) -> dict:
        dt = b["t"] - a["t"]
        out = {
            "window_s": round(dt, 3),
            "count": b["count"] - a["count"],
            "rate": (b["count"] - a["count"]) / dt,
            "sent_rate": (b["sent"] - a["sent"]) / dt,
            "loadgen_cpu_pct": round(100 * (b["cpu"] - a["cpu"]) / dt, 1),
            "broker_cpu_pct": None,
        }
        if a["broker_cpu"] is not None and b["broker_cpu"] is not None:
            out["broker_cpu_pct"] = round(100 * (b["broker_cpu"] - a["broker_cpu"]) / dt, 1)
        # how long each process waited for a CPU over the window (others' processes on its core)
        for name, key in (("loadgen", "runq"), ("broker", "broker_runq")):
            if a.get(key) is not None and b.get(key) is not None:
                out[f"{name}_runq_wait_pct"] = round(100 * (b[key] - a[key]) / 1e9 / dt, 2)
        # how busy each core was over the window, whoever used it (other engineers' tests too)
        for cpu, (busy0, total0) in a["cores"].items():
            if cpu in b["cores"]:
                busy1, total1 = b["cores"][cpu]
                out[f"{cpu}_busy_pct"] = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
        return out
