"""The SQLite store's WAL checkpoints run on their own thread, not inside a commit (storage/checkpoint.py)."""

from __future__ import annotations

import gc
import shutil
import sqlite3
import time

from lastwill.storage.base import Batch, StoredSession
from lastwill.storage.checkpoint import WalCheckpointer
from lastwill.storage.sqlite import DB_NAME, SqliteStorage


def _wait_until(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def _commit_sessions(store: SqliteStorage, n: int) -> None:
    batch = Batch()
    for i in range(n):
        batch.sessions[f"c{i}"] = StoredSession(f"c{i}", 3600, False, None, None, [], [], 1)
    store.commit(batch)


def _sessions_in_main_file_only(store: SqliteStorage, tmp_path) -> int:
    """The sessions a copy of the database file alone holds (without its -wal): what checkpoints moved."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(store.path, copy)
    db = sqlite3.connect(copy)
    try:
        return db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        db.close()


def test_the_committing_connection_never_checkpoints(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        store.close()


def test_commits_reach_the_database_file_by_the_checkpoint_thread(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    try:
        _commit_sessions(store, 50)
        assert _wait_until(lambda: store.checkpointer.checkpoints >= 1)
        # the commit's pages were copied from the WAL into the file by that thread's PASSIVE checkpoint
        assert _wait_until(lambda: _sessions_in_main_file_only(store, tmp_path) == 50)
        assert store.checkpointer.failures == 0
    finally:
        store.close()


def test_close_stops_the_thread_and_the_store_reopens_with_everything(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    _commit_sessions(store, 20)
    checkpointer = store.checkpointer
    assert checkpointer.running  # started by the commit
    store.close()
    assert not checkpointer.running
    assert not (tmp_path / "data" / (DB_NAME + "-wal")).exists()  # the last connection checkpointed at close
    again = SqliteStorage(tmp_path / "data")
    try:
        assert len(again.load().sessions) == 20
    finally:
        again.close()


def test_the_thread_ends_when_commits_stop_and_the_next_commit_starts_another(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    store.close()  # (only its file is wanted here)
    ck = WalCheckpointer(store.path, "NORMAL", delay=0.01, idle_exit=0.1)
    try:
        assert not ck.running  # no commit yet: no thread
        ck.committed()
        assert ck.running
        assert _wait_until(lambda: ck.checkpoints == 1)
        assert _wait_until(lambda: not ck.running)  # idle: ended
        ck.committed()
        assert ck.running
        assert _wait_until(lambda: ck.checkpoints == 2)
    finally:
        ck.close()
    assert not ck.running


def test_a_store_dropped_without_close_leaves_no_thread(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    _commit_sessions(store, 5)
    checkpointer = store.checkpointer
    assert checkpointer.running
    db = store.db
    del store
    gc.collect()
    assert _wait_until(lambda: not checkpointer.running)
    db.close()
