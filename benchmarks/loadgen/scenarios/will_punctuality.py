"""Will punctuality: clients with keep-alive 1 s go silent; when does each will arrive."""

from __future__ import annotations

import asyncio
import time

from ..clients import Client, State, WillObserver, close_all, connect, subscribe
from ..probes import Window, rss_kb
from ..wire import PINGREQ, connect_packet


async def will_punctuality(args) -> dict:
    """``--clients`` clients connect with keep-alive 1 s and a will (pinging every 0.5 s while the
    others connect), then all send one PINGREQ in the same loop turn and go silent. The broker
    must publish each will once 1.5 s have passed since it last heard from the client
    [MQTT-3.1.2-24]; the deadline is taken from when that last PINGREQ was written (so the
    measured delay includes the loopback hop: it is an upper bound). A client the broker drops
    while it was still pinging is counted in ``closed_before_silence``, not in the delays."""
    level = args.mqtt
    n = args.clients
    st = State()
    prefix = "bench/will/"
    obs = await connect(args.port, lambda: WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-will-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 0, level)
    w = Window(args.broker_pid)
    silent = False

    async def pinger(c: Client) -> None:
        while True:
            await asyncio.sleep(0.5)
            if silent or c.closed:
                return
            c.transport.write(PINGREQ)

    async def connect_and_keep(i: int) -> tuple[Client, asyncio.Future]:
        c = await connect(args.port, lambda: Client(st, f"will{i}"),
                          connect_packet(f"bench-will-{i}", level, keep_alive=1, will=(f"{prefix}{i}", b"gone", 0)),
                          timeout=args.connect_timeout)
        return c, asyncio.ensure_future(pinger(c))

    t_connect = time.monotonic()
    pairs = await asyncio.gather(*(connect_and_keep(i) for i in range(n)))
    connect_s = time.monotonic() - t_connect
    silent = True
    clients = [c for c, _ in pairs]
    for _, task in pairs:
        task.cancel()
    a = w.snap(0)
    sent_at: list[float | None] = []
    for c in clients:
        if c.closed:  # the broker dropped it although it kept pinging
            sent_at.append(None)
            continue
        c.transport.write(PINGREQ)
        sent_at.append(time.monotonic())
    gone_early = sum(1 for t in sent_at if t is None)
    deadline_last = max((t for t in sent_at if t is not None), default=time.monotonic()) + 1.5
    give_up = deadline_last + args.will_timeout
    while len(obs.arrivals) < n and time.monotonic() < give_up:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # strays / duplicates
    b = w.snap(len(obs.arrivals))
    st.stop = True
    close_all(clients + [obs])
    delays = sorted(1000 * (t - (sent_at[i] + 1.5)) for i, t in obs.arrivals.items() if sent_at[i] is not None)

    def pct(p: float) -> float | None:
        if not delays:
            return None
        k = min(len(delays) - 1, max(0, round(p / 100 * len(delays) + 0.5) - 1))  # nearest rank
        return round(delays[k], 1)

    summary = Window.summary(a, b)
    return {
        "unit": "ms", "clients": n, "wills_received": len(delays), "strays": obs.strays,
        "wills_of_dropped_clients": len(obs.arrivals) - len(delays),
        "delay_ms_min": round(delays[0], 1) if delays else None,
        "delay_ms_p50": pct(50), "delay_ms_p99": pct(99),
        "delay_ms_max": round(delays[-1], 1) if delays else None,
        "connect_all_s": round(connect_s, 3), "closed_before_silence": gone_early, "waited_s": summary["window_s"],
        "loadgen_cpu_pct": summary["loadgen_cpu_pct"], "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "errors": [e for e in st.errors if "connection lost" not in e][:10],
    }
