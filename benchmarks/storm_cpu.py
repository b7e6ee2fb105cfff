#!/usr/bin/env python3
"""CPU time of the broker's core, its SQLite store and its log lines (the default settings) per will of a
storm and per connect, in one process, without sockets: what a will storm and a connect storm cost
the broker's Python code, whatever else the machine is doing (CPU time, the minimum of several runs).

    python benchmarks/storm_cpu.py [--n 5000] [--runs 5] [--log-level info] [--src DIR ...]

``storm``: N clients (MQTT 3.1.1, a QoS 1 will each) connected, then their connections lost at
once; one QoS 1 subscriber gets every will; the edge's group commit is imitated (a commit and a
log flush every 200 connection ends). ``connect``: N CONNECTs with a will (a commit every 64).
Every packet the core asks to send is encoded. Not measured: the event loop, the sockets and the
system calls (docs/benchmarks.md, profiles). ``--src``: run each of these src/ directories in turn
(a before/after: ``git archive COMMIT src | tar -x -C /tmp/x``). ``--commits``: instead, the
wall-clock time of each commit of a storm (the longest, p99, how many over 5 ms): what the event loop
waits for, WAL checkpoints included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

COMMIT_TIMES: list[float] = []  # wall-clock seconds of each store.commit of the last _one (--commits)


def _one(mode: str, n: int, level: str) -> float:
    from lastwill import logs
    from lastwill.codec.encoder import encode
    from lastwill.codec.packets import Connect, Subscribe, Subscription, Will
    from lastwill.config import Config
    from lastwill.core.actions import Send
    from lastwill.core.broker import BrokerCore
    from lastwill.core.causes import lost
    from lastwill.storage.sqlite import SqliteStorage

    workdir = tempfile.mkdtemp(prefix="storm-cpu-")
    cfg = Config()
    cfg.log_file = os.path.join(workdir, "lastwill.log")
    cfg.log_level = level
    logs.configure(cfg)
    logs.lean_records()
    logs.batching(True)
    store = SqliteStorage(os.path.join(workdir, "data"))
    store.load()
    core = BrokerCore(Config(), persist=True)
    now = 1000.0

    def commit() -> None:
        batch = core.take_batch(0.0)
        if batch:
            began = time.perf_counter()
            store.commit(batch)
            COMMIT_TIMES.append(time.perf_counter() - began)
        logs.flush()

    def sent(actions: list) -> None:
        for a in actions:
            if type(a) is Send:
                encode(a.packet, 4)

    def open_client(client_id: str, will: Will | None = None) -> int:
        conn_id = core.new_conn_id()
        sent(core.open(conn_id, now, "127.0.0.1:1", 1883))
        sent(core.data_received(conn_id, encode(Connect(client_id=client_id, will=will), 4), now))
        return conn_id

    def connects() -> list[int]:
        conns = []
        for i in range(n):
            conns.append(open_client(f"c{i}", Will(f"dead/c{i}", b"gone", 1, False, {})))
            if i % 64 == 63:
                commit()
        commit()
        return conns

    watcher = open_client("watcher")
    sent(core.data_received(watcher, encode(Subscribe(1, [Subscription("dead/#", 1)], {}), 4), now))
    commit()
    if mode == "connect":
        started = time.process_time()
        connects()
        return (time.process_time() - started) / n
    conns = connects()
    ended = lost(ConnectionResetError(104, "Connection reset by peer"))
    started = time.process_time()
    for i, conn_id in enumerate(conns):
        sent(core.connection_lost(conn_id, ended, now))
        if i % 200 == 199:
            commit()
    commit()
    return (time.process_time() - started) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--src", nargs="*", default=[])
    ap.add_argument("--commits", action="store_true",
                    help="instead: the wall-clock time of each commit of one storm (longest, p99, over 5 ms), "
                         "what the event loop would wait for")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one mode, one run
    args = ap.parse_args()
    if args.one:
        print(_one(args.one, args.n, args.log_level))
        return 0
    if args.commits:
        return _commit_times(args)
    for src in args.src or [None]:
        env = dict(os.environ, PYTHONPATH=src) if src else None
        row = []
        for mode in ("storm", "connect"):
            best = min(float(subprocess.run(
                [sys.executable, __file__, "--one", mode, "--n", str(args.n), "--log-level", args.log_level],
                env=env, capture_output=True, text=True, check=True).stdout) for _ in range(args.runs))
            row.append(f"{mode} {best * 1e6:.1f} us")
        print(f"{src or 'installed lastwill'}: " + ", ".join(row) + f" (CPU time per op, min of {args.runs})")
    return 0


def _commit_times(args) -> int:
    code = ("import sys, json; sys.path.insert(0, {here!r}); import storm_cpu as s; "
            "s._one('storm', {n}, {level!r}); t = sorted(s.COMMIT_TIMES); "
            "print(json.dumps([t[-1], t[int(len(t) * 0.99)], sum(x > 0.005 for x in t), len(t)]))")
    for src in args.src or [None]:
        env = dict(os.environ, PYTHONPATH=src) if src else None
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", code.format(here=os.path.dirname(os.path.abspath(__file__)),
                                                                     n=args.n, level=args.log_level)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            longest, p99, over5, count = json.loads(out)
            print(f"{src or 'installed lastwill'}: {count} commits, longest {longest * 1e3:.1f} ms, "
                  f"p99 {p99 * 1e3:.2f} ms, over 5 ms: {over5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
