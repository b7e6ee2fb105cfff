"""The SQLite store's queued and in-flight messages (schema version 7): a message is written once,
however many sessions wait for it. (Loading them: storage/msgload.py.)

Tables:
- ``messages``: one row per message (topic, payload, properties, origin, expiry, is_will), keyed by
  the id the writer gave it (``StoredMessage.msg_id``; the core's recorder counts its deliveries
  and deletes it in the transaction that deletes its last one), with the *entries* of the
  deliveries recorded in the same commit: per delivery (session number, seq, packet id, flags =
  qos | retain << 2 | ack state << 3), packed in columns, 11 bytes a delivery (``pack_entries``),
  plus the subscription identifiers as JSON when any delivery has some. Publishing one message to
  N offline sessions writes one row, not N: each b-tree a commit touches costs about a page write,
  and N rows keyed by session touched N pages (the store wrote ~1,400 bytes per queued delivery,
  and 200 sessions made 200 page writes per message). A message sent at once to a connected
  persistent subscriber is one row too: its entry holds the packet id and the ack state.
- ``queued``: the entries of deliveries recorded in a later commit than their message's (a
  retained message queued to a new subscriber, say), one row per message per commit.
- ``queues``: per session (keyed by client id) its number (``sno``, never reused, the next one is
  ``meta.next_sno``: a session of the same client id made later has another, so that the entries of
  the old one are not read as its own), its queue head (queued entries below it have left the
  queue: the core's recorder gives it, ``Batch.queue_heads``), its floor (entries below it are
  done: the lowest of the head and the seqs of its in-flight entries), ``gone``, the entries at
  or above the floor deleted out of order (a few in-flight ones acknowledged out of order), and
  ``sent`` (schema 6): the runs (first seq, last seq, packet id of the first) of its queued
  deliveries sent and not yet acknowledged, packet ids following the seqs (``run_add``).
- ``reclaim`` (schema 7): ranges of ids of messages no delivery needs, recorded while busy batches go
  on and deleted from ``messages`` RECLAIM_AT at a time (``_messages_deleted``).
- ``inflight``: a delivery whose state changed after its entry was written and its sent run (PUBREC
  received), or a session's sent deliveries past RUNS_LIMIT runs: one row, keyed by (sno, seq), that
  overrides the entry; bounded by the clients' Receive Maximum.

A delivery is live when its session exists, it is not in ``gone``, and: it has an ``inflight`` row,
or its entry is queued and at or above the head, or its entry is queued and its seq is in the
session's sent runs (in flight: awaiting PUBACK at QoS 1, PUBREC at QoS 2), or its entry is in
flight and at or above the floor. The store keeps in memory, per session, the seqs with a row and the live in-flight entries
(both bounded by the Receive Maximum), never the queued ones. Reclaiming a message deletes its row
(and its ``queued`` rows, found by an index on msg_id), in the transaction that deletes the last
delivery that needed it: a crash never leaves a delivery pointing at a missing message. The entries
of finished deliveries stay in their message's rows until the message goes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from operator import itemgetter

from ..codec.properties import encode_properties, read_properties
from .base import ACK_STATES, StoredDelivery, StoredMessage

TABLES = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, props BLOB NOT NULL, origin TEXT, expiry_at_wall REAL, is_will INTEGER NOT NULL,
    entries BLOB, subs TEXT
);
CREATE TABLE queued (part INTEGER PRIMARY KEY, msg_id INTEGER NOT NULL, entries BLOB NOT NULL, subs TEXT);
CREATE INDEX queued_msg ON queued (msg_id);
CREATE TABLE queues (
    client_id TEXT PRIMARY KEY, sno INTEGER NOT NULL, head INTEGER NOT NULL, floor INTEGER NOT NULL,
    gone TEXT NOT NULL, sent BLOB
) WITHOUT ROWID;
CREATE TABLE inflight (
    sno INTEGER NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, sub_ids TEXT, packet_id INTEGER NOT NULL, state TEXT,
    PRIMARY KEY (sno, seq)
) WITHOUT ROWID;
CREATE TABLE reclaim (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
"""

RETAIN_FLAG = 4  # flags: qos | retain << 2 | state code << 3
STATES = ACK_STATES  # an entry's ack state by its code (0: queued)
STATE_CODES = {s: i for i, s in enumerate(STATES)}
GONE_LIMIT = 1024  # past this many out-of-order deletions, a session's in-flight entries become rows
_FIRST = itemgetter(0)
RECLAIM_AT = 512  # messages done, deleted from ``messages`` together (``reclaim`` holds them until then)
RUNS_LIMIT = 1024  # past this many runs of sent deliveries (acknowledged out of order), they become rows


def props_blob(props: dict) -> bytes:
    return encode_properties(props, "PUBLISH") if props else b""


def unprops(blob: bytes) -> dict:
    if not blob:
        return {}
    props, _ = read_properties(memoryview(blob), 0, "PUBLISH")
    return props


def pack_entries(snos: list[int], seqs: list[int], pids: list[int], flags: list[int],
                 subs: list) -> tuple[bytes, str | None]:
    """Entries in columns: a width byte (4, or 8 when a number needs it), the session numbers and
    the seqs (that many bytes each), the packet ids (2 bytes, 0 when queued), the flags (1 byte):
    11 bytes a delivery; the subscription identifiers (a tuple per entry, or empty) as JSON when any
    entry has some."""
    width, code = (4, "I") if max(snos) < 1 << 32 and max(seqs) < 1 << 32 else (8, "q")
    blob = (bytes((width,)) + array(code, snos).tobytes() + array(code, seqs).tobytes()
            + array("H", pids).tobytes() + bytes(flags))
    return blob, (json.dumps([list(x) if x else None for x in subs], separators=(",", ":"))
                  if any(subs) else None)


_ONE = struct.Struct("<BIIHB")  # pack_entries of one entry, 4-byte numbers (the same bytes, faster)


def pack_one(sno: int, seq: int, pid: int, flags: int, sub_ids: tuple) -> tuple[bytes, str | None]:
    if sno < 1 << 32 and seq < 1 << 32:
        return _ONE.pack(4, sno, seq, pid, flags), (json.dumps([list(sub_ids)]) if sub_ids else None)
    return pack_entries([sno], [seq], [pid], [flags], [sub_ids])


def columns(blob: bytes) -> tuple[array, array, array, bytes]:
    """Packed entries as their columns: session numbers, seqs, packet ids (arrays) and flags (bytes)."""
    width = blob[0]
    code = "I" if width == 4 else "q"
    n = (len(blob) - 1) // (2 * width + 3)
    snos = array(code)
    snos.frombytes(blob[1:1 + width * n])
    seqs = array(code)
    seqs.frombytes(blob[1 + width * n:1 + 2 * width * n])
    pids = array("H")
    pids.frombytes(blob[1 + 2 * width * n:1 + 2 * width * n + 2 * n])
    return snos, seqs, pids, blob[1 + 2 * width * n + 2 * n:]


def decode_entries(blob: bytes, subs: str | None):
    """Yields (sno, seq, qos, retain, subscription ids, packet id or None, state) from packed entries."""
    snos, seqs, pids, flags = columns(blob)
    n = len(snos)
    sub_list = json.loads(subs) if subs else None
    for i in range(n):
        f = flags[i]
        ids = sub_list[i] if sub_list is not None else None
        state = STATES[f >> 3]
        yield (snos[i], seqs[i], f & 3, bool(f & RETAIN_FLAG), tuple(ids) if ids else (),
               pids[i] if state is not None else None, state)


def run_add(runs: list[list[int]], seq: int, pid: int) -> None:
    """``seq`` sent with packet id ``pid``: into the runs [first seq, last seq, packet id of the
    first], in each of which the packet ids follow the seqs (as the core gives them: 65535, then 1)."""
    if runs:
        last = runs[-1]
        if seq == last[1] + 1 and pid == (last[2] + last[1] - last[0]) % 65535 + 1:
            last[1] = seq
            return
        if seq < last[1]:  # not after the last one (the core sends a queue in seq order): in its place
            runs.append([seq, seq, pid])
            runs.sort()
            return
    runs.append([seq, seq, pid])


def run_remove(runs: list[list[int]], seq: int) -> None:
    """``seq`` is no longer in flight: out of its run (the first, when acknowledged in order)."""
    if not runs:
        return
    i = 0 if runs[0][0] == seq else bisect_right(runs, seq, key=_FIRST) - 1
    if i < 0:
        return
    r = runs[i]
    first, last, pid = r
    if not first <= seq <= last:
        return
    if first == last:
        del runs[i]
    elif seq == first:
        r[0] = seq + 1
        r[2] = pid % 65535 + 1
    elif seq == last:
        r[1] = seq - 1
    else:
        runs.insert(i + 1, [seq + 1, last, (pid + seq - first) % 65535 + 1])
        r[1] = seq - 1


def runs_remove(runs: list[list[int]], seqs: list[int]) -> None:
    """``run_remove`` of each of ``seqs`` (ascending): those acknowledged in order, from the front of
    the first run, in one step."""
    i = 0
    n = len(seqs)
    while i < n and runs:
        r = runs[0]
        first, last = r[0], r[1]
        j = i
        while j < n and seqs[j] == first + (j - i) and seqs[j] <= last:
            j += 1
        if j == i:
            run_remove(runs, seqs[i])
            i += 1
            continue
        k = j - i  # the first k of the first run, acknowledged
        if first + k > last:
            del runs[0]
        else:
            r[0] = first + k
            r[2] = (r[2] - 1 + k) % 65535 + 1
        i = j


def id_ranges(ids) -> list[tuple[int, int]]:
    """Ids as (first, last) ranges of consecutive ones, ascending."""
    ranges = []
    first = last = -2
    for mid in sorted(ids):
        if mid != last + 1:
            if first >= 0:
                ranges.append((first, last))
            first = mid
        last = mid
    if first >= 0:
        ranges.append((first, last))
    return ranges


def pack_runs(runs: list[list[int]]) -> bytes:
    return array("q", [n for r in runs for n in r]).tobytes()


def unpack_runs(blob: bytes | None) -> dict[int, int]:
    """The packet id of each seq the packed runs hold."""
    if not blob:
        return {}
    flat = array("q")
    flat.frombytes(blob)
    out = {}
    for i in range(0, len(flat), 3):
        first, last, pid = flat[i], flat[i + 1], flat[i + 2]
        for seq in range(first, last + 1):
            out[seq] = (pid - 1 + seq - first) % 65535 + 1
    return out


class _Columns:
    """The entries of one message being written in this commit."""

    __slots__ = ("snos", "seqs", "pids", "flags", "subs")

    def __init__(self) -> None:
        self.snos: list[int] = []
        self.seqs: list[int] = []
        self.pids: list[int] = []
        self.flags: list[int] = []
        self.subs: list = []

    def add(self, sno: int, seq: int, qos: int, retain: bool, sub_ids, pid: int | None, state: str | None) -> None:
        self.snos.append(sno)
        self.seqs.append(seq)
        self.pids.append(pid or 0)
        self.flags.append(qos | (RETAIN_FLAG if retain else 0) | STATE_CODES[state] << 3)
        self.subs.append(tuple(sub_ids))

    def pack(self) -> tuple[bytes, str | None]:
        return pack_entries(self.snos, self.seqs, self.pids, self.flags, self.subs)


@dataclass(slots=True)
class Queue:
    """What the store knows of one session's deliveries (in memory: bounded by its Receive Maximum)."""

    sno: int
    head: int = 0
    floor: int = 0
    gone: set[int] = field(default_factory=set)
    rows: set[int] = field(default_factory=set)  # seqs with an ``inflight`` row
    # live in-flight entries: seq -> (msg_id, qos, retain, subscription ids, packet id, state)
    entries: dict[int, tuple] = field(default_factory=dict)
    # queued entries sent and not yet acknowledged: seq -> (seq, msg_id, flags, packet id, subscription
    # ids) as Batch.sent has them (in flight by ``runs``, not by their entry, which says queued), and
    # their (first seq, last seq, packet id of the first) runs, as the queues row keeps them
    sent: dict[int, tuple] = field(default_factory=dict)
    runs: list[list[int]] = field(default_factory=list)

    def take_rows(self, live: dict[int, tuple]) -> list[tuple]:
        """``live`` (``entries``) as ``inflight`` rows; emptied."""
        out = []
        for seq, (mid, qos, retain, ids, pid, state) in live.items():
            out.append((self.sno, seq, mid, qos, int(retain), json.dumps(list(ids)) if ids else None, pid, state))
            self.rows.add(seq)
        live.clear()
        return out

    def take_sent_rows(self) -> list[tuple]:
        """``sent`` as ``inflight`` rows; emptied, with the runs."""
        out = []
        for seq, mid, f, pid, ids in self.sent.values():
            out.append((self.sno, seq, mid, f & 3, int(bool(f & RETAIN_FLAG)), json.dumps(list(ids)) if ids else None,
                        pid, STATES[f >> 3]))
            self.rows.add(seq)
        self.sent.clear()
        self.runs.clear()
        return out

    def settle(self) -> None:
        """The floor from the head and the live in-flight entries; ``gone`` below it forgotten."""
        self.floor = min(self.head, min(self.entries)) if self.entries else self.head
        if self.gone:
            floor = self.floor
            self.gone = {s for s in self.gone if s >= floor}


class MessageLog:
    """Reads and writes the tables above inside the SQLite store's transactions."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.next_sno = 1
        self.next_msg_id = 1  # above every message row written (ids of msg_id-0 messages come from here)
        self.next_part = 1
        self.with_parts: set[int] = set()  # messages with ``queued`` rows
        # messages no delivery needs, not deleted yet (at most RECLAIM_AT): the ``reclaim`` table's ids
        self.reclaim: set[int] = set()

    # ---- writing (inside the caller's transaction) ----------------------------------------------
    def queue_of(self, client_id: str, new_rows: dict[str, Queue]) -> Queue:
        q = self.queues.get(client_id)
        if q is None:
            q = self.queues[client_id] = Queue(self.next_sno)
            self.next_sno += 1
            new_rows[client_id] = q
        return q

    def sessions_deleted(self, db: sqlite3.Connection, client_ids) -> None:
        gone = [(cid, q) for cid in client_ids if (q := self.queues.get(cid)) is not None]
        if gone:
            db.executemany("DELETE FROM queues WHERE client_id = ?", [(cid,) for cid, _ in gone])
            db.executemany("DELETE FROM inflight WHERE sno = ?", [(q.sno,) for _, q in gone if q.rows])
            for cid, _ in gone:
                del self.queues[cid]

    def write(self, db: sqlite3.Connection, deliveries: dict[tuple[str, int], StoredDelivery],
              deleted: set[tuple[str, int]], messages: dict[int, StoredMessage], messages_deleted: set[int],
              heads: dict[str, int], queued_in: dict[int, tuple] | None = None,
              sent: dict[str, list[tuple]] | None = None) -> None:
        """Apply a batch's deliveries and messages (sessions deleted before, see sessions_deleted):
        its new entries (``queued_in``), the queued deliveries sent (``sent``), the deliveries put
        and deleted one by one, the queue heads, the messages written and deleted."""
        work = _Work()
        fast = self._pack_queued(queued_in, work) if queued_in else {}
        columns, written, inflight_rows = self._puts(deliveries, messages, work)
        self._write_messages(db, written, fast, columns)
        if sent:
            self._sent(sent, work)
        if inflight_rows:
            db.executemany("INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?,?,?,?)", inflight_rows)
        queues = self.queues
        changed = work.changed
        for cid, head in heads.items():
            q = queues.get(cid) or self.queue_of(cid, work.new_rows)
            if head != q.head:
                q.head = head
                changed[cid] = q
        if deleted:
            self._deletes(db, deleted, changed)
        self._spill(db, changed)
        self._queue_rows(db, work)
        if messages_deleted or self.reclaim:
            # while a batch also writes deliveries (a queue draining, a flood), the messages it is done
            # with are recorded in ``reclaim`` and deleted RECLAIM_AT at a time: a few rows deleted
            # per commit cost ~5.6 us each (the pages they dirty), 500 at once ~1.5 us
            busy = bool(queued_in or sent or deliveries)
            self._messages_deleted(db, messages_deleted, flush=not busy)

    def _pack_queued(self, queued_in: dict[int, tuple], work: _Work) -> dict[int, tuple[bytes, str | None]]:
        """Batch.queued, packed as it came (one row's entries per message); the entries in flight at
        once become their sessions' live in-flight entries."""
        queues = self.queues
        new_rows, changed = work.new_rows, work.changed
        fast: dict[int, tuple[bytes, str | None]] = {}
        for mid, (clients, seqs, flags, pids, sub_ids) in queued_in.items():
            if len(clients) == 1:  # one delivery (a persistent subscriber's fan-in): no columns
                c = clients[0]
                q = queues.get(c) or self.queue_of(c, new_rows)
                f = flags[0]
                if f >> 3:
                    q.entries[seqs[0]] = (mid, f & 3, bool(f & RETAIN_FLAG), sub_ids[0], pids[0], STATES[f >> 3])
                    changed[c] = q
                fast[mid] = pack_one(q.sno, seqs[0], pids[0], f, sub_ids[0])
                continue
            try:
                snos = [queues[c].sno for c in clients]
            except KeyError:  # a session's first stored delivery: its queue is made
                for c in clients:
                    if c not in queues:
                        self.queue_of(c, new_rows)
                snos = [queues[c].sno for c in clients]
            if any(pids):  # in flight at once: the session's live in-flight entries
                for c, seq, f, pid, ids in zip(clients, seqs, flags, pids, sub_ids, strict=True):
                    if f >> 3:
                        q = queues[c]
                        q.entries[seq] = (mid, f & 3, bool(f & RETAIN_FLAG), ids, pid, STATES[f >> 3])
                        changed[c] = q
            fast[mid] = pack_entries(snos, seqs, pids, flags, sub_ids)
        return fast

    def _puts(self, deliveries: dict[tuple[str, int], StoredDelivery], messages: dict[int, StoredMessage],
              work: _Work) -> tuple[dict[int, _Columns], dict[int, StoredMessage], list[tuple]]:
        """Deliveries put one by one: in flight (a row each) or queued (entries by message); the
        messages to write, with those of deliveries whose message has no id (a row of its own)."""
        queues = self.queues
        columns: dict[int, _Columns] = {}
        auto: dict[int, int] = {}  # id() of a StoredMessage without msg_id -> the id it is given here
        written: dict[int, StoredMessage] = dict(messages)
        next_id = self.next_msg_id
        inflight_rows = []
        for (cid, seq), d in deliveries.items():
            m = d.message
            mid = m.msg_id
            if not mid:  # a message without an id (a batch made by hand): a row of its own
                mid = auto.get(id(m))
                if mid is None:
                    mid = auto[id(m)] = next_id
                    next_id += 1
                    written[mid] = m
            q = queues.get(cid) or self.queue_of(cid, work.new_rows)
            if d.packet_id is not None:
                q.rows.add(seq)
                if q.entries.pop(seq, None) is not None:
                    work.changed[cid] = q
                if q.sent and q.sent.pop(seq, None) is not None:  # the row says more now (PUBREC came)
                    run_remove(q.runs, seq)
                    work.changed[cid] = q
                inflight_rows.append((q.sno, seq, mid, d.qos, int(d.retain),
                                      json.dumps(list(d.subscription_ids)) if d.subscription_ids else None,
                                      d.packet_id, d.state))
            else:
                cols = columns.get(mid)
                if cols is None:
                    cols = columns[mid] = _Columns()
                cols.add(q.sno, seq, d.qos, d.retain, d.subscription_ids, None, None)
        if written:
            next_id = max(next_id, max(written) + 1)
        self.next_msg_id = next_id
        return columns, written, inflight_rows

    def _write_messages(self, db: sqlite3.Connection, written: dict[int, StoredMessage],
                        fast: dict[int, tuple[bytes, str | None]], columns: dict[int, _Columns]) -> None:
        """The message rows (with the entries recorded with them) and the ``queued`` rows."""
        msg_rows = []
        part_rows = []
        none = (None, None)
        fast_pop = fast.pop
        for mid, m in written.items():
            packed = fast_pop(mid, none)
            if columns:
                cols = columns.pop(mid, None)
                if cols is not None:
                    if packed is not none:  # both kinds in one commit: a second row for the second
                        part_rows.append((mid, *cols.pack()))
                    else:
                        packed = cols.pack()
            msg_rows.append((mid, m.topic, m.payload, m.qos, m.retain, encode_properties(m.properties, "PUBLISH")
                             if m.properties else b"", m.origin, m.expiry_at_wall, m.is_will, *packed))
        for mid, packed in fast.items():  # entries of messages stored before
            part_rows.append((mid, *packed))
        for mid, cols in columns.items():
            part_rows.append((mid, *cols.pack()))
        if msg_rows:
            db.executemany("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)", msg_rows)
            if self.reclaim and not self.reclaim.isdisjoint(written):  # needed again (a retained message
                # queued anew): no longer to delete
                self.reclaim.difference_update(written)
                db.execute("DELETE FROM reclaim")
                db.executemany("INSERT INTO reclaim VALUES (?,?)", id_ranges(self.reclaim))
        if part_rows:
            part = self.next_part
            rows = []
            for mid, blob, subs in part_rows:
                rows.append((part, mid, blob, subs))
                self.with_parts.add(mid)
                part += 1
            self.next_part = part
            db.executemany("INSERT INTO queued VALUES (?,?,?,?)", rows)

    def _sent(self, sent: dict[str, list[tuple]], work: _Work) -> None:
        """Queued deliveries gone in flight: their entries (which say queued) are live in flight
        while the session's ``sent`` runs hold them; no row each."""
        queues = self.queues
        for cid, items in sent.items():
            q = queues.get(cid) or self.queue_of(cid, work.new_rows)
            live = q.sent
            runs = q.runs
            for item in items:
                seq = item[0]
                pid = item[3]
                live[seq] = item
                last = runs[-1] if runs else None
                if last is not None and seq == last[1] + 1 and pid == (last[2] + seq - 1 - last[0]) % 65535 + 1:
                    last[1] = seq  # (run_add's common case)
                else:
                    run_add(runs, seq, pid)
            work.changed[cid] = q

    def _deletes(self, db: sqlite3.Connection, deleted: set[tuple[str, int]], changed: dict[str, Queue]) -> None:
        """Deliveries done: a row deleted, a sent one out of its runs, an in-flight entry (or, out
        of queue order, a queued one) remembered in ``gone`` while above the floor."""
        queues = self.queues
        done_rows = []
        later: dict[int, tuple[Queue, list[int]]] = {}  # in-flight entries done: gone if above the floor
        unsent: dict[int, tuple[Queue, list[int]]] = {}  # sent ones done: out of their runs, in seq order
        last_cid, q = None, None
        for cid, seq in deleted:
            if cid != last_cid:
                last_cid, q = cid, queues.get(cid)
            if q is None:
                continue
            if q.sent and q.sent.pop(seq, None) is not None:
                done = unsent.get(q.sno)
                if done is None:
                    done = unsent[q.sno] = (q, [])
                    changed[cid] = q
                done[1].append(seq)
            elif seq in q.rows:
                q.rows.discard(seq)
                done_rows.append((q.sno, seq))
                if q.entries.pop(seq, None) is not None:
                    changed[cid] = q
            elif q.entries.pop(seq, None) is not None:
                done = later.get(q.sno)
                if done is None:
                    done = later[q.sno] = (q, [])
                    changed[cid] = q
                done[1].append(seq)
            elif seq >= q.head:  # a queued entry, out of queue order (a batch made by hand)
                q.gone.add(seq)
                changed[cid] = q
        if done_rows:
            db.executemany("DELETE FROM inflight WHERE sno = ? AND seq = ?", done_rows)
        for q, seqs in unsent.values():
            runs_remove(q.runs, sorted(seqs))
        for q, seqs in later.values():
            q.settle()
            q.gone.update(seq for seq in seqs if seq >= q.floor)

    @staticmethod
    def _spill(db: sqlite3.Connection, changed: dict[str, Queue]) -> None:
        """Past GONE_LIMIT out-of-order deletions (or RUNS_LIMIT runs of sent deliveries), a
        session's live in-flight entries (its sent ones) become rows: what its queues row says stays
        bounded."""
        spill = []
        for q in changed.values():
            q.settle()
            if len(q.gone) > GONE_LIMIT:  # in-flight entries held back the floor: made rows
                spill += q.take_rows(q.entries)
                q.settle()
            if len(q.runs) > RUNS_LIMIT:
                spill += q.take_sent_rows()
        if spill:
            db.executemany("INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?,?,?,?)", spill)

    def _queue_rows(self, db: sqlite3.Connection, work: _Work) -> None:
        changed = work.changed
        for cid, q in work.new_rows.items():
            changed[cid] = q
        if work.new_rows:  # numbers are never given twice, also after a restart (those of deleted sessions
            # are still in the entries of messages other sessions need)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_sno', ?)", (str(self.next_sno),))
        if changed:
            db.executemany("INSERT OR REPLACE INTO queues VALUES (?,?,?,?,?,?)", [
                (cid, q.sno, q.head, q.floor, json.dumps(sorted(q.gone)) if q.gone else "[]",
                 pack_runs(q.runs) if q.runs else None)
                for cid, q in changed.items()])

    def _messages_deleted(self, db: sqlite3.Connection, messages_deleted: set[int], flush: bool) -> None:
        """Deleted by ranges of consecutive ids (a queue drained in order: a range per commit), now or,
        ``flush`` False, once RECLAIM_AT are pending (recorded in ``reclaim`` in this transaction: a
        crash leaves them there, and the loader knows them for done)."""
        reclaim = self.reclaim
        if not flush and len(reclaim) + len(messages_deleted) < RECLAIM_AT:
            if messages_deleted:
                db.executemany("INSERT OR REPLACE INTO reclaim VALUES (?,?)", id_ranges(messages_deleted))
                reclaim.update(messages_deleted)
            return
        done = reclaim | messages_deleted if reclaim else messages_deleted
        if reclaim:
            db.execute("DELETE FROM reclaim")
            self.reclaim = set()
        db.executemany("DELETE FROM messages WHERE id BETWEEN ? AND ?", id_ranges(done))
        with_parts = self.with_parts
        if with_parts:
            parts = [(mid,) for mid in done if mid in with_parts]
            if parts:
                db.executemany("DELETE FROM queued WHERE msg_id = ?", parts)
                with_parts.difference_update(mid for (mid,) in parts)


class _Work:
    """What one write changed: the queues made (their rows are new) and the queues to write."""

    __slots__ = ("new_rows", "changed")

    def __init__(self) -> None:
        self.new_rows: dict[str, Queue] = {}
        self.changed: dict[str, Queue] = {}


def migrate_from_v5(db: sqlite3.Connection) -> None:
    """Schema 5 -> 6: ``queues.sent``, the runs of a session's queued deliveries sent and not yet
    acknowledged (none in a schema-5 store: those had ``inflight`` rows, which stay). A store
    migrated from schema 4 in the same start-up has the column already (TABLES is the current one)."""
    if "sent" not in {row[1] for row in db.execute("PRAGMA table_info(queues)")}:
        db.execute("ALTER TABLE queues ADD COLUMN sent BLOB")


def migrate_from_v4(db: sqlite3.Connection) -> None:
    """Schema 4 -> 5 inside the caller's transaction (statement by statement: executescript would
    commit it): the ``deliveries`` rows (each with its own copy of the message) become one
    ``messages`` row per distinct message with the entries of its deliveries (queued, or in flight
    with their packet id and state); identical copies (same topic, payload, properties, origin,
    expiry, will flag) become one message."""
    for statement in TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    by_content: dict[tuple, int] = {}
    snos: dict[str, int] = {}
    columns: dict[int, _Columns] = {}
    rows = []
    for row in db.execute("SELECT client_id, seq, qos, retain, subscription_ids, packet_id, state, topic, payload, "
                          "msg_qos, msg_retain, props, origin, expiry_at_wall, is_will FROM deliveries "
                          "ORDER BY client_id, seq").fetchall():
        (cid, seq, qos, retain, sub_ids, pid, state, topic, payload, mqos, mretain, props, origin, expiry,
         is_will) = row
        key = (topic, hashlib.sha256(payload).digest(), len(payload), mqos, mretain, bytes(props), origin, expiry,
               is_will)
        mid = by_content.get(key)
        if mid is None:
            mid = by_content[key] = len(by_content) + 1
            rows.append([mid, topic, payload, mqos, mretain, props, origin, expiry, is_will])
            columns[mid] = _Columns()
        sno = snos.get(cid)
        if sno is None:
            sno = snos[cid] = len(snos) + 1
        ids = tuple(json.loads(sub_ids)) if sub_ids and sub_ids != "[]" else ()
        in_flight = pid is not None and state in STATE_CODES
        columns[mid].add(sno, seq, qos, bool(retain), ids, pid if in_flight else None, state if in_flight else None)
    for row in rows:
        db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?)", (*row, *columns[row[0]].pack()))
    db.executemany("INSERT INTO queues (client_id, sno, head, floor, gone) VALUES (?,?,?,?,?)",
                   [(cid, sno, 0, 0, "[]") for cid, sno in snos.items()])
    db.execute("INSERT OR REPLACE INTO meta VALUES ('next_sno', ?)", (str(len(snos) + 1),))
    db.execute("DROP TABLE deliveries")
