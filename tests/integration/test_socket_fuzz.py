"""The socket fuzzer (tests/integration/socket_fuzz.py), a bounded run against a real broker process.

``LASTWILL_FUZZ_SECONDS`` sets the fuzzing time (default 15 s); ``scripts/fuzz_sockets.py`` runs
longer campaigns with the same code and prints the same figures.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.integration.socket_fuzz import (
    Session,
    make_session,
    mutate,
    parse_marker,
    run_campaign,
    will_marker,
)

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("LASTWILL_FUZZ_SECONDS", "15"))


def test_socket_fuzz_broker_survives_and_good_clients_lose_nothing_MQTT_3_1_2_7(tmp_path):
    report = run_campaign(tmp_path, SECONDS, seed=int(os.environ.get("LASTWILL_FUZZ_SEED", "1")), connections=8)
    print("\n" + report.summary())
    assert report.errors == []
    s = report.stats
    # the run did something: many connections, most of them mutated, some accepted, some refused
    assert s.connections >= 100 and s.sessions_mutated >= s.connections // 2
    assert s.accepted > 10 and s.closed_by_broker > 10
    assert report.good_acked > 100 and report.good_lost == 0
    assert report.wills_expected > 0  # the exactly-once check had cases to check


def test_will_markers_survive_no_mutation():
    assert parse_marker(will_marker(1234)) == 1234
    m = bytearray(will_marker(1234))
    m[len(b"fuzzwill:") + 1] ^= 1  # a flipped digit: not taken for another connection's will
    assert parse_marker(bytes(m)) is None


def test_sessions_are_seeded_and_mutations_change_the_bytes():
    a = [make_session(random.Random(7), n) for n in range(20)]
    b = [make_session(random.Random(7), n) for n in range(20)]
    assert [s.raw for s in a] == [s.raw for s in b]
    rng = random.Random(3)
    changed = 0
    for n in range(200):
        s: Session = make_session(rng, n)
        before = s.raw
        mutate(rng, s)
        changed += s.raw != before
        assert s.mutated == bool(s.ops)
    assert 120 < changed < 200  # most, not all: some sessions stay valid
