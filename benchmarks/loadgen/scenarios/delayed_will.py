"""MQTT 5 delayed wills: clients with a Will Delay Interval dropped at once."""

from __future__ import annotations

import asyncio
import socket
import time

from ..clients import State, WillObserver, close_all, connect, subscribe
from ..probes import Window, rss_kb
from ..rawconns import disconnect_all, drop_all, open_many, raise_fd_limit, wait_arrivals
from ..stats import ms_stats
from ..wire import SESSION_EXPIRY_INTERVAL, WILL_DELAY_INTERVAL, connect_packet, prop_u32


async def delayed_will(args) -> dict:
    """MQTT 5 (whatever ``--mqtt`` says): an observer subscribes to ``bench/dwill/+``; ``--clients``
    clients (default 1,000) connect with Session Expiry Interval ``--session-expiry`` (60) and a
    will with Will Delay Interval ``--will-delay`` (2 s) (keep-alive 60); after ``--settle`` s all
    sockets are closed in one loop without DISCONNECT (``--drop``). The broker must publish each
    will once the will delay has passed (or the session has expired, if sooner) [MQTT-3.1.3-9];
    delay = arrival at the observer - (that socket's close time + will delay)."""
    level = 5
    n = args.clients
    raise_fd_limit()
    st = State()
    prefix = "bench/dwill/"
    obs = await connect(args.port, lambda: WillObserver(st, "observer", prefix.encode()),
                        connect_packet("bench-dwill-observer", level, keep_alive=0))
    await subscribe(obs, prefix + "+", 0, level)
    props = prop_u32(SESSION_EXPIRY_INTERVAL, args.session_expiry)
    will_props = prop_u32(WILL_DELAY_INTERVAL, args.will_delay)
    packets = [connect_packet(f"bench-dwill-{i}", level, keep_alive=60, will=(f"{prefix}{i}", b"gone", 0),
                              props=props, will_props=will_props) for i in range(n)]
    socks: list[socket.socket | None] = []
    try:
        socks, errors, refused, took = await open_many(args, packets)
        connected = sum(1 for s in socks if s is not None)
        await asyncio.sleep(args.settle)
        early_before_drop = len(obs.arrivals)
        w = Window(args.broker_pid)
        a = w.snap(0)
        t_drop = time.monotonic()
        times = drop_all(socks, args.drop)
        socks = []
        last_close = max((t for t in times if t is not None), default=t_drop)
        await wait_arrivals(obs, connected, last_close + args.will_delay + args.will_timeout,
                            args.will_delay + args.quiet, t_drop)
        b = w.snap(len(obs.arrivals))
    finally:
        disconnect_all(socks)
        st.stop = True
        close_all([obs])
    delays = [1000 * (t - (times[i] + args.will_delay)) for i, t in obs.arrivals.items() if times[i] is not None]
    summary = Window.summary(a, b)
    return {
        "unit": "ms", "mqtt": 5, "clients": n, "connected": connected, "refused": refused,
        "connect_all_s": round(took, 3), "will_delay_s": args.will_delay, "session_expiry_s": args.session_expiry,
        "drop": args.drop, "drop_s": round(last_close - t_drop, 4), "wills_received": len(delays),
        "wills_before_drop": early_before_drop, "strays": obs.strays,
        **ms_stats("delay_ms", delays, 1),
        "waited_s": summary["window_s"], "loadgen_cpu_pct": summary["loadgen_cpu_pct"],
        "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "error_count": len(errors), "errors": (errors + [e for e in st.errors if "connection lost" not in e])[:10],
    }
