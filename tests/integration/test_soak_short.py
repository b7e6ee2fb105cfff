"""The memory soak (benchmarks/soak_memory.py), a short run: a small budget, 25 seconds of a
persistent-session flood and the socket fuzzer against `lastwill serve`. The script's own checks must
pass (the broker stays up and answers, its peak RSS stays under the budget plus the overhead, the
queued-bytes account within 10 % of the RSS it costs); the full run and its figures are in
docs/security.md "Soak: memory under a budget"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent.parent


def test_short_soak_stays_within_the_budget(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak_memory.py"), "--duration", "25",
                           "--budget-mib", "64", "--sessions", "300", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    result = json.loads(out[:out.rindex("}") + 1])
    assert result["errors"] == []
    assert result["accounting"]["refused_0x97"] > 0  # the queue bound was reached
    assert result["soak"]["limit_hits"]["max_total_queued_bytes"] > 0
    assert result["rss_peak_mib"] < 64 + 128
