"""MQTT load generator for the lastwill-vs-mosquitto benchmark: one process, one core, uvloop.

The command line: parse the options, run one scenario under a hard time limit on uvloop (asyncio
if uvloop is missing) and print its result as one JSON line (``failed`` says why it did not finish).
"""

from __future__ import annotations

import argparse
import asyncio
import json

from .scenarios import SCENARIOS

# --clients when not given
DEFAULT_CLIENTS = {"connect_hold": 5000, "wills_drop_qos1": 5000, "delayed_will": 1000}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sub-port", type=int, default=0,
                   help="connect the subscribers there instead (another node of a cluster); default: --port")
    p.add_argument("--sub-ports", default="",
                   help="comma-separated ports: spread the QoS 0 subscribers over them, round robin (the nodes "
                        "of a cluster); overrides --sub-port for fanin_qos0/fanout_qos0")
    p.add_argument("--duration", type=float, default=3.0, help="measuring window, seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="traffic before the window, seconds")
    p.add_argument("--mqtt", type=int, choices=(4, 5), default=4, help="protocol level: 4 = 3.1.1, 5 = 5.0")
    p.add_argument("--broker-pid", type=int, help="read the broker's CPU time from /proc")
    p.add_argument("--payload", type=int, default=64, help="payload bytes")
    p.add_argument("--batch", type=int, default=100, help="QoS 0 PUBLISHes per write")
    p.add_argument("--backlog", type=int, default=100_000,
                   help="end-to-end cap on published-but-not-delivered messages (0 = open loop)")
    p.add_argument("--publishers", type=int, default=0, help="default: 50 (fanin_qos0), 10 (fanin_qos1)")
    p.add_argument("--subscribers", type=int, default=0, help="default: 100 (fanout_qos0)")
    p.add_argument("--window", type=int, default=100, help="QoS 1 in-flight messages per publisher")
    p.add_argument("--concurrency", type=int, default=32, help="connect_rate: parallel connectors")
    p.add_argument("--source-addrs", type=int, default=32,
                   help="connect_rate: spread client sockets over 127.0.0.2..(N+1); 0 = no bind")
    p.add_argument("--clients", type=int, default=None,
                   help="clients: will_punctuality 200, connect_hold 5000, wills_drop_qos1 5000, delayed_will 1000")
    p.add_argument("--connect-timeout", type=float, default=30.0,
                   help="will scenarios, connect_hold: how long a client waits for its TCP connect and its CONNACK")
    p.add_argument("--will-timeout", type=float, default=4.0,
                   help="will scenarios: wait at most this long past the last deadline (wills_drop_qos1: the drop)")
    p.add_argument("--rate", type=float, default=1000.0, help="latency_qos1: messages per second")
    p.add_argument("--drain", type=float, default=1.0,
                   help="latency_qos1: wait this long after the window for the window's messages")
    p.add_argument("--latency-trace", metavar="FILE", help="latency_qos1: write every message's latency to FILE; "
                   "wills_drop_qos1: every client's close and will arrival time")
    p.add_argument("--floor", type=float, default=1.0,
                   help="latency_qos1: seconds of the loopback-only baseline after the window (0 = none)")
    p.add_argument("--drain-idle", type=float, default=2.0,
                   help="fanin_qos1_persistent: stop draining after this long without a new delivery")
    p.add_argument("--drain-max", type=float, default=15.0, help="fanin_qos1_persistent: drain at most this long")
    p.add_argument("--hold", type=float, default=1.0, help="connect_hold: keep the connections open this long")
    p.add_argument("--settle", type=float, default=0.5,
                   help="wills_drop_qos1, delayed_will: pause between the last CONNACK and the drop")
    p.add_argument("--drop", choices=("rst", "fin"), default="rst",
                   help="wills_drop_qos1, delayed_will: close with SO_LINGER 0 (reset) or a plain close (FIN)")
    p.add_argument("--quiet", type=float, default=2.0,
                   help="wills_drop_qos1, delayed_will: stop waiting after this long without a new will")
    p.add_argument("--will-delay", type=int, default=2, help="delayed_will: Will Delay Interval, s")
    p.add_argument("--session-expiry", type=int, default=60, help="delayed_will: Session Expiry Interval, s")
    args = p.parse_args(argv)
    if args.clients is None:
        args.clients = DEFAULT_CLIENTS.get(args.scenario, 200)
    return args


async def amain(args) -> dict:
    limit = (args.warmup + args.duration + args.will_timeout + args.will_delay + args.drain + args.floor
             + args.drain_max + args.hold + 60)
    result = await asyncio.wait_for(SCENARIOS[args.scenario](args), limit)
    result["scenario"] = args.scenario
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        run = uvloop.run
        loop_name = "uvloop " + uvloop.__version__
    except ImportError:  # pragma: no cover
        run = asyncio.run
        loop_name = "asyncio"
    try:
        result = run(amain(args))
    except Exception as e:  # report, don't hide: the runner records it
        result = {"scenario": args.scenario, "failed": f"{type(e).__name__}: {e}"}
    result["loop"] = loop_name
    result.setdefault("mqtt", args.mqtt)  # delayed_will is MQTT 5 whatever --mqtt says
    print(json.dumps(result))
    return 0 if "failed" not in result else 1


