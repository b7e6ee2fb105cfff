"""QoS 1 fan-in to a persistent (Clean Session 0) subscriber; lost = PUBACKed, never delivered."""

from __future__ import annotations

import asyncio
import time

from ..clients import (
    Client,
    SeqPublisher,
    StampedSubscriber,
    State,
    close_all,
    connect,
    connect_many,
    subscribe,
)
from ..stats import count_missing
from ..traffic import measure, pump_qos1
from ..wire import SESSION_EXPIRY_INTERVAL, STAMP, connect_packet, prop_u32


async def fanin_qos1_persistent(args) -> dict:
    """fanin_qos1 with a persistent subscriber: it connects with Clean Session 0 (MQTT 5: Clean
    Start 0 and Session Expiry Interval 3600) and subscribes at QoS 1 before the publishers start,
    so a broker that keeps sessions durable must store each message before its PUBACK. Each payload
    carries (publisher, sequence); the rate counts unique (publisher, sequence) deliveries. After
    the window the publishers stop and the subscriber drains (until everything sent has arrived,
    or nothing new arrived for ``--drain-idle`` s, at most ``--drain-max`` s); lost = acknowledged by
    the broker to its publisher (PUBACK) but never delivered."""
    level = args.mqtt
    n_pubs = args.publishers or 10
    st = State(fanout=1, cap=args.backlog)
    props = prop_u32(SESSION_EXPIRY_INTERVAL, 3600) if level == 5 else b""
    # a clean connection first discards whatever session an earlier run left on this broker
    # [MQTT-3.1.2-6], so that no message queued for it then is counted now
    old = await connect(args.sub_port or args.port, lambda: Client(State(), "sub-clean"),
                        connect_packet("bench-q1p-sub", level))
    close_all([old])
    await asyncio.sleep(0.05)
    sub = await connect(args.sub_port or args.port, lambda: StampedSubscriber(st, "sub", level, n_pubs),
                        connect_packet("bench-q1p-sub", level, clean=False, props=props))
    await subscribe(sub, "bench/q1p/+", 1, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: SeqPublisher(st, f"pub{i}", f"bench/q1p/{i}", args.payload, level, args.window, i),
         connect_packet(f"bench-q1p-pub-{i}", level)) for i in range(n_pubs)])
    task = asyncio.ensure_future(pump_qos1(st, pubs))
    try:
        out = await measure(st, args, count=lambda st: sub.unique)
    finally:
        st.stop = True
        st.wake.set()
        await task
    t0 = time.monotonic()
    sent = sum(p.seq for p in pubs)
    last, last_change = None, t0
    while sub.unique < sent and time.monotonic() - t0 < args.drain_max:
        now = (sub.unique, sum(p.acked for p in pubs))
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > args.drain_idle:
            break
        await asyncio.sleep(0.02)
    drain_s = time.monotonic() - t0
    acked = sum(p.acked for p in pubs)
    lost = sum(count_missing(p.acked_seqs, sub.seen[i]) for i, p in enumerate(pubs))
    close_all(pubs + [sub])
    out.update(unit="msg/s", publishers=n_pubs, subscribers=1, payload_bytes=max(args.payload, STAMP.size),
               window=args.window, backlog_cap=args.backlog, sent=sent, acked_by_broker=acked,
               delivered_unique=sub.unique, duplicates=sub.dups, lost=lost, unacked_at_end=sent - acked,
               drain_s=round(drain_s, 2), bad_payloads=sub.bad, errors=st.errors[:10])
    return out
