"""Real cluster nodes for the tests: ``lastwill serve --cluster`` processes on free ports, sharing the
test's redis-server; short leases (1.5 s lease, 0.3 s beat, 0.5 s grace, recovery grace 0)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import redis

from tests.integration.serve import ServeProcess

LEASE = 1.5
BEAT = 0.3
GRACE = 0.5


class Node(ServeProcess):
    def __init__(self, directory: Path, node_id: str, redis_url: str, *args: str, admin: bool = False):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / f"{node_id}.log", "--cluster", redis_url, "--node-id", node_id,
                         "--cluster-lease", str(LEASE), "--cluster-heartbeat", str(BEAT), "--cluster-grace", str(GRACE),
                         "--recovery-grace", "0", "--sys-interval", "0", "--log-level", "debug", *args, admin=admin)
        self.node_id = node_id

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop_quietly(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wait_for_log(self, text: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < count:
            assert time.monotonic() < deadline, f"{self.node_id}: no {text!r} in the log:\n" + self.log_text()[-3000:]
            time.sleep(0.05)


class Cluster:
    def __init__(self, directory: Path, redis_server):
        self.dir = directory
        self.redis_server = redis_server
        self.nodes: dict[str, Node] = {}

    @property
    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_server.port)

    def start(self, *node_ids: str, args: tuple[str, ...] = (), admin: bool = False,
              url: str | None = None) -> list[Node]:
        started = []
        for nid in node_ids:
            node = Node(self.dir, nid, url or self.redis_server.url, *args, admin=admin)
            node.start(timeout=60)
            self.nodes[nid] = node
            started.append(node)
        return started

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def audit(self) -> list[dict]:
        out = []
        for _, fields in self.client.xrange("lw:fired", "-", "+"):
            out.append({k.decode(): v.decode() for k, v in fields.items()})
        return out

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop_quietly()

    def tracebacks(self) -> list[str]:
        return [f"{n.node_id}:\n{n.log_text()[-4000:]}" for n in self.nodes.values() if "Traceback" in n.log_text()]


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def port_closed_by_peer(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Read until the server closes the connection; what it sent meanwhile."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, OSError):
            return data
        if not chunk:
            return data
        data += chunk


class BlackholeProxy:
    """A TCP proxy between a node and Redis that the test can cut: while ``cut``, nothing passes either
    way and the connections stay open (a partition, not a refusal)."""

    def __init__(self, upstream_port: int):
        import threading

        self.upstream = upstream_port
        self.cut = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        held = b""
        try:
            src.settimeout(0.05)
        except OSError:  # the other direction's pump closed both sockets already
            return
        while not self.closed:
            try:
                data = src.recv(65536)
                if not data:
                    break
                held += data
            except TimeoutError:
                pass
            except OSError:
                break
            if held and not self.cut:
                try:
                    dst.sendall(held)
                except OSError:
                    break
                held = b""
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
