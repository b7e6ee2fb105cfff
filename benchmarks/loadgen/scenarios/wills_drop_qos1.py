"""Thousands of QoS 1 wills at once: clients dropped together, a QoS 1 observer that acks."""

from __future__ import annotations

import asyncio
import socket
import time

from ..clients import Qos1WillObserver, State, close_all, connect, subscribe
from ..probes import Window, rss_kb
from ..rawconns import disconnect_all, drop_all, open_many, raise_fd_limit, wait_arrivals
from ..stats import ms_stats
from ..wire import connect_packet


async def wills_drop_qos1(args) -> dict:
    """An observer subscribes to ``bench/w5k/+`` at QoS 1 and acks every PUBLISH; ``--clients``
    clients (default 5,000) connect, each with a QoS 1 will on its own topic ``bench/w5k/<i>``
    (keep-alive 60, clean session); after ``--settle`` s all their sockets are closed in one loop,
    without DISCONNECT (``--drop rst``: SO_LINGER 0, the broker reads a connection reset;
    ``fin``: a plain close, the broker reads EOF). Reports wills received, and the arrival times
    after the drop began (p50 / p99 / last). Waits until all have arrived, or none arrived for
    ``--quiet`` s, at most ``--will-timeout`` s."""
    level = args.mqtt
    n = args.clients
    raise_fd_limit()
    st = State()
    prefix = "bench/w5k/"
    obs = await connect(args.sub_port or args.port, lambda: Qos1WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-w5k-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 1, level)
    packets = [connect_packet(f"bench-w5k-{i}", level, keep_alive=60, will=(f"{prefix}{i}", b"gone", 1))
               for i in range(n)]
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        await asyncio.sleep(args.settle)
        early = len(obs.arrivals)  # wills before the drop: none expected
        w = Window(args.broker_pid)
        a = w.snap(0)
        t_drop = time.monotonic()
        times = drop_all(socks, args.drop)
        socks = []
        drop_s = max((t for t in times if t is not None), default=t_drop) - t_drop
        await wait_arrivals(obs, connected, t_drop + args.will_timeout, args.quiet, t_drop)
        b = w.snap(len(obs.arrivals))
    finally:
        disconnect_all(socks)
        st.stop = True
        close_all([obs])
    arrivals = [1000 * (t - t_drop) for i, t in obs.arrivals.items() if times[i] is not None]
    if args.latency_trace:  # every client: index, its close, its will's arrival (ms after the drop began)
        with open(args.latency_trace, "w") as f:
            f.writelines(f"{i} {'' if t is None else f'{1000 * (t - t_drop):.3f}'} "
                         f"{f'{1000 * (obs.arrivals[i] - t_drop):.3f}' if i in obs.arrivals else ''}\n"
                         for i, t in enumerate(times))
    summary = Window.summary(a, b)
    stats = ms_stats("arrival_ms", arrivals, 1)
    return {
        "unit": "ms", "clients": n, "connected": connected, "refused": refused, "connect_all_s": round(took, 3),
        "drop": args.drop, "drop_s": round(drop_s, 4), "wills_received": len(arrivals),
        "wills_before_drop": early, "strays": obs.strays, **stats, "last_ms": stats["arrival_ms_max"],
        "waited_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "error_count": len(errors), "errors": (errors + [e for e in st.errors if "connection lost" not in e])[:10],
    }
