"""Messages done while a batch also writes deliveries (a queue draining, a flood) are recorded in
``reclaim`` and deleted RECLAIM_AT at a time (storage/msglog.py): a crash leaves them recorded, the
loader knows them for done (not unreferenced, not live), and a message needed again is kept."""

from __future__ import annotations

from lastwill.storage.base import Batch, StoredMessage, StoredSession
from lastwill.storage.msglog import RECLAIM_AT
from lastwill.storage.sqlite import SqliteStorage

PUBACK = 1 << 3


def rows(store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def queue(store, n: int) -> None:
    b = Batch()
    b.put_session(StoredSession("c", 3600, False))
    for seq in range(1, n + 1):
        b.put_message(StoredMessage("t", b"x" * 100, 1, False, msg_id=seq))
        b.queued[seq] = (["c"], [seq], [1], [0], [()])
    store.commit(b)


def drain_turn(store, acked: range, sent: range) -> None:
    """One turn of a drain: ``acked`` done (their messages too), ``sent`` sent."""
    b = Batch()
    for seq in acked:
        b.delete_delivery("c", seq)
        b.delete_message(seq)
    b.sent["c"] = [(seq, seq, 1 | PUBACK, seq, ()) for seq in sent]
    b.queue_heads["c"] = sent.stop
    store.commit(b)


def test_done_messages_are_deleted_in_bulk_and_survive_a_crash_as_done(tmp_path):
    store = SqliteStorage(tmp_path / "d")
    store.load()
    n = RECLAIM_AT + 300
    queue(store, n)
    drain_turn(store, range(0), range(1, 21))
    for k in range(1, RECLAIM_AT // 20):  # 20 acknowledged and 20 sent per turn
        drain_turn(store, range(20 * k - 19, 20 * k + 1), range(20 * k + 1, 20 * k + 21))
    done = 20 * (RECLAIM_AT // 20 - 1)
    assert rows(store, "messages") == n and rows(store, "reclaim") >= 1  # recorded, not deleted yet
    store.close()  # (a crash: nothing more reaches the file)
    store = SqliteStorage(tmp_path / "d")
    state = store.load()
    assert not state.unreferenced_messages  # known for done, not "unreferenced"
    assert [d.seq for d in state.deliveries["c"]][:1] == [done + 1]
    assert len(store.log.reclaim) == done
    drain_turn(store, range(done + 1, done + 41), range(done + 21, done + 61))  # past RECLAIM_AT: deleted
    assert rows(store, "messages") == n - done - 40 and rows(store, "reclaim") == 0
    b = Batch()  # the rest acknowledged, nothing sent: deleted at once
    for seq in range(done + 41, n + 1):
        b.delete_delivery("c", seq)
        b.delete_message(seq)
    b.queue_heads["c"] = n + 1
    store.commit(b)
    assert rows(store, "messages") == 0 and rows(store, "reclaim") == 0
    store.close()


def test_a_message_needed_again_is_not_deleted_with_the_others(tmp_path):
    store = SqliteStorage(tmp_path / "d")
    store.load()
    queue(store, 30)
    drain_turn(store, range(0), range(1, 11))
    drain_turn(store, range(1, 11), range(11, 21))  # 1..10 done: recorded in reclaim
    assert rows(store, "reclaim") == 1 and rows(store, "messages") == 30
    b = Batch()  # message 5 queued again (a retained message to a new subscriber, say): written again
    m = StoredMessage("t", b"again", 1, False, msg_id=5)
    b.put_message(m)
    b.put_session(StoredSession("d", 3600, False))
    b.queued[5] = (["d"], [1], [1], [0], [()])
    store.commit(b)
    assert 5 not in store.log.reclaim
    b = Batch()  # 11..20 done, nothing sent: everything recorded is deleted, but not 5
    for seq in range(11, 21):
        b.delete_delivery("c", seq)
        b.delete_message(seq)
    b.queue_heads["c"] = 21
    store.commit(b)
    store.close()
    state = SqliteStorage(tmp_path / "d").load()
    assert [(d.seq, d.message.payload) for d in state.deliveries["d"]] == [(1, b"again")]
    assert [d.seq for d in state.deliveries["c"]] == list(range(21, 31)) and not state.unreferenced_messages


def test_golden_store_from_schema_6_with_sent_runs_migrates_to_7(tmp_path):
    """tests/storage/golden/v6-queued, written through the core by the schema-6 store (main 866eedf):
    a's t/1 and t/3 sent from its queue (its sent runs), t/2 awaiting PUBCOMP (a row), t/4 and t/5
    queued; b's five queued; c's four in flight at once with t/2 acknowledged out of order. After the
    migration every delivery is as it was, and the reclaim table takes the done messages."""
    import shutil
    from pathlib import Path

    from lastwill.storage.base import SCHEMA_VERSION

    d = tmp_path / "v6-queued"
    shutil.copytree(Path(__file__).parent / "golden" / "v6-queued", d)
    store = SqliteStorage(d)
    state = store.load()
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
        str(SCHEMA_VERSION) == "7"

    def view(client):
        return [(x.seq, x.message.topic, x.packet_id, x.state) for x in state.deliveries[client]]

    assert view("a") == [(1, "t/1", 1, "puback"), (2, "t/2", 2, "pubcomp"), (3, "t/3", 3, "puback"),
                         (4, "t/4", None, None), (5, "t/5", None, None)]
    assert view("b") == [(s, f"t/{s}", None, None) for s in range(1, 6)]
    assert view("c") == [(1, "t/1", 1, "puback"), (3, "t/3", 3, "puback"), (4, "t/4", 4, "puback"),
                         (5, "t/5", 5, "puback")]
    assert store.log.queues["a"].runs == [[1, 1, 1], [3, 3, 3]]
    b_ids = {x.seq: x.message.msg_id for x in state.deliveries["b"]}
    b = Batch()  # a busy batch: b's session ends (t/2 is then needed by a and c only), a's t/4 is sent
    b.delete_session("b")
    b.sent["a"] = [(4, b_ids[4], 1 | PUBACK, 4, (7,))]
    b.queue_heads["a"] = 5
    b.delete_delivery("c", 3)
    b.delete_delivery("a", 3)
    b.delete_message(b_ids[3])  # t/3: a, b and c done with it
    store.commit(b)
    assert store.log.reclaim == {b_ids[3]} and rows(store, "reclaim") == 1
    store.close()
    state = SqliteStorage(d).load()
    assert view("a") == [(1, "t/1", 1, "puback"), (2, "t/2", 2, "pubcomp"), (4, "t/4", 4, "puback"),
                         (5, "t/5", None, None)]
    assert not state.unreferenced_messages and "b" not in state.deliveries
