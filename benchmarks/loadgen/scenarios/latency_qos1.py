"""QoS 1 latency: one paced publisher -> one subscriber, and the loopback floor without a broker."""

from __future__ import annotations

import asyncio
import time

from ..clients import HOST, SeqPublisher, StampedSubscriber, State, close_all, connect, subscribe
from ..kernelstamp import connect_kernel_stamped
from ..probes import Window, rss_kb
from ..stats import ms_stats
from ..wire import STAMP, connect_packet


class Echo(asyncio.Protocol):
    """latency_qos1's loopback floor: writes back what it reads."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoTimer(asyncio.Protocol):
    """Reads back fixed-size records that start with STAMP; keeps the round-trip times in ns."""

    def __init__(self, size: int):
        self.size = size
        self.buf = b""
        self.rtts: list[int] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        buf = self.buf + data
        k = 0
        while len(buf) - k >= self.size:
            self.rtts.append(now - STAMP.unpack_from(buf, k)[0])
            k += self.size
        self.buf = buf[k:]


async def paced(st: State, rate: float, send) -> dict:
    """Call ``send()`` ``rate`` times a second on a fixed schedule until ``st.stop``: each message is
    written on its own at its due time (the event loop's timers have millisecond resolution; a
    message is never sent early, and one that is due late is sent at once: ``late_wakeups`` counts
    the wake-ups that found more than one due)."""
    interval = 1e9 / rate
    t0 = time.perf_counter_ns()
    k = 0
    max_burst = 0
    late = 0
    wakeups = 0
    while not st.stop:
        due = int((time.perf_counter_ns() - t0) / interval) + 1
        n = due - k
        if n > 0:
            for _ in range(n):
                send()
            k = due
            wakeups += 1
            if n > 1:
                late += 1
                max_burst = max(max_burst, n)
        await asyncio.sleep(max(0.0, (t0 + k * interval - time.perf_counter_ns()) / 1e9))
    return {"sent": k, "wakeups": wakeups, "late_wakeups": late, "max_burst": max(1, max_burst)}


async def loopback_floor(args, seconds: float) -> dict:
    """latency_qos1's baseline: the same pacing and record size through an echo server inside this
    process (two loopback hops, both ends on this event loop, no broker)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    size = max(args.payload, STAMP.size)
    pad = bytes(size - STAMP.size)
    _, timer = await loop.create_connection(lambda: EchoTimer(size), HOST, port)
    st = State()
    seq = 0

    def send() -> None:
        nonlocal seq
        timer.transport.write(STAMP.pack(time.perf_counter_ns(), 0, seq) + pad)
        seq += 1

    task = asyncio.ensure_future(paced(st, args.rate, send))
    await asyncio.sleep(seconds)
    st.stop = True
    await task
    await asyncio.sleep(0.05)
    timer.transport.close()
    server.close()
    skip = len(timer.rtts) // 10  # the first tenth: warm-up
    return {**ms_stats("floor_ms", [x / 1e6 for x in timer.rtts[skip:]]), "floor_samples": len(timer.rtts) - skip}


async def latency_qos1(args) -> dict:
    """One QoS 1 publisher paced at ``--rate`` msg/s (default 1,000; each message written on its
    own at its due time) -> one QoS 1 subscriber that acks every message. Each payload carries its
    send time (time.perf_counter_ns of this process: publisher and subscriber share the clock);
    latency = arrival at the subscriber (when the event loop hands over the read) - send time, and
    ``lat_kernel_ms``: the kernel's receive time of the subscriber's read (SO_TIMESTAMPNS) - send
    time, which leaves out the load generator's own wake-up delay. Over the messages sent in the
    window (after the warm-up): p50 / p99 / max, and lost = sent in the window, not delivered within
    ``--drain`` s after it. Then, with ``--floor`` > 0, the same pacing
    through an echo socket inside this process (no broker): what the load generator and the
    loopback alone cost."""
    level = args.mqtt
    st = State()
    sub = await connect_kernel_stamped(args.sub_port or args.port, lambda: StampedSubscriber(st, "sub", level, 1),
                                       connect_packet("bench-lat-sub", level))
    sub.record_latency = True
    await subscribe(sub, "bench/lat", 1, level)
    pub = await connect(args.port, lambda: SeqPublisher(st, "pub", "bench/lat", args.payload, level, 65535, 0),
                        connect_packet("bench-lat-pub", level))
    task = asyncio.ensure_future(paced(st, args.rate, lambda: pub.transport.write(pub.build(1))))
    w = Window(args.broker_pid)
    try:
        await asyncio.sleep(args.warmup)
        seq_a = pub.seq
        a = w.snap(sub.unique, seq_a)
        await asyncio.sleep(args.duration)
        seq_b = pub.seq
        b = w.snap(sub.unique, seq_b)
    finally:
        st.stop = True
        pacing = await task
    give_up = time.monotonic() + args.drain
    seen = sub.seen[0]
    while time.monotonic() < give_up and sum(seen[seq_a:seq_b]) < seq_b - seq_a:
        await asyncio.sleep(0.01)
    delivered = sum(seen[seq_a:seq_b])
    if args.latency_trace:  # every message: sequence, latency, latency to the kernel's receive time (ms)
        with open(args.latency_trace, "w") as f:
            f.write(f"# window: sequences {seq_a}..{seq_b - 1}; {args.rate:g} msg/s\n")
            f.writelines(f"{seq} {ns / 1e6:.3f} {'' if kns is None else f'{kns / 1e6:.3f}'}\n"
                         for seq, ns, kns in sub.latency)
    lat = [ns / 1e6 for seq, ns, _ in sub.latency if seq_a <= seq < seq_b]
    lat_kernel = [kns / 1e6 for seq, _, kns in sub.latency if seq_a <= seq < seq_b and kns is not None]
    close_all([pub, sub])
    summary = Window.summary(a, b)
    out = {
        "unit": "ms", "rate_target": args.rate, "sent_rate": round(summary["sent_rate"], 1),
        "sent_in_window": seq_b - seq_a, "delivered_in_window": delivered, "lost": seq_b - seq_a - delivered,
        **ms_stats("lat_ms", lat), "samples": len(lat), **ms_stats("lat_kernel_ms", lat_kernel),
        "kernel_samples": len(lat_kernel), "duplicates": sub.dups, "short_writes": sub.transport.short_writes,
        "acked_by_broker": pub.acked, "payload_bytes": max(args.payload, STAMP.size),
        "pacing": pacing, "window_s": summary["window_s"],
        "loadgen_cpu_pct": summary["loadgen_cpu_pct"], "broker_cpu_pct": summary["broker_cpu_pct"],
        **{k: v for k, v in summary.items() if k.endswith(("_busy_pct", "_runq_wait_pct"))},
        "broker_rss_kb_end": rss_kb(args.broker_pid),
        "errors": [e for e in st.errors if "connection lost" not in e][:10],
    }
    if args.floor > 0:
        out.update(await loopback_floor(args, args.floor))
    return out
