#!/usr/bin/env python3
"""CPU time of the broker's core and its SQLite store per message of a queue drained after a reconnect
(issue 11), in one process, without sockets: what the durable store adds to a drain, whatever else the
machine is doing (CPU time, the minimum of several runs).

    python benchmarks/drain_cpu.py [--messages 20000] [--sessions 1] [--runs 3] [--restart] [--src DIR ...]

``--sessions`` persistent MQTT 5 sessions (Session Expiry 3600) subscribe at QoS 1 and go offline;
``--messages`` 1 KiB QoS 1 messages are published to them (a commit every 100); then the first
session reconnects (Receive Maximum 65,535) and takes its queue: each turn, every PUBLISH the core
asks to send is encoded and acknowledged, and the turn's batch committed, as the edge does, until
the queue is empty. ``--restart``: the broker restarts on its store before the reconnect (a lazy
restore reads the queue as it drains). Reported: CPU per drained message, durable (SQLite, fsync
batch) and ``memory`` (no store); the collector frozen and tuned as ``lastwill serve`` does. Not measured: the event loop, the sockets and the system calls.
``--src``: run each of these src/ directories in turn (``git archive COMMIT src | tar -x -C /tmp/x``).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time


def _one(durable: bool, messages: int, sessions: int, restart: bool, fanin: bool = False,
         flood: bool = False) -> float:
    from lastwill.codec.encoder import encode
    from lastwill.codec.packets import Connect, Puback, Publish, Subscribe, Subscription
    from lastwill.config import Config
    from lastwill.core.actions import Send
    from lastwill.core.broker import BrokerCore
    from lastwill.core.causes import lost
    from lastwill.storage.sqlite import SqliteStorage

    cfg = dict(max_queued_bytes=1 << 40, max_total_queued_bytes=1 << 40, max_queued_messages=10_000_000)
    data = os.path.join(tempfile.mkdtemp(prefix="drain-cpu-"), "data")
    store = SqliteStorage(data) if durable else None
    if store is not None:
        store.load()
    core = BrokerCore(Config(**cfg), persist=durable)
    now = 1000.0

    def commit() -> None:
        if store is not None:
            batch = core.take_batch(0.0)
            if batch:
                store.commit(batch)

    def run(actions: list) -> list:
        out = []
        for a in actions:
            if type(a) is Send:
                encode(a.packet, 5)
                if isinstance(a.packet, Publish):
                    out.append(a.packet)
        return out

    def connect(client_id: str, clean: bool, **props) -> tuple[int, list]:
        conn_id = core.new_conn_id()
        run(core.open(conn_id, now, "127.0.0.1:1", 1883))
        return conn_id, run(core.data_received(conn_id, encode(Connect(
            client_id=client_id, protocol_level=5, clean_start=clean, properties=props), 5), now))

    if fanin:  # one connected persistent subscriber, publishes and acknowledgements in turns of 100
        sub, _ = connect("s0", True, session_expiry_interval=3600)
        run(core.data_received(sub, encode(Subscribe(1, [Subscription("t", 1)], {}), 5), now))
        pub, _ = connect("pub", True)
        commit()
        payload = b"p" * 64
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        started = time.process_time()
        pending: list = []
        for k in range(0, messages, 100):
            data = b"".join(encode(Publish("t", payload, 1, False, False, (k + j) % 65535 + 1, {}), 5)
                            for j in range(100))
            out = run(core.data_received(pub, data, now))
            commit()
            if pending:
                run(core.data_received(sub, b"".join(encode(Puback(p.packet_id), 5) for p in pending), now))
            pending = out
        return (time.process_time() - started) / messages
    for i in range(sessions):  # subscribed, then offline
        c, _ = connect(f"s{i}", True, session_expiry_interval=3600)
        run(core.data_received(c, encode(Subscribe(1, [Subscription("t", 1)], {}), 5), now))
        run(core.connection_lost(c, lost(ConnectionResetError(104, "reset")), now))
    commit()
    pub, _ = connect("pub", True)
    payload = b"p" * 1024
    if flood:  # the flood itself: a commit every message (as at a loop turn per PUBLISH), measured
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        started = time.process_time()
    for k in range(messages):
        run(core.data_received(pub, encode(Publish("t", payload, 1, False, False, k % 65535 + 1, {}), 5), now))
        if flood or k % 100 == 99:
            commit()
    commit()
    if flood:
        return (time.process_time() - started) / messages
    if restart and store is not None:
        store.close()
        store = SqliteStorage(data)
        core = BrokerCore(Config(**cfg), persist=True)
        run(core.restore(store.load(), now, now, False))
        commit()
    gc.freeze()  # as lastwill serve does once started (cli.py)
    gc.set_threshold(50_000, 20, 50)
    started = time.process_time()
    c, pending = connect("s0", False, session_expiry_interval=3600)
    got = 0
    while True:  # one loop turn: what was sent is acknowledged, the queue goes on (PUMP timers)
        pending += run(core.tick(now))
        commit()
        if not pending:
            break
        got += len(pending)
        acks = b"".join(encode(Puback(p.packet_id), 5) for p in pending)
        pending = run(core.data_received(c, acks, now))
    commit()
    spent = time.process_time() - started
    assert got >= messages, (got, messages)  # (every one delivered once at least)
    return spent / max(got, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--restart", action="store_true")
    ap.add_argument("--flood", action="store_true", help="instead: the publishing to the --sessions offline "
                    "sessions, a commit per message (CPU per published message)")
    ap.add_argument("--fanin", action="store_true", help="instead: QoS 1 to one connected persistent subscriber "
                    "(fanin_qos1_persistent's path: each message written, delivered, deleted at its PUBACK)")
    ap.add_argument("--src", nargs="*", default=[])
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one variant, one run
    args = ap.parse_args()
    if args.one:
        print(_one(args.one == "durable", args.messages, args.sessions, args.restart, args.fanin, args.flood))
        return 0
    for src in args.src or [None]:
        env = dict(os.environ, PYTHONPATH=src) if src else None
        row = []
        for variant in ("durable", "memory"):
            cmd = [sys.executable, __file__, "--one", variant, "--messages", str(args.messages), "--sessions",
                   str(args.sessions)] + (["--restart"] if args.restart else []) + (["--fanin"] if args.fanin else []) + \
                (["--flood"] if args.flood else [])
            best = min(float(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
                       for _ in range(args.runs))
            row.append(f"{variant} {best * 1e6:.1f} us")
        print(f"{src or 'installed lastwill'}: " + ", ".join(row) + f" (CPU time per message, min of "
              f"{args.runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
