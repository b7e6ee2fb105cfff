#!/usr/bin/env python3
"""Run the socket fuzzer against a fresh `lastwill serve` process for a given time and print the figures.

    .venv/bin/python scripts/fuzz_sockets.py --duration 300 [--seed 1] [--connections 8] [--dir DIR]

The same campaign as tests/integration/test_socket_fuzz.py (tests/integration/socket_fuzz.py):
mutated MQTT sessions from several connections while paho-mqtt clients publish QoS 1 and check that
nothing is lost; wills checked; the broker's log checked for tracebacks. Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.socket_fuzz import run_campaign  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of fuzzing (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8, help="fuzzing connections at a time (default 8)")
    parser.add_argument("--dir", help="where the broker's log goes (default: a temporary directory, kept)")
    args = parser.parse_args()
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lastwill-fuzz-"))
    started = time.monotonic()
    report = run_campaign(workdir, args.duration, args.seed, args.connections)
    print(report.summary())
    print(f"wall time {time.monotonic() - started:.0f} s; broker log: {workdir / 'broker.log'}")
    for e in report.errors:
        print("ERROR:", e)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
