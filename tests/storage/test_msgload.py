"""Start-up loads a session's first queued deliveries and leaves the rest in the store as runs
(storage/msgload.py): what comes back, the runs, the counts of backlog entries per message, and the
block path (rows that only extend their sessions' runs) agreeing with the entry-by-entry one."""

from __future__ import annotations

import random

import pytest

from lastwill.storage import msgload
from lastwill.storage.base import Batch, StoredMessage, StoredSession
from lastwill.storage.sqlite import SqliteStorage


def flood(store, sessions: list[str], first_mid: int, n: int, seq0: dict[str, int], flags: int = 1) -> None:
    b = Batch()
    for s in sessions:
        b.put_session(StoredSession(s, 3600, False))
    for k in range(n):
        mid = first_mid + k
        b.put_message(StoredMessage("t", b"x" * 10, 1, False, msg_id=mid))
        b.queued[mid] = (list(sessions), [seq0[s] + k for s in sessions], [flags] * len(sessions),
                         [0] * len(sessions), [()] * len(sessions))
    for s in sessions:
        seq0[s] += n
    store.commit(b)


def snapshot(path) -> tuple:
    store = SqliteStorage(path)
    s = store.load()
    store.close()
    return ({c: [(d.seq, d.message.msg_id, d.packet_id, d.subscription_ids) for d in v] for c, v in s.deliveries.items()},
            {c: ([list(r) for r in b.runs], b.count, b.bytes) for c, b in s.backlogs.items()},
            dict(s.backlog_refs), s.unreferenced_messages)


def test_a_flood_leaves_one_run_per_session_beyond_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(msgload, "EAGER_QUEUED", 10)
    store = SqliteStorage(tmp_path / "d")
    store.load()
    seqs = {f"s{i}": 1 for i in range(4)}
    flood(store, list(seqs), 1, 100, seqs)
    store.close()
    deliveries, backlogs, refs, unreferenced = snapshot(tmp_path / "d")
    for s in seqs:
        assert [d[:2] for d in deliveries[s]] == [(k, k) for k in range(1, 11)]
        assert backlogs[s] == ([[11, 11, 90, 1, None]], 90, 90 * 11)
    assert refs == {mid: 4 for mid in range(11, 101)} and not unreferenced


@pytest.mark.parametrize("seed", range(20))
def test_the_block_path_and_the_entry_path_load_the_same(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(msgload, "EAGER_QUEUED", 7)
    rng = random.Random(seed)
    store = SqliteStorage(tmp_path / "d")
    store.load()
    names = [f"s{i}" for i in range(5)]
    seqs = {s: 1 for s in names}
    heads = {s: 1 for s in names}
    mid = 1
    for _ in range(8):
        group = rng.sample(names, rng.randrange(1, 6))
        n = rng.randrange(1, 30)
        flood(store, group, mid, n, seqs, flags=rng.choice([1, 1, 2, 5]))
        mid += n
        if rng.random() < 0.3:  # one with subscription identifiers, one recorded later, one done out of order
            b = Batch()
            b.put_message(StoredMessage("t", b"y", 1, False, msg_id=mid))
            b.queued[mid] = ([group[0]], [seqs[group[0]]], [1], [0], [(7,)])
            seqs[group[0]] += 1
            b.queued[1] = ([group[-1]], [seqs[group[-1]]], [1], [0], [()])
            seqs[group[-1]] += 1
            b.delete_delivery(group[0], seqs[group[0]] - 3)
            store.commit(b)
            mid += 1
        if rng.random() < 0.4:  # a queue partly drained: its entries below the head are dead
            s = rng.choice(names)
            heads[s] = max(heads[s], seqs[s] - rng.randrange(0, 25))
            b = Batch()
            b.queue_heads[s] = heads[s]
            store.commit(b)
    store.close()
    fast = snapshot(tmp_path / "d")
    monkeypatch.setattr(msgload._Block, "takes", lambda *a: False)
    assert snapshot(tmp_path / "d") == fast
