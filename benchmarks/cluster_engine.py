"""What the cluster engine's scripts cost on a real redis-server (appendonly yes, appendfsync always).

    .venv/bin/python benchmarks/cluster_engine.py [--wills 10000] [--claimants 3]

Starts its own redis-server on a free 127.0.0.1 port in a temporary directory (stopped at the end), then:

1. a node connects N clients with a will (pipelined, 500 per round trip) and dies (its lease lapses);
2. a survivor reaps it (batches of 500): N wills due at once;
3. C claimant processes (each its own connection, epoch and event loop) claim them concurrently:
   due (100) then fire (100 per call), until none is left; claims per second over the wall time;
4. single calls one at a time: the round-trip time of connect, disconnect, heartbeat, publish (1
   message, 1 target), fetch+ack, and the server time per script call (INFO commandstats).

Prints a Markdown table (the numbers docs/cluster.md quotes). Bounded: every phase has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import queue
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from redis.asyncio import Redis  # noqa: E402
from tests.cluster.redis_proc import RedisServer  # noqa: E402

from lastwill.cluster.engine import ClusterSettings, RedisEngine  # noqa: E402
from lastwill.cluster.model import Ack, FetchRequest, FireOutcome, FireRequest, OutMessage, Target, WillSpec  # noqa: E402
from lastwill.core.topics import SubOptions  # noqa: E402

SETTINGS = ClusterSettings(lease_ms=600_000, beat_ms=60_000, grace_ms=2_000)
LIMIT_S = 300  # each phase


def engine(port: int) -> RedisEngine:
    return RedisEngine(Redis(host="127.0.0.1", port=port), settings=SETTINGS)


async def _server_usec(e: RedisEngine) -> tuple[int, float]:
    st = (await e.client.info("commandstats")).get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return st["calls"], st["usec"]


def _claim_process(port: int, node: str, routever: int, epoch_q, start_ev, out_q) -> None:
    async def main():
        e = engine(port)
        reg = await e.register(node)
        epoch_q.put(reg.epoch)
        while not start_ev.is_set():
            await asyncio.sleep(0.001)
        rng = random.Random(node)
        fired = gone = calls = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < LIMIT_S:
            batch = await e.due(reg.epoch, limit=100, offset=rng.randrange(0, 2000))
            calls += 1
            if not batch.wills:
                if batch.next_due_ms is None:
                    break
                continue
            res = await e.fire(reg.epoch, node, routever, [FireRequest(w.gen, w.client_id, (Target("observer", 1),))
                                                   for w in batch.wills])
            calls += 1
            fired += sum(r.outcome is FireOutcome.FIRED for r in res)
            gone += sum(r.outcome is FireOutcome.GONE for r in res)
        out_q.put((node, fired, gone, calls, time.perf_counter()))
        await e.client.aclose()
    asyncio.run(main())


async def phase_setup(port: int, n: int) -> dict:
    e = engine(port)
    await e.load_scripts()
    src = await e.register("n0")
    await e.client.config_resetstat()
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        await e.run(*[e.call_connect(src.epoch, "n0", f"dev{i}", True, 0,
                                     WillSpec(f"dead/dev{i}", b"token-%d" % i, 1, False, delay=0, protocol_level=4))
                      for i in range(start, min(n, start + 500))])
    t_connect = time.perf_counter() - t0
    calls, usec = await _server_usec(e)
    out = {"connect_pipelined_per_s": n / t_connect, "connect_server_us": usec / calls}
    await e.advance_clock(SETTINGS.lease_ms + SETTINGS.grace_ms + 1)  # n0 stops beating (simulated)
    surv = await e.register("n9")
    obs = await e.connect(surv.epoch, "n9", "observer", False, 0xFFFFFFFF, None)
    await e.subscribe(surv.epoch, "observer", obs.gen, [("dead/#", SubOptions(1))])
    await e.client.config_resetstat()
    t0 = time.perf_counter()
    rounds = 0
    while (await e.reap(surv.epoch, recovery_grace_ms=0)).remaining:
        rounds += 1
    t_reap = time.perf_counter() - t0
    calls, usec = await _server_usec(e)
    out.update(reap_s=t_reap, reap_calls=rounds + 1, reap_server_us_per_session=usec / n,
               due=await e.client.zcard(e.key("due")), routever=(await e.snapshot()).version)
    await e.client.aclose()
    return out


def phase_claims(port: int, claimants: int, routever: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    epoch_q, out_q, start_ev = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_claim_process, args=(port, f"n{i + 1}", routever, epoch_q, start_ev, out_q))
             for i in range(claimants)]
    for p in procs:
        p.start()
    for _ in procs:
        epoch_q.get(timeout=60)
    t0 = time.perf_counter()
    start_ev.set()
    results: list = []
    deadline = time.monotonic() + LIMIT_S + 30
    while len(results) < len(procs):
        try:
            results.append(out_q.get(timeout=0.5))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"claimant failed (exit codes {[p.exitcode for p in procs]})") from None
    for p in procs:
        p.join(timeout=30)
    wall = max(r[4] for r in results) - t0
    fired = sum(r[1] for r in results)
    return {"claim_wall_s": wall, "claims_per_s": fired / wall, "fired": fired,
            "per_claimant": {r[0]: {"fired": r[1], "gone": r[2], "calls": r[3]} for r in results}}


async def phase_latency(port: int, n: int = 300) -> dict:
    e = engine(port)
    reg = await e.register("lat")
    sub = await e.connect(reg.epoch, "lat", "sub", False, 0xFFFFFFFF, None)
    await e.subscribe(reg.epoch, "sub", sub.gen, [("t", SubOptions(1))])
    routever = (await e.snapshot()).version
    out = {}

    async def timed(name, make):
        await e.client.config_resetstat()
        rt0 = e.round_trips
        t0 = time.perf_counter()
        for i in range(n):
            await make(i)
        dt = (time.perf_counter() - t0) / n
        calls, usec = await _server_usec(e)
        out[name] = {"ms": dt * 1000, "round_trips": (e.round_trips - rt0) / n, "server_us": usec / max(calls, 1)}

    gens = {}

    async def conn(i):
        gens[i] = (await e.connect(reg.epoch, "lat", f"c{i}", False, 60, WillSpec("dead/c", b"x", 1, False, delay=5))).gen

    await timed("connect (with will)", conn)
    await timed("disconnect (will deferred)",
                lambda i: e.disconnect(reg.epoch, f"c{i}", gens[i], normal=False, cause="eof"))
    await timed("heartbeat", lambda i: e.heartbeat(reg.epoch))
    await timed("publish (1 msg, 1 target)",
                lambda i: e.publish(reg.epoch, routever, [OutMessage("t", b"m", 1, False, (Target("sub", 1),))]))

    async def fetch_ack(i):
        (q,) = await e.fetch(reg.epoch, [FetchRequest("sub", sub.gen, count=1)])
        await e.ack(reg.epoch, [Ack("sub", sub.gen, d.entry_id) for d in q.deliveries])

    await timed("fetch + ack (1 msg)", fetch_ack)

    async def publish_batch(i):
        await e.publish(reg.epoch, routever, [OutMessage("t", b"m", 1, False, (Target("sub", 1),))] * 100)

    await timed("publish (batch of 100 msgs)", publish_batch)
    await e.client.aclose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wills", type=int, default=10_000)
    ap.add_argument("--claimants", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            setup = asyncio.run(phase_setup(server.port, args.wills))
            assert setup["due"] == args.wills, setup
            claims = phase_claims(server.port, args.claimants, setup["routever"])
            assert claims["fired"] == args.wills, claims
            lat = asyncio.run(phase_latency(server.port))
        finally:
            server.stop()
    print(f"# cluster engine, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, redis-server appendfsync always")
    print(f"- {args.wills} connects with a will, pipelined 500/round trip: {setup['connect_pipelined_per_s']:,.0f}/s "
          f"(server {setup['connect_server_us']:.0f} us per connect script)")
    print(f"- reap of the dead node: {setup['reap_s']:.2f} s in {setup['reap_calls']} calls "
          f"(server {setup['reap_server_us_per_session']:.0f} us per session)")
    print(f"- {args.wills} claims by {args.claimants} processes: {claims['claim_wall_s']:.2f} s, "
          f"{claims['claims_per_s']:,.0f} claims/s; per claimant {claims['per_claimant']}")
    print("\n| call, one at a time | ms per call (client) | round trips | server us per script |")
    print("|---|---|---|---|")
    for name, v in lat.items():
        print(f"| {name} | {v['ms']:.2f} | {v['round_trips']:.0f} | {v['server_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
