"""QoS 0 fan-in: ``--publishers`` (50) -> 1 subscriber of bench/fanin/+."""

from __future__ import annotations

from ..traffic import throughput_qos0


async def fanin_qos0(args) -> dict:
    return await throughput_qos0(args, args.publishers or 50, 1,
                                 lambda i: f"bench/fanin/{i}", "bench/fanin/+")
