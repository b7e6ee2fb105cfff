"""Steady traffic for the throughput scenarios: the QoS 0 and QoS 1 pumps, the measuring window,
and the QoS 0 publishers -> subscribers set-up that fanin_qos0, fanout_qos0 and will_under_load share."""

from __future__ import annotations

import asyncio
import os

from .clients import Client, Qos1Publisher, State, close_all, connect_many, subscribe
from .probes import Window, rss_kb
from .wire import connect_packet, publish_qos0


async def pump_qos1(st: State, pubs: list[Qos1Publisher]) -> None:
    """Spend each publisher's credits (window minus unacknowledged), within the end-to-end cap."""
    while not st.stop:
        progressed = False
        for p in pubs:
            if p.credit and not p.paused and not p.closed:
                n = p.credit
                if st.cap:
                    room = st.cap - (st.sent - st.delivered)
                    if room <= 0:
                        st.waiting = True
                        st.cap_waits += 1
                        break
                    n = min(n, room)
                p.transport.write(p.build(n))
                p.credit -= n
                st.sent += n
                progressed = True
        if progressed:
            await asyncio.sleep(0)
        else:
            st.wake.clear()
            await st.wake.wait()


async def measure(st: State, args, count=lambda st: st.delivered) -> dict:
    w = Window(args.broker_pid)
    await asyncio.sleep(args.warmup)
    a = w.snap(count(st), st.sent)
    reads0 = st.reads
    await asyncio.sleep(args.duration)
    b = w.snap(count(st), st.sent)
    out = w.summary(a, b)
    # how the broker's output arrives: packets per read on the load generator's side
    out["loadgen_reads"] = st.reads - reads0
    out["broker_rss_kb_end"] = rss_kb(args.broker_pid)
    out["backlog_end"] = st.backlog()
    out["cap_waits"] = st.cap_waits
    return out


async def start_qos0(args, st: State, n_pubs: int, n_subs: int, topic_of, topic_filter: str):
    """Connect and subscribe ``n_subs``, connect ``n_pubs`` and start the pump. -> (clients, task)"""
    level = args.mqtt
    payload = os.urandom(args.payload // 2).hex().encode()[:args.payload].ljust(args.payload, b"x")
    ports = [int(x) for x in args.sub_ports.split(",") if x] if getattr(args, "sub_ports", "") else []
    ports = ports or [args.sub_port or args.port]
    subs = []
    for k, port in enumerate(ports):  # subscriber i on ports[i % len(ports)]
        subs += await connect_many(port, [
            (lambda i=i: Client(st, f"sub{i}"), connect_packet(f"bench-sub-{i}", level))
            for i in range(k, n_subs, len(ports))])
    for s in subs:
        await subscribe(s, topic_filter, 0, level)
    pubs = await connect_many(args.port, [
        (lambda i=i: Client(st, f"pub{i}"), connect_packet(f"bench-pub-{i}", level)) for i in range(n_pubs)])
    blobs = [publish_qos0(topic_of(i), payload, level) * args.batch for i in range(n_pubs)]
    return pubs + subs, asyncio.ensure_future(pump_qos0(st, pubs, blobs, args.batch))


async def stop_traffic(st: State, clients: list[Client], task: asyncio.Future) -> None:
    st.stop = True
    st.wake.set()
    await task
    close_all(clients)


async def throughput_qos0(args, n_pubs: int, n_subs: int, topic_of, topic_filter: str) -> dict:
    st = State(fanout=n_subs, cap=args.backlog)
    clients, task = await start_qos0(args, st, n_pubs, n_subs, topic_of, topic_filter)
    try:
        out = await measure(st, args)
    finally:
        await stop_traffic(st, clients, task)
    out.update(unit="msg/s", publishers=n_pubs, subscribers=n_subs, payload_bytes=args.payload,
               batch=args.batch, backlog_cap=args.backlog, errors=st.errors[:10])
    return out


async def pump_qos0(st: State, pubs: list[Client], blobs: list[bytes], per_blob: int) -> None:
    """Each turn, write one pre-encoded blob of ``per_blob`` PUBLISHes to every publisher whose
    socket is not paused (write buffer over 256 KiB), unless the end-to-end backlog is over the cap."""
    pairs = list(zip(pubs, blobs, strict=True))
    while not st.stop:
        if st.cap and st.sent * st.fanout - st.delivered > st.cap:
            st.waiting = True
            st.cap_waits += 1
            st.wake.clear()
            await st.wake.wait()
            continue
        wrote = 0
        for p, blob in pairs:
            if not p.paused and not p.closed:
                p.transport.write(blob)
                wrote += 1
        if wrote:
            st.sent += wrote * per_blob
            await asyncio.sleep(0)
        else:
            st.wake.clear()
            await st.wake.wait()
