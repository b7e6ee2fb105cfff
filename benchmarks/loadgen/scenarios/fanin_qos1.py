"""QoS 1 fan-in: ``--publishers`` (10), each with ``--window`` in flight -> 1 subscriber that acks."""

from __future__ import annotations

import asyncio

from ..clients import Qos1Publisher, Qos1Subscriber, State, close_all, connect, connect_many, subscribe
from ..traffic import measure, pump_qos1
from ..wire import connect_packet


async def fanin_qos1(args) -> dict:
    level = args.mqtt
    n_pubs = args.publishers or 10
    st = State(fanout=1, cap=args.backlog)
    payload = b"p" * args.payload
    sub = await connect(args.sub_port or args.port, lambda: Qos1Subscriber(st, "sub"), connect_packet("bench-q1-sub", level))
    await subscribe(sub, "bench/q1/+", 1, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: Qos1Publisher(st, f"pub{i}", f"bench/q1/{i}", payload, level, args.window),
         connect_packet(f"bench-q1-pub-{i}", level)) for i in range(n_pubs)])
    task = asyncio.ensure_future(pump_qos1(st, pubs))
    try:
        out = await measure(st, args)
    finally:
        st.stop = True
        st.wake.set()
        await task
        close_all(pubs + [sub])
    out.update(unit="msg/s", publishers=n_pubs, subscribers=1, payload_bytes=args.payload,
               window=args.window, backlog_cap=args.backlog,
               acked_by_broker=sum(p.acked for p in pubs), errors=st.errors[:10])
    return out
