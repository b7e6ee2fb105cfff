"""Thousands of connections with wills, kept open: connects/s and broker RSS per idle connection."""

from __future__ import annotations

import asyncio
import socket

from ..probes import Window, rss_kb
from ..rawconns import disconnect_all, open_many, raise_fd_limit
from ..wire import connect_packet


async def connect_hold(args) -> dict:
    """``--clients`` connections (default 5,000), each a CONNECT with a will (keep-alive 60, clean
    session), ``--concurrency`` in flight, spread over ``--source-addrs`` source addresses, all kept
    open. connects/s = connected / time until the last CONNACK. The broker's VmRSS is read before,
    right after the last CONNACK and after ``--hold`` s more: KiB per idle connection =
    (after the hold - before) / connected. Ends with DISCONNECT on every connection (no wills)."""
    level = args.mqtt
    n = args.clients
    fd_limit = raise_fd_limit()
    await asyncio.sleep(0.2)
    rss0 = rss_kb(args.broker_pid)
    packets = [connect_packet(f"bench-hold-{i}", level, keep_alive=60, will=(f"bench/hold-will/{i}", b"gone", 0))
               for i in range(n)]
    w = Window(args.broker_pid)
    a = w.snap(0)
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        b = w.snap(connected)
        rss1 = rss_kb(args.broker_pid)
        await asyncio.sleep(args.hold)
        rss2 = rss_kb(args.broker_pid)
    finally:
        disconnect_all(socks)
    summary = Window.summary(a, b)
    per = (rss2 - rss0) / connected if connected and rss0 and rss2 else None
    return {
        "unit": "connects/s", "clients": n, "connected": connected, "refused": refused,
        "rate": connected / took if took else None, "connect_all_s": round(took, 3),
        "rss_before_kb": rss0, "rss_connected_kb": rss1, "rss_held_kb": rss2,
        "rss_before_mib": round(rss0 / 1024, 1) if rss0 else None,
        "rss_held_mib": round(rss2 / 1024, 1) if rss2 else None,
        "kib_per_conn": round(per, 2) if per is not None else None, "hold_s": args.hold,
        "concurrency": args.concurrency, "source_addrs": args.source_addrs, "fd_limit": fd_limit,
        "window_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "error_count": len(errors), "errors": errors[:10],
    }
