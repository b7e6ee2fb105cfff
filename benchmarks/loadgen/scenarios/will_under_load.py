"""will_punctuality while the QoS 0 fan-in runs in the background."""

from __future__ import annotations

import asyncio
import time

from ..clients import State
from ..traffic import start_qos0, stop_traffic
from .will_punctuality import will_punctuality


async def will_under_load(args) -> dict:
    """will_punctuality while the QoS 0 fan-in (50 -> 1, capped backlog) runs in the background."""
    st = State(fanout=1, cap=args.backlog)
    clients, task = await start_qos0(args, st, 50, 1, lambda i: f"bench/fanin/{i}", "bench/fanin/+")
    try:
        await asyncio.sleep(args.warmup)
        t0, d0 = time.monotonic(), st.delivered
        out = await will_punctuality(args)
        out["background_rate"] = (st.delivered - d0) / (time.monotonic() - t0)
        out["background_errors"] = st.errors[:10]
    finally:
        await stop_traffic(st, clients, task)
    return out
