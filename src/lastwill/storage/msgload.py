"""Start-up: the SQLite store's queued and in-flight deliveries (the tables of storage/msglog.py), loaded
lazily.

Every live entry is found by one scan of the message rows' entries (their payloads are not read), as
the store must know which deliveries are live and which messages no delivery needs. What is loaded:
each session's in-flight deliveries and its first ``EAGER_QUEUED`` queued ones, with their messages;
the rest of its queue, its *backlog*, stays in the store: runs of (first seq, first message id,
count, flags, subscription ids), one run for a flood's messages however long (seqs and message ids
go up together), its count and its bytes (what max_queued_bytes counts), and per message the number
of backlog entries that refer to it (``backlog_refs``: the core counts them as the message's stored
deliveries, so that it is not reclaimed while a backlog needs it). The core reads a backlog's
messages by id when the session's queue drains to them (``read_messages``).

200 sessions x 50,000 queued 1 KiB messages: the first loader kept 10 M deliveries in memory (2.1 GB,
42.9 s); this one keeps 200 x 1,000 and a few runs (docs/benchmarks.md, "Restart").
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from operator import itemgetter, sub

from .base import StoredBacklog, StoredDelivery, StoredMessage
from .msglog import RETAIN_FLAG, STATES, MessageLog, Queue, columns, run_add, unpack_runs, unprops

EAGER_QUEUED = 1000  # per session, this many of its first queued deliveries are loaded with it
READ_CHUNK = 500  # message ids per SELECT ... IN (...)

_SEQ = itemgetter(0)


class _Owner:
    """One session while the store is loaded."""

    __slots__ = ("client_id", "q", "pids", "eager", "runs", "bytes")

    def __init__(self, client_id: str, q: Queue, pids: dict[int, int]) -> None:
        self.client_id = client_id
        self.q = q
        self.pids = pids  # the packet ids of its sent deliveries (queues.sent)
        self.eager: list[tuple] = []  # in flight: (seq, msg id, flags, subscription ids, packet id, state)
        self.runs: list[list] = []  # queued: [first seq, first msg id, count, flags, subscription ids or None]
        self.bytes = 0  # topics + payloads of its queued deliveries


class Loaded:
    __slots__ = ("deliveries", "next_msg_id", "unreferenced", "backlogs", "backlog_refs")

    def __init__(self) -> None:
        self.deliveries: dict[str, list[StoredDelivery]] = {}
        self.next_msg_id = 1
        self.unreferenced: set[int] = set()
        self.backlogs: dict[str, StoredBacklog] = {}
        self.backlog_refs: dict[int, int] = {}


def load(log: MessageLog, db: sqlite3.Connection) -> Loaded:
    """Fills ``log`` (its queues, counters) from the file; returns what the core restores."""
    owners = _queues(log, db)
    out = Loaded()
    rows = _inflight_rows(db, owners)
    refs = out.backlog_refs
    # messages done, not yet deleted from the table (msglog RECLAIM_AT)
    done = log.reclaim = {mid for a, b in db.execute("SELECT first, last FROM reclaim") for mid in range(a, b + 1)}
    # what is kept per message is only for the few that need it: the sizes of those with ``queued``
    # rows, the rows with no live entry (unreferenced, unless a ``queued`` or ``inflight`` row needs them)
    sizes: dict[int, int] = {mid: 0 for (mid,) in db.execute("SELECT DISTINCT msg_id FROM queued")}
    dead: set[int] = set()
    out.next_msg_id = log.next_msg_id = _scan(db, owners, sizes, dead, refs) + 1
    max_part = 0
    log.with_parts.clear()
    for part, mid, blob, subs in db.execute("SELECT part, msg_id, entries, subs FROM queued ORDER BY part"):
        max_part = max(max_part, part)
        size = sizes.get(mid, 0)
        if size > 0:  # (its message row exists: its size was read; a topic is never empty)
            log.with_parts.add(mid)
            if _entries(owners, mid, size, columns(blob), subs, refs):
                dead.discard(mid)
    log.next_part = max_part + 1
    for o in owners.values():  # the runs of the sent deliveries found
        q = o.q
        if q.sent:
            for seq in sorted(q.sent):
                run_add(q.runs, seq, q.sent[seq][3])
    eager = {o.client_id: _split(o, refs) for o in owners.values() if o.runs}
    in_rows = {d.message for items in rows.values() for d in items}  # (ids until resolved)
    needed = set(in_rows)
    needed.update(e[1] for o in owners.values() for e in o.eager)
    needed.update(e[1] for items in eager.values() for e in items)
    messages = read_messages(db, sorted(needed))  # type: ignore[arg-type]
    for o in owners.values():
        first = eager.get(o.client_id, [])
        if o.runs:  # the rest of its queue: its backlog (its bytes without those of the first ones)
            o.bytes -= sum(len(m.payload) + len(m.topic) for e in first if (m := messages.get(e[1])) is not None)
            out.backlogs[o.client_id] = StoredBacklog(o.runs, sum(r[2] for r in o.runs), o.bytes)
        items = _deliveries(o, rows.get(o.client_id, []), first, messages)
        if items:
            out.deliveries[o.client_id] = items
    out.unreferenced = dead - in_rows - done  # type: ignore[operator]
    return out


def _queues(log: MessageLog, db: sqlite3.Connection) -> dict[int, _Owner]:
    queues = log.queues
    queues.clear()
    owners: dict[int, _Owner] = {}
    for client_id, sno, head, floor, gone, sent in db.execute(
            "SELECT client_id, sno, head, floor, gone, sent FROM queues"):
        q = queues[client_id] = Queue(sno, head, floor, set(json.loads(gone)) if gone != "[]" else set())
        owners[sno] = _Owner(client_id, q, unpack_runs(sent))
    row = db.execute("SELECT value FROM meta WHERE key = 'next_sno'").fetchone()
    log.next_sno = max(max(owners, default=0) + 1, int(row[0]) if row else 1)
    return owners


def _inflight_rows(db: sqlite3.Connection, owners: dict[int, _Owner]) -> dict[str, list[StoredDelivery]]:
    """The ``inflight`` rows of live sessions (their messages as ids until resolved)."""
    rows: dict[str, list[StoredDelivery]] = {}
    for sno, seq, mid, qos, retain, sub_ids, pid, state in db.execute(
            "SELECT sno, seq, msg_id, qos, retain, sub_ids, packet_id, state FROM inflight"):
        o = owners.get(sno)
        if o is not None:
            o.q.rows.add(seq)
            rows.setdefault(o.client_id, []).append(StoredDelivery(
                o.client_id, seq, mid, qos, bool(retain), tuple(json.loads(sub_ids)) if sub_ids else (),  # type: ignore[arg-type]
                pid, state))
    return rows


class _Block:
    """Consecutive message rows whose entries extend their sessions' runs by one (a flood to offline
    sessions: the same sessions in the same order, seqs and message ids one higher each row), the
    same entries of each row being dead (their session gone, or below its head: a queue drained
    already): counted per row, added to the runs once at the end."""

    __slots__ = ("snos", "flags", "seqs", "mid", "rows", "bytes", "owners", "room")

    def __init__(self, snos: array, flags: bytes, seqs: array, mid: int, owners: list[_Owner], room: int) -> None:
        self.snos, self.flags, self.seqs, self.mid = snos, flags, seqs, mid
        self.owners = owners  # of the live entries
        self.room = room  # rows after the first for which the dead entries stay below their heads
        self.rows = 0  # rows after the first (which went the slow way)
        self.bytes = 0

    def takes(self, mid: int, snos: array, flags: bytes, seqs: array) -> bool:
        return mid == self.mid + 1 and self.rows < self.room and flags == self.flags and snos == self.snos and \
            set(map(sub, seqs, self.seqs)) == _ONE

    def flush(self) -> None:
        if self.rows:
            for o in self.owners:
                o.runs[-1][2] += self.rows
                o.bytes += self.bytes


_ONE = {1}
_NO_ROOM = 1 << 62


def _block(owners: dict[int, _Owner], mid: int, cols: tuple) -> _Block | None:
    """A block starting with this row (just loaded entry by entry), if the rows after it may extend
    it: every entry queued and live, or dead, in sessions without deletions out of order, inflight
    rows or sent runs."""
    snos, seqs, _, flags = cols
    if len(set(snos)) != len(snos):
        return None
    live = []
    room = _NO_ROOM
    for i, sno in enumerate(snos):
        o = owners.get(sno)
        if o is None:
            continue
        q = o.q
        if q.gone or q.rows or o.pids or flags[i] >= 8:
            return None
        if seqs[i] >= q.head:
            live.append(o)
        else:
            room = min(room, q.head - seqs[i] - 1)
    return _Block(snos, flags, seqs, mid, live, room) if live and room else None


def _scan(db: sqlite3.Connection, owners: dict[int, _Owner], sizes: dict[int, int], dead: set[int],
          refs: dict[int, int]) -> int:
    """The message rows' entries (not their payloads), in id order; rows that only extend their
    sessions' runs are taken as a block (``_Block``), the others entry by entry. Fills the sizes of
    the messages named in ``sizes``, the rows without a live entry into ``dead``; returns the
    highest id."""
    block = None
    retry = 0  # rows to go before trying to start a block again
    mid = 0
    for mid, size, blob, subs in db.execute(
            "SELECT id, length(topic) + length(payload), entries, subs FROM messages ORDER BY id"):
        if mid in sizes:
            sizes[mid] = size
        if not blob:
            dead.add(mid)
            continue
        cols = columns(blob)
        if block is not None:
            if subs is None and block.takes(mid, cols[0], cols[3], cols[1]):
                block.rows += 1
                block.bytes += size
                block.mid, block.seqs = mid, cols[1]
                refs[mid] = len(block.owners)
                continue
            block.flush()
            block = None
        found = _entries(owners, mid, size, cols, subs, refs)
        if not found:
            dead.add(mid)
        if found == 2 or subs is not None:
            continue  # in-flight entries, or subscription identifiers: no block
        if retry:
            retry -= 1
        else:
            block = _block(owners, mid, cols)
            retry = 0 if block is not None else 16
    if block is not None:
        block.flush()
    return mid


def _entries(owners: dict[int, _Owner], mid: int, size: int, cols: tuple, subs: str | None,
             refs: dict[int, int]) -> int:
    """The live entries of one row: queued ones into their session's runs, in-flight ones (in their
    entry, or sent from the queue: ``queues.sent``) into its eager list. Millions at a restart: the
    common case (queued, extending its session's last run) first and tight. 2 if some entry is in
    flight, 1 if some is queued, 0 if none is live."""
    snos, seqs, pids, flags = cols
    sub_list = json.loads(subs) if subs else None
    last_sno, o = None, None
    queued = 0
    live = False
    for i, sno in enumerate(snos):
        if sno != last_sno:
            last_sno, o = sno, owners.get(sno)
        if o is None:
            continue
        q = o.q
        seq = seqs[i]
        f = flags[i]
        if (q.gone and seq in q.gone) or (q.rows and seq in q.rows):
            continue
        if f < 8 and seq >= q.head:  # queued
            runs = o.runs
            ids = sub_list[i] if sub_list is not None else None
            o.bytes += size
            queued += 1
            if runs and not ids:
                r = runs[-1]
                n = r[2]
                if seq == r[0] + n and mid == r[1] + n and f == r[3] and r[4] is None:
                    r[2] = n + 1
                    continue
            runs.append([seq, mid, 1, f, tuple(ids) if ids else None])
            continue
        state = STATES[f >> 3]
        if state is None:  # left the queue: in flight if its session's runs say so
            pid = o.pids.get(seq) if o.pids else None
            if pid is None:
                continue
            state = "puback" if f & 3 == 1 else "pubrec"
        elif seq < q.floor:
            continue
        else:
            pid = pids[i]
        ids = sub_list[i] if sub_list is not None else None
        ids = tuple(ids) if ids else ()
        if f < 8:  # (as Batch.sent has it: flags with its state)
            q.sent[seq] = (seq, mid, f | (8 if f & 3 == 1 else 16), pid, ids)
        else:
            q.entries[seq] = (mid, f & 3, bool(f & RETAIN_FLAG), ids, pid, state)
        o.eager.append((seq, mid, f, ids, pid, state))
        live = True
    if queued:
        refs[mid] = refs.get(mid, 0) + queued
    return 2 if live else 1 if queued else 0


def _split(o: _Owner, refs: dict[int, int]) -> list[tuple]:
    """The session's first EAGER_QUEUED queued deliveries, as (seq, msg id, flags, subscription ids),
    taken out of its runs (the rest is its backlog)."""
    runs = o.runs
    if any(runs[i][0] < runs[i - 1][0] for i in range(1, len(runs))):  # entries recorded later (``queued``)
        runs.sort(key=_SEQ)
    eager = []
    taken = 0
    while runs and taken < EAGER_QUEUED:
        r = runs[0]
        seq, mid, n, f, ids = r
        k = min(n, EAGER_QUEUED - taken)
        for j in range(k):
            m = mid + j
            eager.append((seq + j, m, f, ids or ()))
            left = refs[m] - 1
            if left:
                refs[m] = left
            else:
                del refs[m]
        taken += k
        if k == n:
            del runs[0]
        else:
            r[0], r[1], r[2] = seq + k, mid + k, n - k
    return eager


def _deliveries(o: _Owner, rows: list[StoredDelivery], eager: list[tuple],
                messages: dict[int, StoredMessage]) -> list[StoredDelivery]:
    """The session's loaded deliveries in seq order: rows, in-flight entries, its first queued ones."""
    cid = o.client_id
    items = []
    for d in rows:
        m = messages.get(d.message)  # type: ignore[call-overload]
        if m is not None:  # (None: never written so by this store: left alone)
            d.message = m
            items.append(d)
    for seq, mid, f, ids, pid, state in o.eager:
        m = messages.get(mid)
        if m is not None:
            items.append(StoredDelivery(cid, seq, m, f & 3, bool(f & RETAIN_FLAG), ids, pid, state))
    for seq, mid, f, ids in eager:
        m = messages.get(mid)
        if m is not None:
            items.append(StoredDelivery(cid, seq, m, f & 3, bool(f & RETAIN_FLAG), ids, None, None))
    items.sort(key=_SEQ_OF)  # stable: of two entries with one seq (a batch made by hand), the later
    seqs = [d.seq for d in items]
    if len(set(seqs)) != len(seqs):
        items = [d for i, d in enumerate(items) if i + 1 == len(items) or items[i + 1].seq != d.seq]
    return items


def _seq_of(d: StoredDelivery) -> int:
    return d.seq


_SEQ_OF = _seq_of


def read_messages(db: sqlite3.Connection, msg_ids: list[int]) -> dict[int, StoredMessage]:
    """The stored messages with these ids (those that exist; ``msg_ids`` ascending): ranges of
    consecutive ids (a backlog's page, usually one) by BETWEEN, the others by IN."""
    out: dict[int, StoredMessage] = {}
    ranges, single = [], []
    i, n = 0, len(msg_ids)
    while i < n:
        j = i
        while j + 1 < n and msg_ids[j + 1] == msg_ids[j] + 1:
            j += 1
        if j - i >= 8:
            ranges.append((msg_ids[i], msg_ids[j]))
        else:
            single += msg_ids[i:j + 1]
        i = j + 1
    queries = [("BETWEEN ? AND ?", r) for r in ranges]
    queries += [(f"IN ({','.join('?' * len(single[k:k + READ_CHUNK]))})", single[k:k + READ_CHUNK])
                for k in range(0, len(single), READ_CHUNK)]
    for where, params in queries:
        for mid, topic, payload, qos, retain, props, origin, expiry, is_will in db.execute(
                "SELECT id, topic, payload, qos, retain, props, origin, expiry_at_wall, is_will FROM messages "
                f"WHERE id {where}", params):
            out[mid] = StoredMessage(topic, bytes(payload), qos, bool(retain), unprops(props), origin, expiry,
                                     bool(is_will), mid)
    return out
