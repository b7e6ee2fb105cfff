"""Writes the golden store files in tests/storage/golden/ (committed), the ones that are missing.

    .venv/bin/python tests/storage/make_golden.py

``vN`` is a valid store as lastwill with schema version N wrote it. Only the current version's is
written, and only if it is missing: the older ones are what older lastwills wrote, and the tests
check that they are migrated, so they are never regenerated. The damaged stores (truncated,
garbage, future-schema, not-lastwill) are derived from the newest valid one when missing.

``v4-queued`` is a schema-4 store holding queued and in-flight deliveries of two sessions (a message
shared by both, a will, QoS 2 in PUBCOMP state), written by lastwill 4's store: schema 5 stores a
message once for all the sessions it waits for, and its migration is checked on this file.

``v5-queued`` is a schema-5 store written through the core by lastwill's schema-5 store (HEAD 419b0e4):
sessions a (QoS 2, subscription id 7: t/1 sent from its queue and awaiting PUBACK, an inflight row;
t/2 awaiting PUBCOMP; t/3, t/4 queued), b (t/1..t/4 queued) and c (connected when they were
published: t/1, t/3, t/4 in flight at once in their entries, t/2 acknowledged out of order). Schema 6
keeps a queued delivery sent in its session's runs instead of a row; the migration is checked on it.

``v6-queued`` is a schema-6 store written through the core by main's schema-6 store (866eedf): a's
t/1 and t/3 sent from its queue (its sent runs), t/2 awaiting PUBCOMP (a row), t/4, t/5 queued; b's
t/1..t/5 queued; c's in flight at once, t/2 acknowledged out of order. Schema 7 adds the ``reclaim``
table; the migration is checked on it.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from lastwill.storage.base import SCHEMA_VERSION  # noqa: E402
from lastwill.storage.sqlite import DB_NAME  # noqa: E402
from tests.storage.test_contract import _write_golden_valid  # noqa: E402


def checkpointed(directory: Path) -> Path:
    """A single-file store: WAL folded into the main file, no -wal/-shm files."""
    path = directory / DB_NAME
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return path


def main() -> None:
    golden = HERE / "golden"
    current = golden / f"v{SCHEMA_VERSION}"
    if not current.exists():
        checkpointed(_write_golden_valid(current).parent)
    data = (current / DB_NAME).read_bytes()
    for name, content in [("truncated", data[: len(data) // 3]),
                          ("garbage", b"this is not a database\n" * 50)]:
        if not (golden / name).exists():
            (golden / name).mkdir(parents=True)
            (golden / name / DB_NAME).write_bytes(content)
    future = golden / "future-schema"
    if not future.exists():
        shutil.copytree(current, future)
        db = sqlite3.connect(future / DB_NAME)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        db.commit()
        db.close()
    other = golden / "not-lastwill"
    if not other.exists():
        other.mkdir()
        db = sqlite3.connect(other / DB_NAME)
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
        db.close()


if __name__ == "__main__":
    main()
