"""QoS 0 fan-out: 1 publisher -> ``--subscribers`` (100) of bench/fanout."""

from __future__ import annotations

from ..traffic import throughput_qos0


async def fanout_qos0(args) -> dict:
    return await throughput_qos0(args, 1, args.subscribers or 100, lambda i: "bench/fanout", "bench/fanout")
