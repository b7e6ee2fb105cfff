#!/usr/bin/env python3
"""Run ``lastwill`` with the cyclic garbage collector measured or switched off (no change to src/).

    GC_PROBE=time .venv/bin/python benchmarks/gc_probe.py serve --listen 127.0.0.1:1883 --log-level warning
    GC_PROBE=off  .venv/bin/python benchmarks/gc_probe.py serve ...

``time`` (default) times every collection and, at exit (SIGTERM is a clean exit), prints to stderr
how many collections of each generation ran and how long they took; ``off`` calls gc.disable().
Drive it with benchmarks/loadgen and compare the delivered rates: that is how finding 4 in
docs/benchmarks.md was measured.
"""

from __future__ import annotations

import atexit
import gc
import os
import runpy
import sys
import time

MODE = os.environ.get("GC_PROBE", "time")
counts = [0, 0, 0]
seconds = [0.0, 0.0, 0.0]
_started = [0.0]
_t0 = time.perf_counter()


def _callback(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        g = info["generation"]
        counts[g] += 1
        seconds[g] += time.perf_counter() - _started[0]


def _report() -> None:
    sys.stderr.write(f"gc_probe: mode={MODE} wall={time.perf_counter() - _t0:.2f}s "
                     f"collections(gen0,1,2)={counts} seconds={[round(s, 3) for s in seconds]}\n")


if MODE == "off":
    gc.disable()
else:
    gc.callbacks.append(_callback)
atexit.register(_report)
sys.argv = ["lastwill"] + sys.argv[1:]
runpy.run_module("lastwill", run_name="__main__")
