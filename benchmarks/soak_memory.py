#!/usr/bin/env python3
"""Memory under a budget: `lastwill serve --memory-budget B` against a persistent-session flood and the
socket fuzzer, for a bounded time; the broker's RSS against the budget, and its own account of the
queued bytes against what the queues cost in RSS (docs/security.md "Soak: memory under a budget").

    .venv/bin/python benchmarks/soak_memory.py --duration 600 [--budget-mib 512] [--dir DIR]

Two phases, then it stops by itself (exit status 1 if a check failed):

1. **Accounting.** S persistent sessions (MQTT 5 Session Expiry "never"), each subscribed to a topic of
   its own, go offline; the broker's RSS is read. A publisher then sends QoS 1 messages round-robin to
   those topics until the broker refuses them (PUBACK 0x97: max_total_queued_bytes). The growth of
   RSS is set against the growth of ``lastwill_bound_used{limit="max_total_queued_bytes"}``.
2. **Soak.** Until the duration is up: new persistent sessions with random client ids, MQTT 5 and
   3.1.1 alternately, that subscribe to the flood's topics and vanish (without DISCONNECT, some with a
   will); the publisher going on at full speed; and the socket fuzzer's mutated sessions
   (tests/integration/socket_fuzz.py). The RSS is sampled every 2 s; VmHWM (the peak) is read at the
   end. Checks: the broker stays up and answers; its peak RSS stays under the budget plus
   ``--overhead-mib``; the refusals are counted by bound.

Run on the shared development machine (2 cores, other work on them): the figures are what one such
run gave, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.serve import ServeProcess  # noqa: E402
from tests.integration.socket_fuzz import Stats, fuzz_workers  # noqa: E402

from lastwill.codec.decoder import Decoder  # noqa: E402
from lastwill.codec.encoder import encode  # noqa: E402
from lastwill.codec.packets import Connect, Publish, Subscribe, Subscription, Will  # noqa: E402

MIB = 1024 * 1024
NEVER = 0xFFFFFFFF


def metrics(port: int) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def queued_account(port: int) -> float:
    return metrics(port).get('lastwill_bound_used{limit="max_total_queued_bytes"}', 0.0)


class Conn:
    """A minimal MQTT client on asyncio streams, through lastwill's codec (client side)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, level: int):
        self.reader, self.writer, self.level = reader, writer, level
        self.decoder = Decoder(server_side=False, protocol_level=level)
        self.pending: list = []

    @classmethod
    async def open(cls, port: int, client_id: str, level: int = 5, clean_start: bool = True,
                   will: Will | None = None, **props) -> tuple[Conn, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer, level)
        writer.write(encode(Connect(client_id=client_id, protocol_level=level, clean_start=clean_start,
                                    keep_alive=0, will=will, properties=props), level))
        ack = await c.expect("Connack")
        return c, (ack.reason_code if ack is not None else -1)

    async def expect(self, kind: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            for i, p in enumerate(self.pending):
                if type(p).__name__ == kind:
                    return self.pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except (TimeoutError, OSError):
                return None
            if not data:
                return None
            self.pending += self.decoder.feed(data)

    def close(self) -> None:
        self.writer.transport.abort()  # no DISCONNECT: the will (if any) is published


async def make_sessions(port: int, names: list[str], topic_of, refused: dict, level_of=lambda i: 5,
                        will_every: int = 0) -> int:
    """Persistent sessions that subscribe and vanish. Returns how many were accepted."""
    accepted = 0
    for i, name in enumerate(names):
        level = level_of(i)
        will = Will(f"soak/will/{name}", b"gone", 1, False, {"will_delay_interval": 3600} if level == 5 else {}) \
            if will_every and i % will_every == 1 else None
        props = {"session_expiry_interval": NEVER} if level == 5 else {}
        try:
            c, code = await Conn.open(port, name, level, clean_start=False, will=will, **props)
        except OSError:
            refused["connect_error"] = refused.get("connect_error", 0) + 1
            continue
        if code != 0:
            # (a 3.1.1 return code 3 is decoded as 0x88, Server unavailable)
            refused[f"connack_{code:#04x}"] = refused.get(f"connack_{code:#04x}", 0) + 1
            c.close()
            continue
        c.writer.write(encode(Subscribe(1, [Subscription(topic_of(i), 1)]), level))
        await c.expect("Suback")
        c.close()
        accepted += 1
    return accepted


class Publisher:
    """QoS 1 PUBLISHes round-robin to ``topics`` with up to ``window`` unacknowledged; counts the
    PUBACK reason codes."""

    def __init__(self, port: int, topics: list[str], payload_size: int, window: int = 256):
        self.port, self.topics, self.payload = port, topics, bytes(payload_size)
        self.window = window
        self.codes: dict[int, int] = {}
        self.sent = 0
        self.stop = False

    async def run(self, until_refused: bool = False, deadline: float = float("inf")) -> None:
        c, code = await Conn.open(self.port, f"soak-pub-{time.monotonic_ns()}", 5)
        assert code == 0, code
        inflight = 0
        pid = 0
        refused_streak = 0
        while not self.stop and time.monotonic() < deadline:
            while inflight < self.window:
                pid = pid % 65535 + 1
                topic = self.topics[self.sent % len(self.topics)]
                c.writer.write(encode(Publish(topic, self.payload, 1, False, False, pid, {}), 5))
                self.sent += 1
                inflight += 1
            await c.writer.drain()
            data = await c.reader.read(65536)
            if not data:
                break
            for p in c.decoder.feed(data):
                if type(p).__name__ == "Puback":
                    inflight -= 1
                    self.codes[p.reason_code] = self.codes.get(p.reason_code, 0) + 1
                    refused_streak = refused_streak + 1 if p.reason_code == 0x97 else 0
            if until_refused and refused_streak >= self.window:
                break
        c.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds in all (default 600)")
    parser.add_argument("--budget-mib", type=int, default=512, help="memory_budget of the broker (default 512)")
    parser.add_argument("--overhead-mib", type=int, default=128,
                        help="what RSS may exceed the budget by: the interpreter, buffers (default 128)")
    parser.add_argument("--sessions", type=int, default=2000, help="sessions of the accounting phase")
    parser.add_argument("--payload", type=int, default=1000, help="payload bytes of the flood's messages")
    parser.add_argument("--fuzz-connections", type=int, default=4)
    parser.add_argument("--dir", help="where the broker's log goes (default: a temporary directory, kept)")
    args = parser.parse_args()
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lastwill-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    budget = args.budget_mib * MIB
    started = time.monotonic()
    deadline = started + args.duration
    broker = ServeProcess(workdir / "broker.log", "--log-level", "warning", "--memory-budget", str(budget),
                          "--sys-interval", "0", admin=True).start()
    errors: list[str] = []
    samples: list[tuple[float, int, float]] = []  # (seconds since start, RSS KiB, queued account)
    result: dict = {"budget_mib": args.budget_mib, "duration_s": args.duration}
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(2.0):
            try:
                samples.append((time.monotonic() - started, broker.rss_kib(), queued_account(broker.admin_port)))
            except Exception as e:  # noqa: BLE001 - a sample missed is reported, not fatal
                errors.append(f"sampling failed: {e!r}")
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # ---- phase 1: the accounting --------------------------------------------------------------
        refused: dict = {}
        names = [f"acct-{i}" for i in range(args.sessions)]
        topics = [f"flood/acct/{i}" for i in range(args.sessions)]
        asyncio.run(make_sessions(broker.port, names, lambda i: topics[i], refused))
        time.sleep(1.0)
        rss0, q0 = broker.rss_kib(), queued_account(broker.admin_port)
        pub = Publisher(broker.port, topics, args.payload)
        t0 = time.monotonic()
        asyncio.run(pub.run(until_refused=True, deadline=min(deadline, time.monotonic() + args.duration / 2)))
        fill_s = time.monotonic() - t0
        time.sleep(1.0)
        rss1, q1 = broker.rss_kib(), queued_account(broker.admin_port)
        grew = (rss1 - rss0) * 1024
        counted = q1 - q0
        result["accounting"] = {
            "sessions": args.sessions, "payload": args.payload, "messages_accepted": pub.codes.get(0, 0),
            "refused_0x97": pub.codes.get(0x97, 0), "fill_seconds": round(fill_s, 1),
            "rss_before_mib": round(rss0 / 1024, 1), "rss_after_mib": round(rss1 / 1024, 1),
            "rss_growth_mib": round(grew / MIB, 1), "queued_account_mib": round(counted / MIB, 1),
            "account_vs_rss_growth": round(counted / grew, 3) if grew > 0 else None}
        if not pub.codes.get(0x97):
            errors.append("the accounting phase never reached max_total_queued_bytes")
        elif grew <= 0 or abs(counted - grew) / grew > 0.10:
            errors.append(f"the queued-bytes account ({counted / MIB:.1f} MiB) is not within 10 % of the RSS "
                          f"growth ({grew / MIB:.1f} MiB)")

        # ---- phase 2: the soak ---------------------------------------------------------------------
        stats = Stats()
        outcomes: list = []
        soak_refused: dict = {}
        flood = Publisher(broker.port, [f"flood/soak/{i}" for i in range(64)], args.payload)
        made = [0]

        async def soak() -> None:
            async def churn() -> None:
                rng = random.Random(7)
                n = 0
                while time.monotonic() < deadline:
                    names = [f"rnd-{rng.getrandbits(48):012x}" for _ in range(50)]
                    made[0] += await make_sessions(broker.port, names, lambda i: f"flood/soak/{i % 64}", soak_refused,
                                                   level_of=lambda i, n=n: 5 if (n + i) % 2 else 4, will_every=10)
                    n += 50

            async def publish() -> None:
                await flood.run(deadline=deadline)

            await asyncio.gather(churn(), publish(),
                                 fuzz_workers(broker.port, 1, args.fuzz_connections, deadline, stats, outcomes))

        asyncio_log = logging.getLogger("asyncio")
        asyncio_log.setLevel(logging.ERROR)
        asyncio.run(soak())
        m = metrics(broker.admin_port)
        hits = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("lastwill_limit_hits_total") and v}
        used = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("lastwill_bound_used")}
        bounds = {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("lastwill_bound{")}
        result["soak"] = {
            "persistent_sessions_made": made[0], "connect_refusals": soak_refused,
            "flood_puback": {f"{k:#04x}": v for k, v in sorted(flood.codes.items())},
            "fuzz_connections": stats.connections, "fuzz_packets": stats.packets,
            "limit_hits": hits, "bound_used": used, "bounds": bounds,
            "sessions": int(m.get("lastwill_sessions", 0))}
        # the broker is up and answers at once: a new session is accepted, or (max_sessions reached)
        # refused with return code 3; a session that exists is resumed
        for client_id, clean in (("after-soak", True), (names[0], False)):
            t = time.monotonic()
            with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
                s.sendall(encode(Connect(client_id=client_id, protocol_level=4, clean_start=clean), 4))
                s.settimeout(10)
                ack = s.recv(4)
            full = used.get("max_sessions", 0) >= bounds.get("max_sessions", 1)
            expected = {b"\x20\x02\x00\x03" if full else b"\x20\x02\x00\x00"} if clean else {b"\x20\x02\x01\x00"}
            if ack not in expected:
                errors.append(f"CONNECT of {client_id!r} after the soak answered {ack!r}, expected {expected}")
            result[f"connack_after_s ({client_id})"] = [round(time.monotonic() - t, 3), ack.hex()]
    except Exception as e:  # noqa: BLE001
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        stop_sampling.set()
        sampler.join(5)
        alive = broker.proc.poll() is None
        peak = broker.hwm_kib() if alive else 0
        broker.stop()
    if not alive:
        errors.append("the broker exited during the soak")
    result["rss_peak_mib"] = round(peak / 1024, 1)
    result["rss_samples_max_mib"] = round(max((s[1] for s in samples), default=0) / 1024, 1)
    result["rss_last_mib"] = round(samples[-1][1] / 1024, 1) if samples else None
    result["wall_s"] = round(time.monotonic() - started)
    limit = (args.budget_mib + args.overhead_mib) * 1024
    if peak > limit:
        errors.append(f"peak RSS {peak / 1024:.0f} MiB > budget {args.budget_mib} MiB + overhead {args.overhead_mib} MiB")
    result["errors"] = errors
    (workdir / "samples.csv").write_text("seconds,rss_kib,queued_account_bytes\n" +
                                         "".join(f"{t:.1f},{r},{q:.0f}\n" for t, r, q in samples))
    print(json.dumps(result, indent=2))
    print(f"broker log and samples.csv in {workdir}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
