"""A real ``lastwill serve`` process for the limit, fuzz and load tests.

``ServeProcess`` runs ``python -m lastwill serve`` (``--memory`` by default) on a free port, with its
log in a file; it reads the broker's RSS from /proc, its /metrics from the admin API, and finds
tracebacks in its log. The raw-socket MQTT client these tests drive it with is tests/rawclient.py's
``RawClient``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, log_path: Path, *args: str, memory: bool = True, admin: bool = False,
                 nofile_soft: int | None = None):
        """``nofile_soft``: start the broker with this soft RLIMIT_NOFILE (it raises its own)."""
        self.nofile_soft = nofile_soft
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.log_path = Path(log_path)
        self.args = [sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{self.port}",
                     *(["--memory"] if memory else []),
                     *(["--admin-listen", f"127.0.0.1:{self.admin_port}"] if admin else []), *args]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> ServeProcess:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, cwd=self.log_path.parent,
                                     preexec_fn=self._limit if self.nofile_soft else None)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                assert self.proc.poll() is None, "broker exited:\n" + self.log_text()[-3000:]
                assert time.monotonic() < deadline, "broker did not start:\n" + self.log_text()[-3000:]
                time.sleep(0.05)
        return self

    def _limit(self) -> None:  # in the child, before exec
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile_soft, hard))

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"broker did not stop within {timeout}s of SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) of the broker process, in KiB."""
        return proc_status(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        """Peak resident set size (VmHWM), in KiB."""
        return proc_status(self.pid, "VmHWM")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def problems(self) -> list[str]:
        """Log lines that must never appear: tracebacks, internal errors, callback exceptions."""
        return [line for line in self.log_text().splitlines()
                if "Traceback" in line or "internal error" in line or "Exception in callback" in line
                or " CRITICAL " in line or " ERROR " in line]

    def metrics(self) -> dict[str, float]:
        """The admin API's /metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def set_nofile(n: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``n`` (at most the hard limit); returns the new one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
