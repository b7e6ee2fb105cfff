"""Schema 6: a queued delivery sent is in flight by its session's runs of sent seqs (``queues.sent``),
not by a row of its own: the runs, their packet ids across the wrap at 65535, acknowledgements in and
out of order, the bound on the runs, both backends, and the migration of a golden schema-5 store."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from lastwill.storage.base import SCHEMA_VERSION, Batch, StoredDelivery, StoredMessage, StoredSession
from lastwill.storage.msglog import RUNS_LIMIT, pack_runs, run_add, run_remove, runs_remove, unpack_runs
from lastwill.storage.sqlite import DB_NAME, SqliteStorage
from tests.storage.test_contract import Backend

GOLDEN = Path(__file__).parent / "golden"
PUBACK = 1 << 3  # flags: qos | retain << 2 | state code << 3 (1: puback, 2: pubrec)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    b.store.load()
    yield b
    b.store.close()


def rows(store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def queue_of(store, n: int, client: str = "c") -> None:
    """``n`` queued QoS 1 deliveries (seqs 1..n, message ids 1..n) of one session."""
    b = Batch()
    b.put_session(StoredSession(client, 3600, False))
    for seq in range(1, n + 1):
        m = StoredMessage("t", bytes([seq % 256]), 1, False, msg_id=seq)
        b.put_message(m)
        b.queued[seq] = ([client], [seq], [1], [0], [()])
    store.commit(b)


def send(store, seqs, pids, head: int, client: str = "c") -> None:
    b = Batch()
    b.sent[client] = [(seq, seq, 1 | PUBACK, pid, ()) for seq, pid in zip(seqs, pids, strict=True)]
    b.queue_heads[client] = head
    store.commit(b)


def ack(store, seqs, client: str = "c") -> None:
    b = Batch()
    for seq in seqs:
        b.delete_delivery(client, seq)
        b.delete_message(seq)
    store.commit(b)


def test_runs_follow_the_packet_ids_across_the_wrap_and_split_on_out_of_order_acks():
    runs: list[list[int]] = []
    for seq, pid in [(10, 65534), (11, 65535), (12, 1), (13, 2), (15, 7), (16, 8)]:
        run_add(runs, seq, pid)
    assert runs == [[10, 13, 65534], [15, 16, 7]]  # 14 was not sent (a QoS 0 one, say)
    run_remove(runs, 12)  # out of order: the run splits, the packet ids stay
    assert runs == [[10, 11, 65534], [13, 13, 2], [15, 16, 7]]
    run_remove(runs, 10)  # in order: the first run moves on
    assert runs == [[11, 11, 65535], [13, 13, 2], [15, 16, 7]]
    assert unpack_runs(pack_runs(runs)) == {11: 65535, 13: 2, 15: 7, 16: 8}
    run_remove(runs, 99)  # not in flight: nothing
    run_add(runs, 12, 1)  # before the last run (not done by the core): kept in order
    assert runs == [[11, 11, 65535], [12, 12, 1], [13, 13, 2], [15, 16, 7]]
    assert unpack_runs(pack_runs(runs)) == {11: 65535, 12: 1, 13: 2, 15: 7, 16: 8}


def test_sent_deliveries_come_back_in_flight_with_their_packet_ids_MQTT_4_4_0_1(backend):
    queue_of(backend.store, 6)
    send(backend.store, [1, 2, 3, 4], [65535, 1, 2, 3], head=5)
    ack(backend.store, [1, 3])  # in order, then out of order
    state = backend.restart()
    assert [(d.seq, d.packet_id, d.state) for d in state.deliveries["c"]] == [
        (2, 1, "puback"), (4, 3, "puback"), (5, None, None), (6, None, None)]
    assert state.deliveries["c"][0].message.payload == b"\x02"
    ack(backend.store, [2, 4])
    state = backend.restart()
    assert [(d.seq, d.packet_id) for d in state.deliveries["c"]] == [(5, None), (6, None)]


def test_a_sent_delivery_is_no_row_and_a_later_state_is_one(tmp_path):
    store = SqliteStorage(tmp_path / "d")
    store.load()
    queue_of(store, 3)
    send(store, [1, 2], [1, 2], head=3)
    assert rows(store, "inflight") == 0
    assert store.db.execute("SELECT sent FROM queues").fetchone()[0] == pack_runs([[1, 2, 1]])
    b = Batch()  # PUBREC came for 2 (a QoS 2 delivery, say): its state is a row
    b.put_delivery(StoredDelivery("c", 2, StoredMessage("t", b"\x02", 1, False, msg_id=2), 2, False, (), 2,
                                  "pubcomp"))
    store.commit(b)
    assert rows(store, "inflight") == 1 and store.log.queues["c"].runs == [[1, 1, 1]]
    store.close()
    store = SqliteStorage(tmp_path / "d")
    state = store.load()
    assert [(d.seq, d.packet_id, d.state) for d in state.deliveries["c"]] == [
        (1, 1, "puback"), (2, 2, "pubcomp"), (3, None, None)]
    ack(store, [1, 2, 3])
    assert rows(store, "inflight") == 0 and store.db.execute("SELECT sent FROM queues").fetchone()[0] is None
    store.close()


def test_past_runs_limit_the_sent_deliveries_become_rows(tmp_path):
    """Every other one acknowledged: the runs split until RUNS_LIMIT, then the session's sent
    deliveries become inflight rows (its queues row stays small)."""
    store = SqliteStorage(tmp_path / "d")
    store.load()
    n = 2 * RUNS_LIMIT + 10
    queue_of(store, n)
    send(store, range(1, n + 1), range(1, n + 1), head=n + 1)
    ack(store, range(2, n + 1, 2))
    q = store.log.queues["c"]
    assert q.runs == [] and q.sent == {} and len(q.rows) == rows(store, "inflight") == n // 2
    store.close()
    state = SqliteStorage(tmp_path / "d").load()
    assert [(d.seq, d.packet_id) for d in state.deliveries["c"]] == [(s, s) for s in range(1, n + 1, 2)]


def test_golden_store_from_schema_5_with_queued_and_sent_deliveries_migrates(tmp_path):
    """tests/storage/golden/v5-queued (written by the schema-5 store through the core): a sent one
    with an inflight row (a awaits PUBACK for t/1), QoS 2 awaiting PUBCOMP, queued ones, entries in
    flight at once with one acknowledged out of order (c): all as they were after the migration."""
    d = tmp_path / "v5-queued"
    shutil.copytree(GOLDEN / "v5-queued", d)
    store = SqliteStorage(d)
    state = store.load()
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
        str(SCHEMA_VERSION) == "7"

    def view(items):
        return [(x.seq, x.message.topic, x.packet_id, x.state) for x in items]

    assert view(state.deliveries["a"]) == [(1, "t/1", 1, "puback"), (2, "t/2", 2, "pubcomp"), (3, "t/3", None, None),
                                           (4, "t/4", None, None)]
    assert [x.subscription_ids for x in state.deliveries["a"]] == [(7,)] * 4
    assert view(state.deliveries["b"]) == [(s, f"t/{s}", None, None) for s in range(1, 5)]
    assert view(state.deliveries["c"]) == [(1, "t/1", 1, "puback"), (3, "t/3", 3, "puback"), (4, "t/4", 4, "puback")]
    assert state.deliveries["a"][0].message is state.deliveries["b"][0].message
    assert state.deliveries["a"][0].message.properties == {"content_type": "text/plain"}
    # then it takes schema 6's writes: a's t/3 is sent (no row), t/1 acknowledged
    b = Batch()
    b.sent["a"] = [(3, state.deliveries["a"][2].message.msg_id, 1 | PUBACK, 3, (7,))]  # t/3 was QoS 1
    b.queue_heads["a"] = 4
    b.delete_delivery("a", 1)
    store.commit(b)
    assert rows(store, "inflight") == 1  # a's t/2 (PUBCOMP); t/1's row deleted, t/3 none
    store.close()
    state = SqliteStorage(d).load()
    assert view(state.deliveries["a"]) == [(2, "t/2", 2, "pubcomp"), (3, "t/3", 3, "puback"), (4, "t/4", None, None)]


def test_failed_migration_from_schema_5_leaves_it_unchanged(tmp_path):
    d = tmp_path / "v5-queued"
    shutil.copytree(GOLDEN / "v5-queued", d)
    db = sqlite3.connect(d / DB_NAME)
    db.execute("DROP TABLE queues")  # in the way of the migration (not damaged for SQLite)
    db.execute("CREATE VIEW queues AS SELECT 1 AS x")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="migrating from schema version 5 to 6 failed.*unchanged"):
        SqliteStorage(d).load()
    db = sqlite3.connect(d / DB_NAME)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "5"
    finally:
        db.close()


def test_runs_remove_in_order_and_out_of_order_as_one_by_one():
    rng = random.Random(5)
    for _ in range(200):
        runs_a: list[list[int]] = []
        seqs = sorted(rng.sample(range(1, 60), rng.randrange(1, 40)))
        pid = rng.randrange(65500, 65536)
        for seq in seqs:
            run_add(runs_a, seq, pid)
            pid = pid % 65535 + 1 if rng.random() < 0.9 else rng.randrange(1, 65536)
        runs_b = [list(r) for r in runs_a]
        gone = sorted(rng.sample(seqs, rng.randrange(0, len(seqs) + 1)))
        for seq in gone:
            run_remove(runs_a, seq)
        runs_remove(runs_b, gone)
        assert unpack_runs(pack_runs(runs_b)) == unpack_runs(pack_runs(runs_a))
        assert all(r[0] <= r[1] for r in runs_b)
