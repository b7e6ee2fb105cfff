"""One contract for every storage backend, plus the SQLite store's damaged-file behaviour."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from lastwill.storage.base import (
    SCHEMA_VERSION,
    TIMELINE_PER_CLIENT,
    USERNAME_UNKNOWN,
    Batch,
    StoredDelivery,
    StoredEvent,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    StoredWill,
    StoreError,
)
from lastwill.storage.memory import MemoryStorage
from lastwill.storage.sqlite import DB_NAME, SqliteStorage

GOLDEN = Path(__file__).parent / "golden"


class Backend:
    """Opens a backend, and 'restarts' it: a new instance on the same data (memory: the same object)."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind = kind
        self.dir = tmp_path / "data"
        self.store = self._make()

    def _make(self):
        return MemoryStorage() if self.kind == "memory" else SqliteStorage(self.dir)

    def restart(self):
        if self.kind == "memory":
            return self.store.load()
        self.store.close()
        self.store = self._make()
        return self.store.load()


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    b.store.load()
    yield b
    b.store.close()


def session(client_id="c", **kw) -> StoredSession:
    defaults = dict(expiry_interval=3600, connected=True, will=StoredWill(
        "dead/c", b"gone", 1, True, {"user_property": [("k", "v")], "will_delay_interval": 5,
                                     "message_expiry_interval": 60}),
        subscriptions=[StoredSubscription("a/+", 1, True, False, 1, 7), StoredSubscription("$share/g/b", 2)],
        awaiting_pubrel=[3, 9], next_packet_id=42)
    defaults.update(kw)
    return StoredSession(client_id, **defaults)


def message(topic="t", payload=b"p", **kw) -> StoredMessage:
    return StoredMessage(topic, payload, kw.pop("qos", 1), kw.pop("retain", False), **kw)


def test_empty_store_loads_empty(backend):
    state = backend.restart()
    assert state.sessions == {} and state.deliveries == {} and state.retained == {}


def test_session_with_will_and_subscriptions_round_trips(backend):
    b = Batch()
    s = session()
    b.put_session(s)
    backend.store.commit(b)
    state = backend.restart()
    assert state.sessions == {"c": s}


def test_pending_will_deadline_stored_as_wall_clock(backend):
    s = session(connected=False, disconnected_at_wall=1_700_000_000.5)
    s.will.fire_at_wall = 1_700_000_010.5
    s.will.cause = "connection lost: EOF"
    b = Batch()
    b.put_session(s)
    backend.store.commit(b)
    got = backend.restart().sessions["c"]
    assert got.will.fire_at_wall == 1_700_000_010.5 and got.will.cause == "connection lost: EOF"
    assert got.disconnected_at_wall == 1_700_000_000.5


def test_session_replaced_and_deleted(backend):
    b = Batch()
    b.put_session(session())
    backend.store.commit(b)
    b = Batch()
    b.put_session(session(will=None, subscriptions=[]))
    backend.store.commit(b)
    assert backend.restart().sessions["c"].will is None
    assert backend.restart().sessions["c"].subscriptions == []
    b = Batch()
    b.delete_session("c")
    backend.store.commit(b)
    assert backend.restart().sessions == {}


def test_deliveries_queue_order_and_inflight_state(backend):
    b = Batch()
    b.put_session(session())
    for seq in (3, 1, 2):
        b.put_delivery(StoredDelivery("c", seq, message(payload=str(seq).encode(), properties={
            "content_type": "x", "user_property": [("a", "1")]}, expiry_at_wall=5.5), 1, False, (4, 5)))
    backend.store.commit(b)
    b = Batch()
    b.put_delivery(StoredDelivery("c", 1, message(payload=b"1"), 1, True, (), packet_id=17, state="puback"))
    b.delete_delivery("c", 2)
    backend.store.commit(b)
    items = backend.restart().deliveries["c"]
    assert [(d.seq, d.packet_id, d.state) for d in items] == [(1, 17, "puback"), (3, None, None)]
    assert items[1].message.properties == {"content_type": "x", "user_property": [("a", "1")]}
    assert items[1].subscription_ids == (4, 5) and items[1].message.expiry_at_wall == 5.5


def test_delivery_put_then_deleted_in_one_batch_is_gone(backend):
    b = Batch()
    b.put_delivery(StoredDelivery("c", 1, message(), 1, False))
    backend.store.commit(b)
    b = Batch()
    b.put_delivery(StoredDelivery("c", 1, message(), 1, False, (), 5, "puback"))
    b.delete_delivery("c", 1)
    backend.store.commit(b)
    assert backend.restart().deliveries == {}


def test_deleting_session_deletes_its_deliveries(backend):
    b = Batch()
    b.put_session(session())
    b.put_delivery(StoredDelivery("c", 1, message(), 1, False))
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    backend.store.commit(b)
    state = backend.restart()
    assert state.deliveries == {} and state.sessions == {}


def test_session_deleted_then_put_in_one_batch_replaces_it_without_its_deliveries(backend):
    # a client's new session (Clean Start 1) replacing its old one in the same commit
    b = Batch()
    b.put_session(session())
    b.put_delivery(StoredDelivery("c", 1, message(payload=b"old"), 1, False))
    b.put_delivery(StoredDelivery("c", 2, message(payload=b"old-inflight"), 1, False, (), 3, "puback"))
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    b.put_session(session(will=None, subscriptions=[]))
    b.put_delivery(StoredDelivery("c", 1, message(payload=b"new"), 1, False))
    backend.store.commit(b)
    state = backend.restart()
    assert state.sessions["c"].subscriptions == [] and state.sessions["c"].will is None
    assert [d.message.payload for d in state.deliveries["c"]] == [b"new"]


def test_subscriptions_replaced_emptied_and_deleted_across_restarts(backend):
    # the SQLite store skips the DELETE of subscriptions it knows are not there: what it knows must
    # survive a restart (it is read back from the file) and follow every change
    b = Batch()
    b.put_session(session())
    backend.store.commit(b)
    backend.restart()
    b = Batch()
    b.put_session(session(subscriptions=[StoredSubscription("x/#", 0)]))
    backend.store.commit(b)
    assert backend.restart().sessions["c"].subscriptions == [StoredSubscription("x/#", 0)]
    b = Batch()
    b.put_session(session(subscriptions=[]))
    backend.store.commit(b)
    assert backend.restart().sessions["c"].subscriptions == []
    b = Batch()
    b.put_session(session(subscriptions=[StoredSubscription("y", 1)]))
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    backend.store.commit(b)
    b = Batch()
    b.put_session(session(subscriptions=[]))  # the same id again, never subscribed since
    backend.store.commit(b)
    assert backend.restart().sessions["c"].subscriptions == []


def test_deliveries_deleted_with_their_session_after_a_restart(backend):
    b = Batch()
    b.put_session(session())
    b.put_delivery(StoredDelivery("c", 1, message(), 1, False))
    b.put_delivery(StoredDelivery("c", 2, message(), 1, False))
    backend.store.commit(b)
    backend.restart()
    b = Batch()
    b.delete_delivery("c", 1)
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    backend.store.commit(b)
    b = Batch()
    b.put_session(session(client_id="c"))
    backend.store.commit(b)
    assert backend.restart().deliveries == {}


def test_retained_put_replace_delete(backend):
    b = Batch()
    b.put_retained(message("r/1", b"one", retain=True, expiry_at_wall=99.0, origin="x"))
    b.put_retained(message("r/2", b"two", retain=True, is_will=True))
    backend.store.commit(b)
    b = Batch()
    b.put_retained(message("r/1", b"uno", retain=True))
    b.delete_retained("r/2")
    backend.store.commit(b)
    state = backend.restart()
    assert list(state.retained) == ["r/1"] and state.retained["r/1"].payload == b"uno"


def test_meta_values(backend):
    b = Batch()
    b.meta["clean_shutdown"] = "1"
    backend.store.commit(b)
    assert backend.restart().meta["clean_shutdown"] == "1"


def event(client_id="c", seq=1, kind="armed", **kw) -> StoredEvent:
    return StoredEvent(client_id, seq, kw.pop("at_wall", 1_700_000_000.0 + seq), kind,
                       kw.pop("detail", f"event {seq}"), kw.pop("rule", "MQTT-3.1.2-7"), kw.pop("data", {}))


def test_timeline_events_round_trip_in_seq_order(backend):
    b = Batch()
    b.put_event(event(seq=2, kind="connection-ended", detail="connection lost: EOF", rule=None,
                      data={"cause": "eof"}))
    b.put_event(event(seq=1, data={"topic": "dead/c", "qos": 1, "retain": False, "delay": 30}))
    b.put_event(event("other", seq=3, kind="deferred", data={"fire_at": 1_700_000_030.5}))
    backend.store.commit(b)
    state = backend.restart()
    assert state.timeline["c"] == [
        event(seq=1, data={"topic": "dead/c", "qos": 1, "retain": False, "delay": 30}),
        event(seq=2, kind="connection-ended", detail="connection lost: EOF", rule=None, data={"cause": "eof"})]
    assert state.timeline["other"][0].data == {"fire_at": 1_700_000_030.5}
    assert state.timeline["other"][0].at_wall == 1_700_000_003.0


def test_timeline_keeps_the_last_events_of_each_client(backend):
    n = TIMELINE_PER_CLIENT + 10
    for start in (1, 40):  # two commits: the bound holds across batches
        b = Batch()
        for seq in range(start, min(start + 39, n + 1)):
            b.put_event(event(seq=seq))
        backend.store.commit(b)
    b = Batch()
    b.put_event(event("quiet", seq=n + 1))
    backend.store.commit(b)
    state = backend.restart()
    assert [e.seq for e in state.timeline["c"]] == list(range(n - TIMELINE_PER_CLIENT + 1, n + 1))
    assert [e.seq for e in state.timeline["quiet"]] == [n + 1]


def test_timeline_outlives_the_session(backend):
    b = Batch()
    b.put_session(session())
    b.put_event(event(seq=1))
    backend.store.commit(b)
    b = Batch()
    b.delete_session("c")
    b.put_event(event(seq=2, kind="published"))
    backend.store.commit(b)
    state = backend.restart()
    assert state.sessions == {} and [e.kind for e in state.timeline["c"]] == ["armed", "published"]


def test_timeline_forgotten_then_new_events_in_one_batch(backend):
    b = Batch()
    b.put_event(event(seq=1))
    b.put_event(event("keep", seq=2))
    backend.store.commit(b)
    b = Batch()
    b.put_event(event(seq=3))  # dropped by the delete that follows
    b.delete_timeline("c")
    b.put_event(event(seq=4, kind="no-will"))
    backend.store.commit(b)
    state = backend.restart()
    assert [(e.seq, e.kind) for e in state.timeline["c"]] == [(4, "no-will")]
    assert [e.seq for e in state.timeline["keep"]] == [2]


def test_will_cause_kind_round_trips(backend):
    s = session(connected=False)
    s.will.fire_at_wall, s.will.cause, s.will.cause_kind = 5.0, "keep-alive timeout (10s x 1.5)", "keep_alive"
    b = Batch()
    b.put_session(s)
    backend.store.commit(b)
    assert backend.restart().sessions["c"].will.cause_kind == "keep_alive"


def test_unicode_and_binary_survive(backend):
    b = Batch()
    b.put_retained(message("häuser/🏠", bytes(range(256)), retain=True, properties={"correlation_data": b"\x00\xff"}))
    backend.store.commit(b)
    m = backend.restart().retained["häuser/🏠"]
    assert m.payload == bytes(range(256)) and m.properties["correlation_data"] == b"\x00\xff"


# ---- the SQLite store refuses damaged files with a clear message -------------------------------------


def _write_golden_valid(directory: Path) -> Path:
    store = SqliteStorage(directory)
    store.load()
    b = Batch()
    b.put_session(session(username="alice"))  # the user name: since schema version 3
    b.put_retained(message("r", b"x", retain=True))
    b.put_event(event(seq=1, data={"topic": "dead/c", "qos": 1}))  # since schema version 2
    store.commit(b)
    store.close()
    return directory / DB_NAME


def _golden_copy(tmp_path: Path, name: str) -> Path:
    """Stores are opened on a copy: opening migrates in place, and the golden files must not change."""
    shutil.copytree(GOLDEN / name, tmp_path / name)
    return tmp_path / name


def _schema_version(directory: Path) -> str:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        db.close()


def test_golden_store_from_schema_1_migrates_to_current(tmp_path):
    """A store written by lastwill with schema version 1, kept in the repository: it is migrated in
    place, keeps everything it held, and then takes the data that only the new schema has."""
    d = _golden_copy(tmp_path, "v1")
    assert _schema_version(d) == "1"
    store = SqliteStorage(d)
    state = store.load()
    assert _schema_version(d) == str(SCHEMA_VERSION) == "7"
    # everything written with schema 1 is still there; the user name, never stored, is unknown
    assert state.sessions["c"] == session(username=USERNAME_UNKNOWN)
    assert state.sessions["c"].will.cause_kind is None
    assert list(state.retained) == ["r"] and state.timeline == {}
    b = Batch()
    s = session(connected=False, username="alice")
    s.will.fire_at_wall, s.will.cause, s.will.cause_kind = 9.0, "connection lost: EOF", "eof"
    b.put_session(s)
    b.put_event(event(seq=1))
    store.commit(b)
    store.close()
    state = SqliteStorage(d).load()  # and it opens again as a current store
    assert state.sessions["c"].will.cause_kind == "eof" and [e.seq for e in state.timeline["c"]] == [1]
    assert state.sessions["c"].username == "alice"


def test_golden_store_from_schema_2_migrates_to_current(tmp_path):
    """A store written with schema version 2 (will timeline, no user names): migrated in place; its
    sessions come back with their user name unknown (not anonymous), and it is stored from then on."""
    d = _golden_copy(tmp_path, "v2")
    assert _schema_version(d) == "2"
    store = SqliteStorage(d)
    state = store.load()
    assert _schema_version(d) == str(SCHEMA_VERSION) == "7"
    assert state.sessions["c"] == session(username=USERNAME_UNKNOWN)
    assert [(e.kind, e.data) for e in state.timeline["c"]] == [("armed", {"topic": "dead/c", "qos": 1})]
    b = Batch()
    b.put_session(session(username="bob"))
    store.commit(b)
    store.close()
    assert SqliteStorage(d).load().sessions["c"].username == "bob"


def _tables(directory: Path) -> dict[str, str]:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index') AND sql IS NOT NULL"))
    finally:
        db.close()


def test_golden_store_from_schema_3_migrates_to_current(tmp_path):
    """A store written with schema version 3: its sessions and timeline tables are rebuilt in the
    form that is cheaper to write (sessions WITHOUT ROWID, the timeline in seq order with no index on
    client_id), keeping every row; then it takes new writes and deletes events by seq."""
    d = _golden_copy(tmp_path, "v3")
    assert _schema_version(d) == "3" and "WITHOUT ROWID" not in _tables(d)["sessions"]
    store = SqliteStorage(d)
    state = store.load()
    assert _schema_version(d) == str(SCHEMA_VERSION) == "7"
    tables = _tables(d)
    assert "WITHOUT ROWID" in tables["sessions"] and "seq INTEGER PRIMARY KEY" in tables["timeline"]
    assert not [name for name, sql in tables.items() if "ON timeline" in sql]  # no index to update
    assert state.sessions["c"] == session(username="alice") and list(state.retained) == ["r"]
    assert [(e.seq, e.kind, e.data) for e in state.timeline["c"]] == [(1, "armed", {"topic": "dead/c", "qos": 1})]
    b = Batch()
    b.put_session(session(username="bob", subscriptions=[]))
    b.put_event(event(seq=2, kind="cancelled"))
    b.put_event(event("d", seq=3))
    b.timeline_dropped = {1}
    store.commit(b)
    store.close()
    state = SqliteStorage(d).load()
    assert state.sessions["c"].username == "bob" and state.sessions["c"].subscriptions == []
    assert {c: [e.seq for e in events] for c, events in state.timeline.items()} == {"c": [2], "d": [3]}


def test_timeline_events_deleted_by_seq_when_the_batch_names_them(backend):
    b = Batch()
    for seq in (1, 2, 3):
        b.put_event(event(seq=seq))
    b.put_event(event("other", seq=4))
    backend.store.commit(b)
    b = Batch()
    b.put_event(event(seq=5))
    b.put_event(event(seq=6))  # added and dropped in the same batch
    b.delete_timeline("other")
    b.timeline_dropped = {1, 4, 6}  # the batch says which: those of "other" too
    backend.store.commit(b)
    state = backend.restart()
    assert {c: [e.seq for e in events] for c, events in state.timeline.items()} == {"c": [2, 3, 5]}


def test_session_user_name_round_trips(backend):
    b = Batch()
    b.put_session(session("a", username="alice"))
    b.put_session(session("anon"))
    backend.store.commit(b)
    state = backend.restart()
    assert state.sessions["a"].username == "alice" and state.sessions["anon"].username is None


def test_golden_store_of_current_schema_loads(tmp_path):
    state = SqliteStorage(_golden_copy(tmp_path, f"v{SCHEMA_VERSION}")).load()
    assert state.sessions["c"] == session(username="alice") and "r" in state.retained
    assert [(e.kind, e.data) for e in state.timeline["c"]] == [("armed", {"topic": "dead/c", "qos": 1})]


def test_failed_migration_leaves_the_store_unchanged(tmp_path):
    d = _golden_copy(tmp_path, "v1")
    db = sqlite3.connect(d / DB_NAME)
    db.execute("CREATE TABLE timeline (x)")  # in the way of the migration's CREATE TABLE
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="migrating from schema version 1 to 2 failed.*unchanged"):
        SqliteStorage(d).load()
    assert _schema_version(d) == "1"
    db = sqlite3.connect(d / DB_NAME)
    columns = [row[1] for row in db.execute("PRAGMA table_info(sessions)")]
    db.close()
    assert "will_cause_kind" not in columns  # the ALTER TABLE before the failure was rolled back


@pytest.mark.parametrize("name,expected", [
    ("truncated", "not a usable SQLite database"),
    ("garbage", "not a usable SQLite database"),
    ("future-schema", "written by a newer lastwill"),
    ("not-lastwill", "not a lastwill store"),
])
def test_golden_damaged_stores_refused_with_clear_message(tmp_path, name, expected):
    d = tmp_path / name
    shutil.copytree(GOLDEN / name, d)
    with pytest.raises(StoreError, match=expected) as info:
        SqliteStorage(d).load()
    assert str(d / DB_NAME) in str(info.value)


def test_corrupt_page_detected_by_integrity_check(tmp_path):
    path = _write_golden_valid(tmp_path / "d")
    data = bytearray(path.read_bytes())
    for i in range(4096 + 100, min(len(data), 4096 * 3)):  # scribble over the pages after the header
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreError, match="damaged|integrity|not a usable"):
        SqliteStorage(tmp_path / "d").load()


def test_data_dir_that_is_a_file_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="cannot create it"):
        SqliteStorage(f).load()


def test_full_disk_commit_fails_loudly(tmp_path):
    store = SqliteStorage(tmp_path / "d")
    store.load()
    store.db.execute("PRAGMA max_page_count = 20")  # a disk that is full after 20 pages
    b = Batch()
    b.put_retained(message("big", b"x" * 200_000, retain=True))
    with pytest.raises(StoreError, match="commit failed"):
        store.commit(b)
    b = Batch()
    b.put_retained(message("small", b"x", retain=True))
    store.commit(b)  # the store is still usable afterwards
    assert list(store._read_all().retained) == ["small"]


def test_bad_fsync_policy_named():
    with pytest.raises(StoreError, match="fsync policy 'sometimes'"):
        SqliteStorage("/tmp/x", fsync="sometimes")


def test_generate_golden_files_match_schema(tmp_path):
    """The committed golden files were made by tests/storage/make_golden.py, one per schema version."""
    for version in range(1, SCHEMA_VERSION + 1):
        assert _schema_version(GOLDEN / f"v{version}") == str(version)


def test_a_migration_is_logged_when_it_starts_with_the_size_and_when_it_ends(tmp_path, caplog):
    """A big store takes a while to migrate (docs/security.md "Store growth"): the operator is told."""
    import logging

    from lastwill.clock import FakeClock

    caplog.set_level(logging.INFO, logger="lastwill.store")
    d = _golden_copy(tmp_path, "v3")
    clock = FakeClock()
    SqliteStorage(d, clock=clock).load()
    lines = [r.getMessage() for r in caplog.records if r.name == "lastwill.store"]
    assert any("migrating from schema version 3 to" in x and "sessions rows" in x and "timeline rows" in x
               for x in lines), lines
    assert any(x.endswith(f"migrated from schema version 3 to {SCHEMA_VERSION} in 0.0s") for x in lines), lines
