#!/usr/bin/env python3
"""Cost of one log line of the connect path, per log format (issue 14 item 6; issue 10 looks at the
cost of logging on the connect path).

    .venv/bin/python benchmarks/log_cost.py [--lines N] [--repeats R] [--cpu C]

Logs the line core/broker.py writes for every accepted CONNECT (the same format string and
arguments) N times through the "lastwill" logger, in five set-ups:

- ``before``: what ``lastwill serve`` did before log_format existed (logging.basicConfig to stderr
  with the text format);
- ``text``, ``json``: ``lastwill.logs.configure`` with that log_format, to stderr (the default);
- ``text-file``, ``json-file``: the same with log_file.

stderr (file descriptor 2) goes to a file in a temporary directory while it runs, as log_file does.

Prints the median over R repeats of the time per line in microseconds (and the min), one process,
pinned to one CPU when ``--cpu`` is given. Nothing else runs on that loop; on a busy machine, run it
twice and compare the medians.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

from lastwill.config import Config
from lastwill.logs import configure

FMT = ("connect client_id=%s from %s proto=%s clean_start=%d keep_alive=%s session_expiry=%s "
       "session_present=%d will=%s")
ARGS = ("sensor-0042", "127.0.0.1:49736", 4, 1, 30, 0, 0, "topic 'test/lwt' qos 1 retain 0 payload 32 bytes")


def reset_root() -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()


def setup(kind: str, path: str) -> None:
    reset_root()
    if kind == "before":
        logging.basicConfig(level="INFO", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        log_format, _, to_file = kind.partition("-")
        configure(Config(log_format=log_format, log_file=path if to_file else "").validate())


def measure(kind: str, lines: int, directory: str) -> float:
    path = os.path.join(directory, f"{kind}.log")
    setup(kind, path)
    log = logging.getLogger("lastwill")
    info = log.info
    start = time.perf_counter_ns()
    for _ in range(lines):
        info(FMT, *ARGS)
    elapsed = time.perf_counter_ns() - start
    reset_root()
    if os.path.exists(path):
        os.unlink(path)
    return elapsed / lines / 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    kinds = ("before", "text", "json", "text-file", "json-file")
    results: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as directory:
        saved = os.dup(2)
        with open(os.path.join(directory, "stderr"), "w") as err:
            os.dup2(err.fileno(), 2)
        try:
            for _ in range(args.repeats):  # interleaved, so that every set-up sees the same machine
                for kind in kinds:
                    results[kind].append(measure(kind, args.lines, directory))
                os.truncate(os.path.join(directory, "stderr"), 0)
        finally:
            os.dup2(saved, 2)
    print(f"log_cost: {args.lines} lines x {args.repeats} repeats, Python {platform.python_version()}, "
          f"{platform.machine()}, cpu {args.cpu if args.cpu is not None else 'any'}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'set-up':<12} {'median us/line':>15} {'min us/line':>12}")
    for kind in kinds:
        print(f"{kind:<12} {statistics.median(results[kind]):>15.2f} {min(results[kind]):>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
