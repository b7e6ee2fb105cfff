"""A real ``lastwill serve`` process for the limit, fuzz and load tests, and a raw-socket MQTT client.

``ServeProcess`` runs ``python -m lastwill serve`` (``--memory`` by default) on a free port, with its
log in a file; it reads the broker's RSS from /proc, its /metrics from the admin API, and finds
tracebacks in its log. ``RawClient`` speaks MQTT over a plain blocking socket with lastwill's own
codec, so that a test controls every byte (and can stop reading).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Disconnect, Puback, Publish, Subscribe, Subscription, Will


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


class RawClient:
    """A blocking-socket MQTT client on lastwill's codec: every byte under the test's control."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect(), so that the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.level = 4
        self.decoder: Decoder | None = None
        self.pending: list = []
        self.pid = 0

    def send(self, packet) -> None:
        self.sock.sendall(encode(packet, self.level))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, client_id: str, level: int = 5, *, will: Will | None = None, keep_alive: int = 60,
                clean_start: bool = True, **props):
        self.level = level
        self.decoder = Decoder(server_side=False, protocol_level=level)
        self.send(Connect(client_id=client_id, clean_start=clean_start, keep_alive=keep_alive,
                          protocol_level=level, protocol_name="MQIsdp" if level == 3 else "MQTT",
                          will=will, properties=props))
        return self.expect("Connack")

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        self.pid += 1
        self.send(Subscribe(self.pid, [Subscription(topic_filter, qos)]))
        return self.expect("Suback").reason_codes

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> int | None:
        pid = None
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
        self.send(Publish(topic, payload, qos, False, False, pid))
        return pid

    def disconnect(self) -> None:
        self.send(Disconnect())
        self.sock.close()

    def read(self, timeout: float | None = None) -> list:
        """Packets received within ``timeout`` (at least one read); [] if the broker closed."""
        if self.pending:
            out, self.pending = self.pending, []
            return out
        if timeout is not None:
            self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the broker")
        return self.decoder.feed(data)

    def expect(self, kind: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.pending):
                if type(p).__name__ == kind:
                    del self.pending[i]
                    return p
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed by the broker while waiting for {kind}")
            self.pending += self.decoder.feed(data)
        raise TimeoutError(f"no {kind} within {timeout}s (got {[type(p).__name__ for p in self.pending]})")

    def closed_within(self, timeout: float) -> tuple[bool, bytes]:
        """Read until EOF or ``timeout``: (closed, the bytes received meanwhile)."""
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return True, got
            if not data:
                return True, got
            got += data
        return False, got

    def ack(self, packets: list) -> None:
        for p in packets:
            if isinstance(p, Publish) and p.qos == 1:
                self.send(Puback(p.packet_id))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def set_nofile(n: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``n`` (at most the hard limit); returns the new one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
