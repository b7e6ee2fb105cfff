"""Issue 11: a message for many offline persistent sessions, durable store vs ``--memory``, same run.

    .venv/bin/python benchmarks/store_once.py                      # the flood: 200 sessions, durable and memory
    .venv/bin/python benchmarks/store_once.py --sessions 1 --messages 100000 --reconnect \\
        --broker-arg=--max-queued-bytes=200000000                  # one session's big queue: reconnect and drain
    .venv/bin/python benchmarks/store_once.py --variants durable --messages 50000 --restart \\
        --broker-arg=--max-queued-bytes=200000000                  # restart with 200 x 50,000 queued

The flood: ``--sessions`` (200) MQTT 5 sessions connect with Session Expiry 3600, subscribe at QoS 1
to one topic and disconnect; then one publisher sends ``--payload`` (1 KiB) QoS 1 messages to it as
fast as PUBACKs come, with as many in flight as the broker's Receive Maximum allows, until
``--messages`` are acknowledged or ``--duration`` s pass. Reported per variant: accepted msg/s
(PUBACKs / time from first PUBLISH to last PUBACK), the durable store's size per queued delivery
beyond one copy of each payload (after a clean stop, when the WAL is folded in) and the broker's RSS
growth per queued delivery. ``--reconnect``: then the first session comes back (Clean Start 0):
time to its first PUBLISH and the rate its queue drains at (it acknowledges each). ``--restart``
(durable): the broker is stopped and started again on its store: time until it answers a CONNECT,
its RSS then (with ``--reconnect`` and more than one session: then the second session takes its
queue, read from the store as it drains).

The broker runs pinned to CPU 0 (``taskset``), this script on CPU 1, as benchmarks/run.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen.wire import SESSION_EXPIRY_INTERVAL, connect_packet, packet, prop_u32, subscribe_packet, utf8  # noqa: E402
from run import BROKER_CPU, LOADGEN_CPU, free_port, mqtt_ping  # noqa: E402

TOPIC = "bench/store-once"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Broker:
    def __init__(self, workdir: Path, memory: bool, extra: list[str], src: Path | None = None):
        self.workdir = workdir
        self.data = workdir / "lastwill-data"
        self.memory = memory
        self.extra = extra
        self.src = src  # run lastwill from this src/ directory (PYTHONPATH): the "base" variant
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.port = free_port()
        cmd = ["taskset", "-c", BROKER_CPU, sys.executable, "-m", "lastwill", "serve", "--listen",
               f"127.0.0.1:{self.port}", "--log-level", "warning", "--data-dir", str(self.data)]
        cmd += (["--memory"] if self.memory else []) + self.extra
        self.log = open(self.workdir / "broker.log", "ab")
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(self.src)) if self.src else None
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True, env=env)
        while not mqtt_ping(self.port, timeout=5.0):
            if self.proc.poll() is not None or time.monotonic() - t0 > 600:
                raise RuntimeError(f"broker did not start: {(self.workdir / 'broker.log').read_text()[-800:]}")
            time.sleep(0.02)
        return time.monotonic() - t0

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# ---- a minimal MQTT 5 client ------------------------------------------------------------------------

class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.packets: asyncio.Queue = asyncio.Queue()
        self.on_packet = None  # (type, body) -> None, instead of the queue
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        i = 0
        n = len(buf)
        while n - i >= 2:
            mult, length, j = 1, 0, i + 1
            while True:
                if j >= n:
                    break
                b = buf[j]
                length += (b & 0x7F) * mult
                mult *= 128
                j += 1
                if not b & 0x80:
                    break
            else:
                break
            if b & 0x80 or j + length > n:
                break
            first = buf[i]
            body = bytes(buf[j:j + length])
            i = j + length
            if self.on_packet is not None:
                self.on_packet(first, body)
            else:
                self.packets.put_nowait((first, body))
        del buf[:i]

    def send(self, data: bytes) -> None:
        self.transport.write(data)


async def open_conn(port: int, connect: bytes) -> tuple[Conn, bytes]:
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(Conn, "127.0.0.1", port)
    c.send(connect)
    first, body = await asyncio.wait_for(c.packets.get(), 60)
    assert first >> 4 == 2 and body[1] == 0, f"CONNACK {body!r}"
    return c, body


def receive_maximum(connack: bytes) -> int:
    """The Receive Maximum property (0x21) of an MQTT 5 CONNACK body, 65535 when absent."""
    i = 2
    mult, length = 1, 0
    while True:
        b = connack[i]
        i += 1
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    end = i + length
    while i < end:
        pid = connack[i]
        if pid == 0x21:
            return int.from_bytes(connack[i + 1:i + 3], "big")
        i += 1
        if pid in (0x24, 0x25, 0x28, 0x29, 0x2A, 0x17, 0x19):  # one byte
            i += 1
        elif pid in (0x13, 0x22):  # two bytes
            i += 2
        elif pid in (0x11, 0x27):  # four bytes
            i += 4
        elif pid in (0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x26):  # strings / binary (user property: two)
            n = int.from_bytes(connack[i:i + 2], "big")
            i += 2 + n
            if pid == 0x26:
                n = int.from_bytes(connack[i:i + 2], "big")
                i += 2 + n
        else:
            break
    return 65535


def session_id(i: int) -> str:
    return f"so-{i:05d}"


async def make_sessions(port: int, n: int) -> None:
    props = prop_u32(SESSION_EXPIRY_INTERVAL, 3600)

    async def one(i: int) -> None:
        c, _ = await open_conn(port, connect_packet(session_id(i), 5, clean=True, props=props))
        c.send(subscribe_packet(1, TOPIC, 1, 5))
        first, _ = await asyncio.wait_for(c.packets.get(), 60)
        assert first >> 4 == 9
        c.send(b"\xe0\x00")  # DISCONNECT: the session stays (Session Expiry 3600)
        c.transport.close()

    for start in range(0, n, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))


def publish_qos1(pid: int, payload: bytes) -> bytes:
    return packet(0x32, utf8(TOPIC) + pid.to_bytes(2, "big") + b"\x00" + payload)


async def flood(port: int, messages: int, duration: float, payload_len: int) -> dict:
    c, connack = await open_conn(port, connect_packet("so-publisher", 5, clean=True))
    window = receive_maximum(connack)
    payload = b"p" * payload_len
    state = {"sent": 0, "acked": 0, "last_ack": 0.0}
    done = asyncio.get_running_loop().create_future()
    t0 = time.monotonic()
    deadline = t0 + duration

    def send_more() -> None:
        out = []
        while state["sent"] < messages and state["sent"] - state["acked"] < window:
            state["sent"] += 1
            out.append(publish_qos1((state["sent"] - 1) % 65535 + 1, payload))
        if out:
            c.send(b"".join(out))

    def on_packet(first: int, body: bytes) -> None:
        if first >> 4 == 4:  # PUBACK
            state["acked"] += 1
            state["last_ack"] = time.monotonic()
            if state["acked"] >= messages or state["last_ack"] >= deadline:
                if not done.done():
                    done.set_result(None)
                return
            if state["sent"] - state["acked"] <= window // 2 or state["sent"] - state["acked"] < 8:
                send_more()

    c.on_packet = on_packet
    send_more()
    await asyncio.wait_for(done, duration + 120)
    elapsed = state["last_ack"] - t0
    c.send(b"\xe0\x00")
    c.transport.close()
    return {"accepted": state["acked"], "seconds": round(elapsed, 3), "window": window,
            "msg_per_s": round(state["acked"] / elapsed, 1)}


async def reconnect_and_drain(port: int, expected: int, session: int = 0) -> dict:
    """A session (the first) comes back and takes its queue, acknowledging each message."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    _, c = await loop.create_connection(Conn, "127.0.0.1", port)
    state = {"got": 0, "first": None, "last": None}
    done = loop.create_future()

    def on_packet(first: int, body: bytes) -> None:
        if first >> 4 == 3:
            now = time.monotonic()
            if state["first"] is None:
                state["first"] = now
            state["got"] += 1
            state["last"] = now
            tl = int.from_bytes(body[:2], "big")
            pid = body[2 + tl:4 + tl]
            c.send(b"\x40\x02" + pid)  # PUBACK
            if state["got"] >= expected and not done.done():
                done.set_result(None)

    c.on_packet = on_packet
    c.send(connect_packet(session_id(session), 5, clean=False, props=prop_u32(SESSION_EXPIRY_INTERVAL, 3600)))
    try:
        await asyncio.wait_for(done, 600)
    except asyncio.TimeoutError:
        pass
    c.transport.close()
    first_ms = (state["first"] - t0) * 1000 if state["first"] else None
    drain = state["last"] - state["first"] if state["first"] else None
    return {"received": state["got"], "first_message_ms": round(first_ms, 1) if first_ms else None,
            "drain_s": round(drain, 3) if drain else None,
            "drain_msg_per_s": round(state["got"] / drain, 1) if drain else None}


def store_bytes(data: Path) -> dict:
    """The store after a clean stop: its size, the payload bytes it holds, its tables' rows."""
    db_path = data / "lastwill.db"
    files = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
    db = sqlite3.connect(db_path)
    try:
        payload, n_messages = db.execute("SELECT coalesce(sum(length(payload) + length(topic)), 0), count(*) "
                                         "FROM messages").fetchone()
        entries = db.execute("SELECT coalesce(sum(length(entries)), 0) FROM messages").fetchone()[0] + \
            db.execute("SELECT coalesce(sum(length(entries)), 0) FROM queued").fetchone()[0]
    except sqlite3.OperationalError:  # a store before schema 5: one row per delivery
        payload, n_messages, entries = 0, 0, 0
    finally:
        db.close()
    return {"files_bytes": files, "messages": n_messages, "payload_bytes": payload, "entries_bytes": entries}


def run_variant(name: str, args) -> dict:
    memory = name == "memory"
    workdir = Path(tempfile.mkdtemp(prefix=f"store-once-{name}-"))
    broker = Broker(workdir, memory, args.broker_arg, args.base_src if name == "base" else None)
    out: dict = {"variant": name}
    try:
        broker.start()
        asyncio.run(make_sessions(broker.port, args.sessions))
        rss0 = broker.rss_kb()
        cpu0 = cpu_s(broker.proc.pid)
        out.update(asyncio.run(flood(broker.port, args.messages, args.duration, args.payload)))
        cpu1 = cpu_s(broker.proc.pid)
        # the broker's CPU time per accepted message: what the machine's other load does not change
        # (the wall-clock rate does, on a shared machine)
        out["broker_cpu_s"] = round(cpu1 - cpu0, 2)
        out["msg_per_cpu_s"] = round(out["accepted"] / max(cpu1 - cpu0, 0.01), 1)
        time.sleep(0.5)
        rss1 = broker.rss_kb()
        deliveries = out["accepted"] * args.sessions
        out["queued_deliveries"] = deliveries
        out["rss_growth_per_delivery"] = round((rss1 - rss0) * 1024 / deliveries, 1)
        out["rss_kb"] = rss1
        if args.reconnect:
            cpu2 = cpu_s(broker.proc.pid)
            out["reconnect"] = asyncio.run(reconnect_and_drain(broker.port, out["accepted"]))
            spent = cpu_s(broker.proc.pid) - cpu2  # the broker's CPU time for the drain
            out["reconnect"]["broker_cpu_s"] = round(spent, 2)
            out["reconnect"]["us_cpu_per_msg"] = round(spent * 1e6 / max(out["reconnect"]["received"], 1), 1)
        broker.stop()
        if not memory:
            sb = store_bytes(broker.data)
            out["store"] = sb
            out["store_bytes_per_delivery_beyond_payload"] = round((sb["files_bytes"] - sb["payload_bytes"])
                                                                   / deliveries, 1)
            if args.restart:
                t = broker.start()
                out["restart"] = {"startup_s": round(t, 2), "rss_kb": broker.rss_kb(),
                                  "broker_cpu_s": round(cpu_s(broker.proc.pid), 2)}
                if args.sessions > 1 and args.reconnect:  # then the second session takes its queue
                    cpu2 = cpu_s(broker.proc.pid)
                    r = out["restart"]["reconnect"] = asyncio.run(
                        reconnect_and_drain(broker.port, out["accepted"], session=1))
                    r["us_cpu_per_msg"] = round((cpu_s(broker.proc.pid) - cpu2) * 1e6 / max(r["received"], 1), 1)
                    r["rss_kb_after"] = broker.rss_kb()
                broker.stop()
    finally:
        broker.stop() if broker.proc and broker.proc.poll() is None else None
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--messages", type=int, default=12_000, help="stop after this many PUBACKs (default 12,000: "
                   "below the default max_queued_bytes of 16 MiB per session at 1 KiB)")
    p.add_argument("--duration", type=float, default=30.0, help="or after this long (s)")
    p.add_argument("--payload", type=int, default=1024)
    p.add_argument("--variants", default="durable,memory", help="durable, memory, base (durable, from --base-src)")
    p.add_argument("--base-src", type=Path, help="variant 'base': lastwill from this src/ directory (e.g. "
                   "git archive HEAD src | tar -x -C /tmp/base), for a before/after in one run")
    p.add_argument("--reconnect", action="store_true")
    p.add_argument("--restart", action="store_true")
    p.add_argument("--broker-arg", action="append", default=[], help="passed to lastwill serve (repeatable)")
    p.add_argument("--rounds", type=int, default=1, help="the variants one after the other, this many times; "
                   "medians reported")
    args = p.parse_args()
    if "base" in args.variants.split(",") and not (args.base_src and (args.base_src / "lastwill").is_dir()):
        p.error("variant base needs --base-src DIR with lastwill/ in it")
    os.sched_setaffinity(0, {int(LOADGEN_CPU)})
    results = []
    for _ in range(args.rounds):
        for v in args.variants.split(","):
            r = run_variant(v, args)
            print(json.dumps(r), flush=True)
            results.append(r)
    med = {}
    for key in ("msg_per_s", "msg_per_cpu_s"):
        for v in args.variants.split(","):
            vals = sorted(r[key] for r in results if r["variant"] == v)
            med[(v, key)] = vals[len(vals) // 2]
    for v in args.variants.split(","):
        print(f"{v}: median {med[(v, 'msg_per_s')]} msg/s, {med[(v, 'msg_per_cpu_s')]} msg per broker CPU second")
    if "durable" in args.variants and "memory" in args.variants:
        print(f"durable / memory: {med[('durable', 'msg_per_s')] / med[('memory', 'msg_per_s')]:.2f}x (msg/s), "
              f"{med[('durable', 'msg_per_cpu_s')] / med[('memory', 'msg_per_cpu_s')]:.2f}x (msg per broker CPU s)")


if __name__ == "__main__":
    main()
