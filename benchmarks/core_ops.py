#!/usr/bin/env python3
"""The broker core alone, driven with encoded packets and a fake clock: a fixed amount of work per
scenario, so that an instruction count (valgrind --tool=callgrind, or ``perf stat -e instructions``)
compares two versions of the core exactly, whatever else the machine is doing.

    python benchmarks/core_ops.py SCENARIO [N]          # run one scenario (N: its size)
    python benchmarks/core_ops.py --compare OLD_SRC NEW_SRC [--scenarios a,b] [--tool callgrind|perf]

``--compare`` runs each scenario under the tool with PYTHONPATH set to each ``src/`` directory in
turn and prints instructions per operation and the ratio new / old. The scenarios:

    connect      N clients connect (MQTT 5, a will each) and disconnect normally
    will_storm   N clients with a will drop at once; one QoS 1 subscriber gets every will
    fanin_qos0   N QoS 0 PUBLISH from 10 publishers to one subscriber
    fanout_qos0  N/100 QoS 0 PUBLISH, each to 100 subscribers
    qos1         N QoS 1 PUBLISH to one QoS 1 subscriber, every message acknowledged both ways
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("connect", "will_storm", "fanin_qos0", "fanout_qos0", "qos1")
DEFAULT_N = {"connect": 1000, "will_storm": 1000, "fanin_qos0": 10000, "fanout_qos0": 10000, "qos1": 3000}


def _run(scenario: str, n: int) -> None:
    from lastwill.codec.encoder import encode
    from lastwill.codec.packets import Connect, Disconnect, Puback, Publish, Subscribe, Subscription, Will
    from lastwill.config import Config
    from lastwill.core.actions import Send
    from lastwill.core.broker import BrokerCore

    try:  # the typed connection end (issue 9); before it, a text
        from lastwill.core.causes import lost
        eof = lost(None)
    except ImportError:
        eof = "EOF"

    core = BrokerCore(Config(), persist=False)
    now = 1000.0

    def open_client(client_id: str, will: Will | None = None, level: int = 5) -> int:
        conn_id = core.new_conn_id()
        core.open(conn_id, now, "bench")
        core.data_received(conn_id, encode(Connect(client_id=client_id, protocol_level=level, will=will), level), now)
        return conn_id

    def subscribe(conn_id: int, topic_filter: str, qos: int) -> None:
        core.data_received(conn_id, encode(Subscribe(1, [Subscription(topic_filter, qos)], {}), 5), now)

    if scenario == "connect":
        for i in range(n):
            conn_id = open_client(f"c{i}", Will(f"dead/c{i}", b"gone", 1, False, {}))
            core.data_received(conn_id, encode(Disconnect(), 5), now)
            core.connection_lost(conn_id, eof, now)
    elif scenario == "will_storm":
        watcher = open_client("watcher")
        subscribe(watcher, "dead/#", 1)
        conns = [open_client(f"c{i}", Will(f"dead/c{i}", b"gone", 1, False, {})) for i in range(n)]
        for conn_id in conns:
            core.connection_lost(conn_id, eof, now)
    elif scenario == "fanin_qos0":
        sub = open_client("sub")
        subscribe(sub, "t/#", 0)
        pubs = [open_client(f"p{i}") for i in range(10)]
        data = encode(Publish("t/x", b"x" * 64, 0, False, False, None, {}), 5)
        for i in range(n):
            core.data_received(pubs[i % 10], data, now)
    elif scenario == "fanout_qos0":
        for i in range(100):
            subscribe(open_client(f"s{i}"), "t/#", 0)
        pub = open_client("pub")
        data = encode(Publish("t/x", b"x" * 64, 0, False, False, None, {}), 5)
        for _ in range(n // 100):
            core.data_received(pub, data, now)
    elif scenario == "qos1":
        sub = open_client("sub")
        subscribe(sub, "t/#", 1)
        pub = open_client("pub")
        for i in range(n):
            pid = i % 65535 + 1
            out = core.data_received(pub, encode(Publish("t/x", b"x" * 64, 1, False, False, pid, {}), 5), now)
            for action in out:
                if type(action) is Send and action.conn_id == sub and type(action.packet) is Publish:
                    core.data_received(sub, encode(Puback(action.packet.packet_id), 5), now)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")


def _count(tool: str, src: str, scenario: str, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0")
    cmd = [sys.executable, __file__, scenario, str(n)]
    if tool == "perf":
        out = subprocess.run(["perf", "stat", "-x,", "-e", "instructions:u", *cmd], env=env,
                             capture_output=True, text=True, check=True).stderr
        return int(out.strip().splitlines()[-1].split(",")[0])
    with tempfile.TemporaryDirectory() as tmp:
        outfile = Path(tmp) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile}", *cmd], env=env,
                       capture_output=True, text=True, check=True)
        m = re.search(r"^summary: (\d+)", outfile.read_text(), re.M)
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", nargs="?")
    ap.add_argument("n", nargs="?", type=int)
    ap.add_argument("--compare", nargs=2, metavar=("OLD_SRC", "NEW_SRC"))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--tool", choices=("callgrind", "perf"), default="callgrind")
    args = ap.parse_args()
    if not args.compare:
        _run(args.scenario, args.n or DEFAULT_N[args.scenario])
        return
    old, new = args.compare
    print(f"{'scenario':<12} {'n':>6} {'old instr/op':>14} {'new instr/op':>14} {'new/old':>8}")
    for scenario in args.scenarios.split(","):
        n = DEFAULT_N[scenario]
        base = {src: _count(args.tool, src, "connect", 1) for src in (old, new)}  # start-up, subtracted
        per = {src: (_count(args.tool, src, scenario, n) - base[src]) / n for src in (old, new)}
        print(f"{scenario:<12} {n:>6} {per[old]:>14,.0f} {per[new]:>14,.0f} {per[new] / per[old]:>8.3f}")


if __name__ == "__main__":
    main()
