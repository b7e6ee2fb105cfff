"""What a Redis failover with asynchronous replication does to wills: a measurement, not a guarantee.

A primary and a replica (both AOF, appendfsync always; the replica follows with ``replicaof``), one
``lastwill serve --cluster`` node reaching Redis through a TCP proxy this script controls. Clients with
wills connect as fast as they can; after ``--kill-after`` CONNACKs the primary is killed (kill -9), the
replica promoted (``REPLICAOF NO ONE``) and the proxy switched to it. Counted: the wills whose CONNECT was
acknowledged (CONNACK 0) before the kill, and how many of them the promoted replica does not have (lost
will registrations: the window of asynchronous replication).

    .venv/bin/python benchmarks/cluster_failover.py --clients 3000 --kill-after 1500 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class SwitchProxy:
    """127.0.0.1 TCP proxy to ``upstream``; ``switch(port)`` drops every connection and sends new ones
    to the new port (what a failover behind a virtual address looks like to a client)."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                a.close()
                continue
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def switch(self, port: int) -> None:
        self.upstream = port
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns = []


def redis(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen, int]:
    port = run.free_port()
    d = tmp / name
    d.mkdir()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--appendonly", "yes",
                             "--appendfsync", "always", "--save", "", "--logfile", str(d / "redis.log"), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if cli(port, "PING") == "PONG":
            break
        time.sleep(0.05)
    return proc, port


def cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def connect_packet(cid: str) -> bytes:
    sys.path.insert(0, str(HERE.parent / "src"))
    from lastwill.codec.encoder import encode
    from lastwill.codec.packets import Connect, Will

    return encode(Connect(client_id=cid, protocol_level=4, keep_alive=600,
                          will=Will(f"w/{cid}", b"gone", 1, False)), 4)


async def clients(port: int, n: int, kill_after: int, on_kill, check, concurrency: int = 32) -> tuple[list, int, list]:
    acked: list[str] = []
    refused = 0
    killed = False
    writers = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal refused, killed
        async with sem:
            cid = f"dev{i}"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(connect_packet(cid))
                data = await asyncio.wait_for(reader.readexactly(4), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                refused += 1
                return
            writers.append(writer)
            if data == b"\x20\x02\x00\x00":
                if not killed:
                    acked.append(cid)
                    if len(acked) >= kill_after:
                        killed = True
                        on_kill()
            else:
                refused += 1
    await asyncio.gather(*(one(i) for i in range(n)))
    missing = check(acked)  # while every connection is still open (their ends would make the wills due)
    for w in writers:
        w.close()
    return acked, refused, missing


def one_run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lw-failover-"))
    primary, pport = redis(tmp, "primary")
    replica, rport = redis(tmp, "replica", "--replicaof", "127.0.0.1", "0")
    cli(rport, "REPLICAOF", "127.0.0.1", str(pport))
    for _ in range(200):
        if "master_link_status:up" in cli(rport, "INFO", "replication"):
            break
        time.sleep(0.05)
    proxy = SwitchProxy(pport)
    port = run.free_port()
    log = open(tmp / "node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "lastwill", "serve", "--listen", f"127.0.0.1:{port}",
                             "--log-level", "warning", "--cluster", f"redis://127.0.0.1:{proxy.port}/0",
                             "--node-id", "n1", "--sys-interval", "0"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        while not run.mqtt_ping(port):
            assert node.poll() is None, (tmp / "node.log").read_text()[-500:]
            time.sleep(0.05)
        kill_time: list[float] = []

        def failover() -> None:
            kill_time.append(time.monotonic())
            primary.send_signal(signal.SIGKILL)
            cli(rport, "REPLICAOF", "NO", "ONE")
            proxy.switch(rport)

        def check(acked: list[str]) -> list[str]:
            return [cid for cid in acked if cli(rport, "HGET", f"lw:sess:{cid}", "will") in ("", None)]

        acked, refused, missing = asyncio.run(clients(port, args.clients, args.kill_after, failover, check))
        return {"clients": args.clients, "acked_before_kill": len(acked), "refused_or_failed": refused,
                "will_registrations_lost": len(missing), "lost_ids_sample": missing[:5]}
    finally:
        node.terminate()
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
        for p in (primary, replica):
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=3000)
    p.add_argument("--kill-after", type=int, default=1500)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    for _ in range(args.runs):
        print(json.dumps(one_run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
