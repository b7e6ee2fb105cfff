"""The embedded default store: one SQLite file (standard library sqlite3, WAL) in the data directory.

fsync policy (``fsync`` setting), like Redis's appendfsync:
- ``always``: every commit is fsynced before the acknowledgements go out (synchronous=FULL);
- ``batch`` (default): every commit reaches the OS before the acknowledgements go out, so a crash
  of the broker (kill -9) loses nothing; the WAL is fsynced at checkpoints, so a power failure can
  lose the last commits (synchronous=NORMAL);
  (checkpoints run on a thread of their own, never inside a commit: storage/checkpoint.py)
- ``off``: the OS decides when anything is written (synchronous=OFF).

A damaged store stops start-up with a message saying what is wrong and what to do; it never
silently starts empty. A store written by an older lastwill is migrated in place, in one
transaction (it is either entirely the old schema or entirely the new one).

Schema versions: 1 (sessions, subscriptions, deliveries, retained); 2 adds the ``timeline`` table
(the last TIMELINE_PER_CLIENT will timeline events of each client) and ``sessions.will_cause_kind``;
3 adds ``sessions.username`` (what the ACL checks a session's will against, also after a restart);
4 rebuilds ``sessions`` (WITHOUT ROWID) and ``timeline`` (seq order, no index on client_id), which
are cheaper to write (see _SESSIONS_TABLE); 5 stores a message once however many sessions wait for
it: ``deliveries`` becomes ``messages``, ``queued``, ``queues`` and ``inflight`` (see msglog.py); 6 adds
``queues.sent``, the runs of a session's queued deliveries in flight (no row per delivery sent); 7 adds
``reclaim``, the messages done and not yet deleted (they are deleted in bulk).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import weakref
from pathlib import Path

from ..clock import Clock, SystemClock
from ..codec.properties import WILL, encode_properties, read_properties
from . import msgload
from .base import (
    SCHEMA_VERSION,
    TIMELINE_PER_CLIENT,
    Batch,
    StoredEvent,
    StoredMessage,
    StoredSession,
    StoredState,
    StoredSubscription,
    StoredWill,
    StoreError,
)
from .checkpoint import WalCheckpointer
from .msglog import TABLES as _MESSAGE_TABLES
from .msglog import MessageLog, migrate_from_v4, migrate_from_v5

log = logging.getLogger("lastwill.store")

DB_NAME = "lastwill.db"
MIGRATION_PROGRESS = 5.0  # seconds between two "still migrating" log lines
FSYNC_POLICIES = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}

# the timeline table as schema version 2 made it (migration 2); version 4 rebuilds it
_TIMELINE_TABLE_V2 = """
CREATE TABLE timeline (
    client_id TEXT NOT NULL, seq INTEGER NOT NULL, at_wall REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, rule TEXT, data TEXT NOT NULL,
    PRIMARY KEY (client_id, seq)
);
"""

# Schema version 4: every commit of a CONNECT or DISCONNECT writes a session row and timeline rows,
# and a commit costs about one page write per b-tree it touches. So: sessions is one b-tree
# (WITHOUT ROWID, keyed by client id; it was a rowid table plus the index of its primary key), and
# the timeline is kept in seq order (seq, unique across clients, is the rowid) with no index on
# client_id: new events are appended to its last page, and events are deleted by seq (the core knows
# which it dropped: Batch.timeline_dropped); by client id only for other writers (a scan).
_SESSIONS_TABLE = """
CREATE TABLE {name} (
    client_id TEXT PRIMARY KEY,
    expiry_interval INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    disconnected_at_wall REAL,
    next_packet_id INTEGER NOT NULL,
    awaiting_pubrel TEXT NOT NULL,
    will_topic TEXT, will_payload BLOB, will_qos INTEGER, will_retain INTEGER, will_props BLOB,
    will_fire_at_wall REAL, will_cause TEXT,
    will_cause_kind TEXT,
    username TEXT
) WITHOUT ROWID;
"""
_TIMELINE_TABLE = """
CREATE TABLE {name} (
    client_id TEXT NOT NULL, seq INTEGER PRIMARY KEY, at_wall REAL NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, rule TEXT, data TEXT NOT NULL
);
"""
_SESSION_COLUMNS = ("client_id, expiry_interval, connected, disconnected_at_wall, next_packet_id, awaiting_pubrel, "
                    "will_topic, will_payload, will_qos, will_retain, will_props, will_fire_at_wall, will_cause, "
                    "will_cause_kind, username")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _SESSIONS_TABLE.format(name="sessions") + """
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL, topic_filter TEXT NOT NULL, qos INTEGER NOT NULL, no_local INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL, retain_handling INTEGER NOT NULL, subscription_id INTEGER,
    PRIMARY KEY (client_id, topic_filter)
);
CREATE TABLE retained (
    topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL, props BLOB NOT NULL,
    origin TEXT, expiry_at_wall REAL, is_will INTEGER NOT NULL
);
""" + _TIMELINE_TABLE.format(name="timeline") + _MESSAGE_TABLES

# schema version N-1 -> N, each run in one transaction with the version update
_MIGRATIONS = {
    2: "ALTER TABLE sessions ADD COLUMN will_cause_kind TEXT;" + _TIMELINE_TABLE_V2,
    # the sessions stored so far: user name unknown (NULL would say anonymous): see USERNAME_UNKNOWN
    3: "ALTER TABLE sessions ADD COLUMN username TEXT; UPDATE sessions SET username = char(0) || 'unknown';",
    # sessions and timeline rebuilt in their cheaper-to-write form (see _SESSIONS_TABLE); seq was
    # already unique across clients
    4: _SESSIONS_TABLE.format(name="sessions_v4")
    + f"INSERT INTO sessions_v4 ({_SESSION_COLUMNS}) SELECT {_SESSION_COLUMNS} FROM sessions; "
      "DROP TABLE sessions; ALTER TABLE sessions_v4 RENAME TO sessions;"
    + _TIMELINE_TABLE.format(name="timeline_v4")
    + "INSERT OR REPLACE INTO timeline_v4 (client_id, seq, at_wall, kind, detail, rule, data) "
      "SELECT client_id, seq, at_wall, kind, detail, rule, data FROM timeline ORDER BY seq; "
      "DROP TABLE timeline; ALTER TABLE timeline_v4 RENAME TO timeline;",
    # one row per message, however many sessions wait for it (msglog.py); run in Python
    5: migrate_from_v4,
    # the runs of each session's queued deliveries sent and not yet acknowledged (msglog.py)
    6: migrate_from_v5,
    # the messages done and not yet deleted, deleted in bulk (msglog.py RECLAIM_AT)
    7: "CREATE TABLE IF NOT EXISTS reclaim (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);",
}


# json.dumps(data, default=str), the same text, with the C encoder made once: JSONEncoder.encode builds
# a new one (and its circular-reference table) per call, which was half of the cost of a timeline row
# in a will storm (two rows per will; docs/benchmarks.md, profiles). An event's data is a flat dict
# made by the broker (no cycles). Without the C encoder (another Python), JSONEncoder's own.
if json.encoder.c_make_encoder is not None:
    _timeline_chunks = json.encoder.c_make_encoder(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)

    def _timeline_json(data: dict) -> str:
        return "".join(_timeline_chunks(data, 0))
else:  # pragma: no cover - CPython has the C encoder
    _timeline_json = json.JSONEncoder(default=str).encode


def _props(props: dict, kind: str = "PUBLISH") -> bytes:
    return encode_properties(props, kind) if props else b""


def _unprops(blob: bytes, kind: str = "PUBLISH") -> dict:
    if not blob:
        return {}
    props, _ = read_properties(memoryview(blob), 0, kind)
    return props


class SqliteStorage:
    def __init__(self, data_dir: str | Path, fsync: str = "batch", clock: Clock | None = None):
        if fsync not in FSYNC_POLICIES:
            raise StoreError(f"fsync policy {fsync!r}: expected one of {', '.join(FSYNC_POLICIES)}")
        self.clock = clock or SystemClock()  # (how long a migration has taken, for its log lines)
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.fsync = fsync
        self.db: sqlite3.Connection | None = None
        # the client ids that have rows in the subscriptions table: what commit needs not delete
        self._with_subs: set[str] = set()
        self.log = MessageLog()  # queued and in-flight messages
        self.checkpointer: WalCheckpointer | None = None  # WAL checkpoints off the event loop (_open)

    # ---- opening -----------------------------------------------------------------------------
    def load(self) -> StoredState:
        self._open()
        try:
            return self._read_all()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path} is damaged ({e}); restore it from a backup, or move it "
                             f"away to start with an empty store") from None

    def _open(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"data directory {self.data_dir}: cannot create it: {e.strerror}") from None
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise StoreError(f"data directory {self.data_dir} is not writable; fix its permissions or "
                             f"choose another with --data-dir")
        exists = self.path.exists()
        if exists and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(f"store {self.path} is not readable and writable; fix its permissions")
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={FSYNC_POLICIES[self.fsync]}")
            # Debian's SQLite is built with secure_delete on: every deleted row is zeroed and every
            # freed page written again, which was a quarter of the cost of reclaiming a message (a
            # queue drained at 1 KiB a message: 4.4 -> 3.0 us of SQLite CPU per deleted row). FAST
            # zeroes what is deleted on pages written anyway; freed pages keep their old bytes until
            # reused (anyone who can read them can read the store's live messages too)
            db.execute("PRAGMA secure_delete=FAST")
            if not exists or self._is_empty(db):
                db.executescript("BEGIN;" + _SCHEMA +
                                 f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
            version = self._schema_version(db)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path} is not a usable SQLite database ({e}); it may be truncated "
                             f"or corrupt: restore it from a backup, or move it away to start empty") from None
        except OSError as e:
            raise StoreError(f"store {self.path}: {e.strerror}") from None
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(f"store {self.path} has schema version {version}, written by a newer lastwill "
                             f"(this one knows up to {SCHEMA_VERSION}); upgrade lastwill or use another "
                             f"--data-dir")
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            check = str(e)
        if check != "ok":
            db.close()
            raise StoreError(f"store {self.path} failed its integrity check ({check}); restore it from a "
                             f"backup, or move it away to start with an empty store")
        if version < SCHEMA_VERSION:  # checked first: a damaged store is never migrated
            self._migrate(db, version)
        # checkpoints (fsync of the WAL and of the file) on their own thread, never inside a commit
        db.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointer = WalCheckpointer(self.path, FSYNC_POLICIES[self.fsync])
        weakref.finalize(self, self.checkpointer.stop)  # a store dropped without close() leaves no thread
        self.db = db

    @staticmethod
    def _is_empty(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    def _schema_version(self, db: sqlite3.Connection) -> int:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            raise StoreError(f"store {self.path} is an SQLite file but not a lastwill store (no meta "
                             f"table); point --data-dir at another directory") from None
        if row is None or not str(row[0]).isdigit():
            raise StoreError(f"store {self.path} has no valid schema version; it is damaged: restore it "
                             f"from a backup, or move it away to start empty")
        return int(row[0])

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring an older store up to SCHEMA_VERSION, one version at a time, each in one transaction.
        A big store takes a while (100,000 clients with 64 timeline events each: 22 s, docs/security.md
        "Store growth"): it is logged when it starts, every MIGRATION_PROGRESS seconds, and when it ends."""
        start = version
        began = self._progress(db, version)
        while version < SCHEMA_VERSION:
            step = _MIGRATIONS.get(version + 1)
            if step is None:
                db.close()
                raise StoreError(f"store {self.path}: no migration from schema version {version}; "
                                 f"use the lastwill version that wrote it, or another --data-dir")
            try:
                if callable(step):
                    db.execute("BEGIN")
                    step(db)
                    db.execute(f"UPDATE meta SET value = '{version + 1}' WHERE key = 'schema_version'")
                    db.execute("COMMIT")
                else:
                    db.executescript(f"BEGIN; {step} UPDATE meta SET value = '{version + 1}' "
                                     f"WHERE key = 'schema_version'; COMMIT;")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.close()
                raise StoreError(f"store {self.path}: migrating from schema version {version} to "
                                 f"{version + 1} failed ({e}); the store is unchanged") from None
            version += 1
        db.set_progress_handler(None, 0)
        log.info("store %s migrated from schema version %d to %d in %.1fs", self.path, start, version,
                 self.clock.monotonic() - began)

    def _progress(self, db: sqlite3.Connection, version: int) -> float:
        """Log that a migration starts, with the size of the store, and have SQLite report how long it
        has been going every MIGRATION_PROGRESS seconds. Returns when it started."""
        clock = self.clock
        sizes = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # (fixed table names)
                 for table in ("sessions", "deliveries", "timeline") if self._has_table(db, table)}
        log.info("store %s: migrating from schema version %d to %d (%s); the broker starts when it is done",
                 self.path, version, SCHEMA_VERSION, ", ".join(f"{n} {t} rows" for t, n in sizes.items()))
        began = clock.monotonic()
        next_at = [began + MIGRATION_PROGRESS]

        def progress() -> int:
            now = clock.monotonic()
            if now >= next_at[0]:
                next_at[0] = now + MIGRATION_PROGRESS
                log.info("store %s: still migrating, %.0fs so far", self.path, now - began)
            return 0  # go on

        db.set_progress_handler(progress, 200_000)  # (every 200,000 SQLite instructions: ~ a few ms)
        return began

    @staticmethod
    def _has_table(db: sqlite3.Connection, name: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def _read_all(self) -> StoredState:
        db = self.db
        state = StoredState()
        state.meta = dict(db.execute("SELECT key, value FROM meta"))
        for row in db.execute(
                "SELECT client_id, expiry_interval, connected, disconnected_at_wall, next_packet_id, "
                "awaiting_pubrel, will_topic, will_payload, will_qos, will_retain, will_props, "
                "will_fire_at_wall, will_cause, will_cause_kind, username FROM sessions"):
            (client_id, expiry, connected, disc_at, next_pid, awaiting, w_topic, w_payload, w_qos, w_retain,
             w_props, w_fire, w_cause, w_kind, username) = row
            will = None
            if w_topic is not None:
                will = StoredWill(w_topic, bytes(w_payload), w_qos, bool(w_retain), _unprops(w_props, WILL),
                                  w_fire, w_cause, w_kind)
            state.sessions[client_id] = StoredSession(client_id, expiry, bool(connected), disc_at, will, [],
                                                      json.loads(awaiting), next_pid, username)
        with_subs = self._with_subs
        with_subs.clear()
        for row in db.execute("SELECT * FROM subscriptions ORDER BY rowid"):
            client_id, topic_filter, qos, nl, rap, rh, sub_id = row
            with_subs.add(client_id)  # also without a session row: deleted with the session id
            session = state.sessions.get(client_id)
            if session is not None:
                session.subscriptions.append(StoredSubscription(topic_filter, qos, bool(nl), bool(rap), rh, sub_id))
        loaded = msgload.load(self.log, db)  # a session's queue beyond its first deliveries: left in the store
        state.deliveries, state.next_message_id, state.unreferenced_messages = (
            loaded.deliveries, loaded.next_msg_id, loaded.unreferenced)
        state.backlogs, state.backlog_refs, state.reader = loaded.backlogs, loaded.backlog_refs, self
        state.min_next_seq = {cid: q.head for cid, q in self.log.queues.items() if q.head > 1}
        for row in db.execute("SELECT * FROM retained"):
            topic, payload, qos, props, origin, expiry, is_will = row
            state.retained[topic] = StoredMessage(topic, bytes(payload), qos, True, _unprops(props), origin,
                                                  expiry, bool(is_will))
        for row in db.execute("SELECT client_id, seq, at_wall, kind, detail, rule, data FROM timeline "
                              "ORDER BY seq"):  # the rowid: no sort
            client_id, seq, at_wall, kind, detail, rule, data = row
            state.timeline.setdefault(client_id, []).append(
                StoredEvent(client_id, seq, at_wall, kind, detail, rule, json.loads(data)))
        return state

    # ---- writing -------------------------------------------------------------------------------
    def commit(self, batch: Batch) -> None:
        """One transaction. Statements that cannot change anything are not run: the DELETE of a
        session's subscriptions when it has none stored (``_with_subs``), of a delivery's in-flight row
        when it has none (``MessageLog.queues``), the trimming of timelines that cannot exceed the bound
        (``batch.timeline_trim``). This store is the only writer of its file, so what it remembers
        of the rows it wrote is what the file holds."""
        db = self.db
        with_subs = self._with_subs
        subs_gone: list[str] = []
        subs_new: set[str] = set()
        try:
            db.execute("BEGIN")
            if batch.sessions_deleted:
                ids = [(c,) for c in batch.sessions_deleted]
                db.executemany("DELETE FROM sessions WHERE client_id = ?", ids)
                gone = [(c,) for c in batch.sessions_deleted if c in with_subs]
                if gone:
                    db.executemany("DELETE FROM subscriptions WHERE client_id = ?", gone)
                    subs_gone += [c for (c,) in gone]
                self.log.sessions_deleted(db, batch.sessions_deleted)
            if batch.sessions:
                rows = []
                replaced = []
                sub_rows = []
                for s in batch.sessions.values():
                    w = s.will
                    cid = s.client_id
                    rows.append((
                        cid, s.expiry_interval, int(s.connected), s.disconnected_at_wall, s.next_packet_id,
                        json.dumps(s.awaiting_pubrel) if s.awaiting_pubrel else "[]",
                        w.topic if w else None, w.payload if w else None, w.qos if w else None,
                        int(w.retain) if w else None, _props(w.properties, WILL) if w else None,
                        w.fire_at_wall if w else None, w.cause if w else None, w.cause_kind if w else None,
                        s.username))
                    if cid in with_subs:  # the subscriptions are stored again in full
                        replaced.append((cid,))
                    if s.subscriptions:
                        subs_new.add(cid)
                        sub_rows += [(cid, x.topic_filter, x.qos, int(x.no_local), int(x.retain_as_published),
                                      x.retain_handling, x.subscription_id) for x in s.subscriptions]
                db.executemany("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                if replaced:
                    db.executemany("DELETE FROM subscriptions WHERE client_id = ?", replaced)
                    subs_gone += [c for (c,) in replaced]
                if sub_rows:
                    db.executemany("INSERT INTO subscriptions VALUES (?,?,?,?,?,?,?)", sub_rows)
            if batch.deliveries or batch.deliveries_deleted or batch.messages or batch.messages_deleted \
                    or batch.queue_heads or batch.queued or batch.sent:
                self.log.write(db, batch.deliveries, batch.deliveries_deleted, batch.messages,
                               batch.messages_deleted, batch.queue_heads, batch.queued, batch.sent)
            if batch.retained_deleted:
                db.executemany("DELETE FROM retained WHERE topic = ?", [(t,) for t in batch.retained_deleted])
            if batch.retained:
                db.executemany("INSERT OR REPLACE INTO retained VALUES (?,?,?,?,?,?,?)", [
                    (m.topic, m.payload, m.qos, _props(m.properties), m.origin, m.expiry_at_wall, int(m.is_will))
                    for m in batch.retained.values()])
            # timeline_dropped: the events to delete, those of timeline_deleted clients too; an event
            # may be added and dropped in the same batch (a will dropped for many subscribers at once)
            dropped = batch.timeline_dropped
            if dropped is None and batch.timeline_deleted:  # not known which: by client id (a scan)
                db.executemany("DELETE FROM timeline WHERE client_id = ?", [(c,) for c in batch.timeline_deleted])
            if batch.timeline:
                db.executemany("INSERT OR REPLACE INTO timeline VALUES (?,?,?,?,?,?,?)", [
                    (e.client_id, e.seq, e.at_wall, e.kind, e.detail, e.rule,
                     _timeline_json(e.data) if e.data else "{}")
                    for e in batch.timeline.values() if not dropped or e.seq not in dropped])
            if dropped:
                db.executemany("DELETE FROM timeline WHERE seq = ?", [(q,) for q in dropped])
            elif dropped is None and batch.timeline:
                # not known which events went beyond the bound: keep the last TIMELINE_PER_CLIENT of
                # every client written to (a scan of the table each)
                db.executemany(
                    "DELETE FROM timeline WHERE client_id = ? AND seq <= (SELECT seq FROM timeline "
                    "WHERE client_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    [(c, c, TIMELINE_PER_CLIENT) for c in {k[0] for k in batch.timeline}])
            if batch.meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(batch.meta.items()))
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
                try:  # what the message log remembers of the file: as the file is again
                    msgload.load(self.log, db)
                except sqlite3.Error:
                    pass
            raise StoreError(f"store {self.path}: commit failed: {e}") from None
        # committed: what the file now holds
        with_subs.difference_update(subs_gone)
        with_subs.update(subs_new)
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def read_messages(self, msg_ids: list[int]) -> dict[int, StoredMessage]:
        """The stored messages with these ids (a session's backlog, as its queue drains to them)."""
        return msgload.read_messages(self.db, msg_ids)

    def close(self) -> None:
        if self.checkpointer is not None:  # first: the last connection to close checkpoints the WAL
            self.checkpointer.close()
            self.checkpointer = None
        if self.db is not None:
            self.db.close()
            self.db = None
