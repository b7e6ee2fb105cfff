"""Schema 5: a message is stored once, however many sessions wait for it (storage/msglog.py), on both
backends where the contract applies, and the SQLite store's tables and its migration from schema 4."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from lastwill.storage.base import (
    SCHEMA_VERSION,
    Batch,
    StoredDelivery,
    StoredMessage,
    StoredSession,
    StoreError,
)
from lastwill.storage.memory import MemoryStorage
from lastwill.storage.sqlite import DB_NAME, SqliteStorage
from tests.storage.test_contract import Backend

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    b.store.load()
    yield b
    b.store.close()


def shared(mid: int = 1, payload: bytes = b"x" * 1024, **kw) -> StoredMessage:
    return StoredMessage("t", payload, 1, False, kw.pop("properties", {"content_type": "a"}), "pub",
                         kw.pop("expiry_at_wall", None), kw.pop("is_will", False), mid)


def rows(store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_one_message_for_many_sessions_comes_back_to_each(backend):
    m = shared(expiry_at_wall=99.5)
    b = Batch()
    b.put_message(m)
    for i in range(50):
        b.put_session(StoredSession(f"s{i}", 3600, False))
        b.put_delivery(StoredDelivery(f"s{i}", 1, m, 1, bool(i % 2), (i,) if i % 3 else ()))
    backend.store.commit(b)
    state = backend.restart()
    assert len(state.deliveries) == 50 and state.next_message_id == 2 and not state.unreferenced_messages
    for i in range(50):
        [d] = state.deliveries[f"s{i}"]
        assert (d.seq, d.qos, d.retain, d.subscription_ids, d.packet_id) == (1, 1, bool(i % 2), (i,) if i % 3 else (), None)
        assert d.message == m
    assert len({id(items[0].message) for items in state.deliveries.values()}) == 1  # one object, shared


def test_sqlite_writes_the_payload_once_and_one_row_per_message(tmp_path):
    store = SqliteStorage(tmp_path)
    store.load()
    b = Batch()
    for n in range(1, 4):
        m = shared(n)
        b.put_message(m)
        for i in range(200):
            b.put_delivery(StoredDelivery(f"client-{i}", n, m, 1, False))
    store.commit(b)
    assert rows(store, "messages") == 3 and rows(store, "queued") == 3 and rows(store, "inflight") == 0
    entries = store.db.execute("SELECT sum(length(entries)) FROM queued").fetchone()[0]
    assert entries == 3 * 200 * 24  # 24 bytes a queued delivery
    store.close()


def test_queue_head_forgets_the_deliveries_before_it_and_inflight_rows_stay(backend):
    b = Batch()
    b.put_session(StoredSession("c", 3600, False))
    for seq in range(1, 6):
        m = shared(seq, payload=bytes([seq]))
        b.put_message(m)
        b.put_delivery(StoredDelivery("c", seq, m, 1, False))
    backend.store.commit(b)
    b = Batch()
    b.put_delivery(StoredDelivery("c", 1, shared(1, payload=b"\x01"), 1, False, (), 9, "puback"))
    b.delete_delivery("c", 2)
    b.delete_message(2)
    b.queue_heads["c"] = 3
    backend.store.commit(b)
    state = backend.restart()
    assert [(d.seq, d.packet_id) for d in state.deliveries["c"]] == [(1, 9), (3, None), (4, None), (5, None)]
    b = Batch()
    b.delete_delivery("c", 1)
    b.delete_delivery("c", 3)
    b.delete_message(1)
    b.delete_message(3)
    b.queue_heads["c"] = 4
    backend.store.commit(b)
    assert [d.seq for d in backend.restart().deliveries["c"]] == [4, 5]


def test_message_without_deliveries_reported_unreferenced(backend):
    b = Batch()
    b.put_message(shared(7))
    m = shared(8)
    b.put_message(m)
    b.put_delivery(StoredDelivery("c", 1, m, 1, False))
    backend.store.commit(b)
    state = backend.restart()
    assert state.unreferenced_messages == {7} and state.next_message_id == 9
    b = Batch()
    b.delete_message(7)
    b.delete_delivery("c", 1)
    b.delete_message(8)
    backend.store.commit(b)
    state = backend.restart()
    assert state.unreferenced_messages == set() and state.deliveries == {}


def test_a_new_session_of_the_same_client_does_not_inherit_the_old_ones_entries(backend):
    m = shared(1)
    b = Batch()
    b.put_session(StoredSession("c", 3600, False))
    b.put_session(StoredSession("other", 3600, False))
    b.put_message(m)
    b.put_delivery(StoredDelivery("c", 1, m, 1, False))
    b.put_delivery(StoredDelivery("other", 1, m, 1, False))  # keeps the message
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    b.put_session(StoredSession("c", 3600, False))
    backend.store.commit(b)
    state = backend.restart()
    assert "c" not in state.deliveries and [d.seq for d in state.deliveries["other"]] == [1]
    b = Batch()
    m2 = shared(2)
    b.put_message(m2)
    b.put_delivery(StoredDelivery("c", 1, m2, 1, False))  # seq 1 again, in the new session
    backend.store.commit(b)
    state = backend.restart()
    assert [d.message.msg_id for d in state.deliveries["c"]] == [2]


def test_failed_commit_leaves_the_message_log_as_the_file_is(tmp_path):
    store = SqliteStorage(tmp_path / "d")
    store.load()
    m = shared(1)
    b = Batch()
    b.put_message(m)
    b.put_delivery(StoredDelivery("c", 1, m, 1, False))
    store.commit(b)
    store.db.execute("PRAGMA max_page_count = %d" % store.db.execute("PRAGMA page_count").fetchone()[0])
    b = Batch()
    big = shared(2, payload=b"y" * 200_000)
    b.put_message(big)
    b.put_delivery(StoredDelivery("c", 2, big, 1, False, (), 5, "puback"))
    b.queue_heads["c"] = 3
    with pytest.raises(StoreError, match="commit failed"):
        store.commit(b)
    store.db.execute("PRAGMA max_page_count = 1000000")
    b = Batch()
    b.delete_delivery("c", 2)  # never stored: nothing in flight to delete, seq 1 still queued
    store.commit(b)
    store.close()
    state = SqliteStorage(tmp_path / "d").load()
    assert [(d.seq, d.message.msg_id) for d in state.deliveries["c"]] == [(1, 1)]


def _golden_copy(tmp_path: Path, name: str) -> Path:
    shutil.copytree(GOLDEN / name, tmp_path / name)
    return tmp_path / name


def test_golden_store_from_schema_4_with_queued_messages_migrates_to_current(tmp_path):
    """A schema-4 store with queued and in-flight deliveries (each row with its own copy of the
    message): migrated in place to one row per message; every delivery comes back as it was."""
    d = _golden_copy(tmp_path, "v4-queued")
    store = SqliteStorage(d)
    state = store.load()
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    tables = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "deliveries" not in tables and {"messages", "queued", "queues", "inflight"} <= tables
    assert rows(store, "messages") == 4  # "t/1" and the will, queued for both sessions, stored once each
    a = state.deliveries["a"]
    assert [(x.seq, x.message.topic, x.packet_id, x.state) for x in a] == [
        (1, "t/1", None, None), (2, "t/will", 3, "puback"), (3, "t/2", 4, "pubcomp"), (4, "t/3", None, None)]
    assert a[0].message.payload == b"one" * 100 and a[0].message.expiry_at_wall == 1_700_000_600.0
    assert a[0].message.properties == {"content_type": "text/plain", "user_property": [("k", "v")]}
    assert a[0].subscription_ids == (7,) and a[0].message.origin == "pub"
    assert a[1].retain and a[1].message.is_will and a[2].qos == 2
    b_items = state.deliveries["b"]
    assert [(x.seq, x.message.topic, x.retain, x.packet_id) for x in b_items] == [(1, "t/1", False, None),
                                                                                  (2, "t/will", True, None)]
    assert b_items[0].message is a[0].message and b_items[0].message.msg_id == a[0].message.msg_id
    assert state.next_message_id == 5 and not state.unreferenced_messages
    assert set(state.sessions) == {"a", "b"}
    # then it takes the writes of schema 5: a's queue moves on, b's session ends
    b = Batch()
    b.delete_delivery("a", 1)
    b.delete_delivery("a", 2)
    b.queue_heads["a"] = 4
    b.delete_session("b")
    b.delete_message(a[1].message.msg_id)  # the will: no session needs it any more
    m = StoredMessage("t/4", b"four", 1, False, msg_id=state.next_message_id)
    b.put_message(m)
    b.put_delivery(StoredDelivery("a", 5, m, 1, False))
    store.commit(b)
    store.close()
    state = SqliteStorage(d).load()
    assert [(x.seq, x.message.topic) for x in state.deliveries["a"]] == [(3, "t/2"), (4, "t/3"), (5, "t/4")]
    assert "b" not in state.deliveries and state.unreferenced_messages == {a[0].message.msg_id}


def test_failed_migration_from_schema_4_leaves_it_unchanged(tmp_path):
    d = _golden_copy(tmp_path, "v4-queued")
    db = sqlite3.connect(d / DB_NAME)
    db.execute("CREATE TABLE inflight (x)")  # in the way of the migration
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="migrating from schema version 4 to 5 failed.*unchanged"):
        SqliteStorage(d).load()
    db = sqlite3.connect(d / DB_NAME)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "4"
        assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 6
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'messages'").fetchall()
    finally:
        db.close()


def test_memory_backend_keeps_one_copy(tmp_path):
    store = MemoryStorage()
    m = shared(1)
    b = Batch()
    b.put_message(m)
    for i in range(10):
        b.put_delivery(StoredDelivery(f"c{i}", 1, m, 1, False))
    store.commit(b)
    assert len(store._messages) == 1
