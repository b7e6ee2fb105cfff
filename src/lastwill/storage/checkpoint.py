"""WAL checkpoints of the SQLite store, on a thread of their own rather than inside a commit.

SQLite in WAL mode appends every commit to the ``-wal`` file and copies it back into the database
file at a checkpoint. By default the connection that commits runs the checkpoint itself once the WAL
passes 1,000 pages, and a checkpoint fsyncs the WAL and then the database (also at
``synchronous=NORMAL``): 10-15 ms on this project's machine, with the broker's event loop stopped,
in the middle of a storm of wills or connects (seen with strace: ``fdatasync`` of both files between
two turns of a will storm). So the store turns the automatic checkpoint off (``PRAGMA
wal_autocheckpoint=0``) and this thread, with its own connection to the same file, runs a PASSIVE
checkpoint a second after commits have happened. A PASSIVE checkpoint never blocks the writer and
is never blocked by it (SQLite's WAL design), and sqlite3 releases the GIL while it works, so the
loop keeps committing meanwhile.

Nothing about durability changes: a commit reaches the WAL (and, with ``fsync = always``, the disk)
before the broker acknowledges anything, exactly as before; the checkpoint only moves committed pages
from the WAL into the database file. If the thread falls behind, the WAL grows until it catches up.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("lastwill.store")

# Seconds between the first commit after a checkpoint and the next checkpoint: commits of a storm
# are checkpointed together, once a second at most. (Every 0.25 s cost 15 us more CPU per connect in
# a storm of 20,000 than every 1 s, benchmarks/storm_cpu.py: a checkpoint's fsync and page copies are
# paid per checkpoint, and SQLite's own default, every 1,000 WAL pages, comes about once a second there)
CHECKPOINT_AFTER = 1.0
# Seconds without a commit after which the thread closes its connection and ends (the next commit
# starts another): an idle broker, or a store its owner never closed, keeps no thread
IDLE_EXIT = 2.0


class WalCheckpointer:
    """``committed()`` after each commit; ``close()`` before the store's own connection closes. The
    thread runs while commits come (started by the first, ended IDLE_EXIT seconds after the last)."""

    def __init__(self, path: Path, synchronous: str, delay: float = CHECKPOINT_AFTER,
                 idle_exit: float = IDLE_EXIT) -> None:
        self.path = path
        self.synchronous = synchronous  # the store's (a checkpoint fsyncs unless it is OFF)
        self.delay = delay
        self.idle_exit = idle_exit
        self.checkpoints = 0  # run so far (for tests and metrics)
        self.failures = 0
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the thread's start and its idle exit
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Something was committed: checkpoint it soon."""
        with self._lock:
            self._dirty.set()
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="lastwill-wal-checkpoint", daemon=True)
                self._thread.start()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        """Ask the thread to end, without waiting (also from a finalizer)."""
        self._stopping.set()
        self._dirty.set()

    def close(self) -> None:
        """Stop the thread (after a checkpoint it is running, if any) and close its connection."""
        self.stop()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as e:  # the store's own connection checkpoints at close: nothing is lost
            log.warning("store %s: WAL checkpoints off the event loop not available (%s); the WAL grows "
                        "until the broker stops", self.path, e)
            return
        try:
            while True:
                if not self._dirty.wait(self.idle_exit):
                    with self._lock:  # no commit for a while: end (committed() starts another)
                        if not self._dirty.is_set():
                            self._thread = None
                            return
                    continue
                if self._stopping.wait(self.delay):
                    return
                self._dirty.clear()
                self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as e:  # e.g. disk full: the WAL keeps the commits; the next try may succeed
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("store %s: WAL checkpoint failed (%s); committed data stays in the WAL",
                            self.path, e)
