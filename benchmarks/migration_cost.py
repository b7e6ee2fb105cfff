#!/usr/bin/env python3
"""What the store's schema migration costs on a big store: a schema-3 store (tests/storage/golden/v3,
as lastwill wrote it) grown to ``--clients`` sessions with ``--events`` will-timeline events each, then
opened by this lastwill, which migrates it to the current schema (docs/security.md "Store growth").

    .venv/bin/python benchmarks/migration_cost.py [--clients 100000] [--events 64] [--dir DIR]

Prints the size of the store and the seconds the migration (opening the store) and the first load took.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lastwill.storage.sqlite import DB_NAME, SqliteStorage  # noqa: E402

GOLDEN_V3 = Path(__file__).resolve().parent.parent / "tests" / "storage" / "golden" / "v3" / DB_NAME


def grow(path: Path, clients: int, events: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    now = time.time()
    db.executemany("INSERT OR REPLACE INTO sessions (client_id, expiry_interval, connected, disconnected_at_wall, "
                   "next_packet_id, awaiting_pubrel, username) VALUES (?, 4294967295, 0, ?, 1, '[]', ?)",
                   ((f"device-{i:06d}", now, f"user{i % 1000}") for i in range(clients)))
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM timeline").fetchone()[0]

    def rows():
        s = seq
        for e in range(events):
            for i in range(clients):
                s += 1
                yield (f"device-{i:06d}", s, now + e, "connection_ended" if e % 2 else "armed",
                       "connection lost: EOF (peer closed its side)", "MQTT-3.1.2-8",
                       '{"cause": "eof", "topic": "dead/device", "qos": 1}')

    db.executemany("INSERT INTO timeline (client_id, seq, at_wall, kind, detail, rule, data) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=64)
    parser.add_argument("--dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # the store's lines
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lastwill-migration-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / DB_NAME
    shutil.copy(GOLDEN_V3, path)
    t = time.monotonic()
    grow(path, args.clients, args.events)
    grow_s = time.monotonic() - t
    size = path.stat().st_size
    t = time.monotonic()
    store = SqliteStorage(work, "batch")
    state = store.load()  # opening migrates, then everything is read
    first_s = time.monotonic() - t
    store.close()
    t = time.monotonic()
    store = SqliteStorage(work, "batch")
    again = store.load()  # the same, already migrated: reading alone
    second_s = time.monotonic() - t
    store.close()
    print(json.dumps({"clients": args.clients, "events_per_client": args.events,
                      "timeline_rows": args.clients * args.events, "store_mib": round(size / 2**20, 1),
                      "build_s": round(grow_s, 1), "first_start_migrate_and_load_s": round(first_s, 1),
                      "second_start_load_s": round(second_s, 1), "migration_s": round(first_s - second_s, 1),
                      "sessions_loaded": len(state.sessions), "sessions_loaded_again": len(again.sessions)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
