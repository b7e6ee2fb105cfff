"""The SQLite store's queued and in-flight messages (schema version 5): a message is written once,
however many sessions wait for it.

Tables:
- ``messages``: one row per message (topic, payload, properties, origin, expiry, is_will), keyed by
  the id the writer gave it (``StoredMessage.msg_id``; the core's recorder counts its deliveries
  and deletes it in the transaction that deletes its last one).
- ``queued``: the sessions a message was queued for, one row per message per commit: a packed array
  of (session number, seq, flags) triples, 24 bytes a delivery, plus the subscription identifiers
  as JSON when any delivery has some. Publishing one message to N offline sessions writes one
  ``messages`` row and one ``queued`` row, not N rows: each b-tree a commit touches costs about a
  page write, and N rows keyed by session touched N pages (the store wrote ~1,400 bytes per queued
  delivery, and 200 sessions made 200 page writes per message).
- ``queues``: per session (keyed by client id) its number (``sno``, never reused, the next one is
  ``meta.next_sno``: a session of the same client id made later has another, so that the entries of
  the old one are not read as its own), its queue head (the entries below it have left the queue) and the entries at or above the
  head deleted out of order (``gone``: stays empty with the core's recorder, which pops queues from
  the front and gives the head in ``Batch.queue_heads``).
- ``inflight``: one row per delivery in flight (packet id, ack state), keyed by (sno, seq); bounded
  by the clients' Receive Maximum.

A queued entry is live when its session exists, its seq is at or above the session's head, it is
not in ``gone`` and the same (session, seq) has no in-flight row. Reclaiming a message deletes its
``messages`` row and its ``queued`` rows (an index on msg_id), in the transaction that deletes the
last delivery that needed it: a crash never leaves a delivery pointing at a missing message. The
entries of consumed deliveries stay in their message's ``queued`` rows until the message goes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from array import array
from dataclasses import dataclass, field

from ..codec.properties import encode_properties, read_properties
from .base import StoredDelivery, StoredMessage

TABLES = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, props BLOB NOT NULL, origin TEXT, expiry_at_wall REAL, is_will INTEGER NOT NULL
);
CREATE TABLE queued (part INTEGER PRIMARY KEY, msg_id INTEGER NOT NULL, entries BLOB NOT NULL, subs TEXT);
CREATE INDEX queued_msg ON queued (msg_id);
CREATE TABLE queues (
    client_id TEXT PRIMARY KEY, sno INTEGER NOT NULL, head INTEGER NOT NULL, gone TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE inflight (
    sno INTEGER NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, sub_ids TEXT, packet_id INTEGER NOT NULL, state TEXT,
    PRIMARY KEY (sno, seq)
) WITHOUT ROWID;
"""

_RETAIN_FLAG = 4  # flags: qos | retain << 2


def props_blob(props: dict) -> bytes:
    return encode_properties(props, "PUBLISH") if props else b""


def unprops(blob: bytes) -> dict:
    if not blob:
        return {}
    props, _ = read_properties(memoryview(blob), 0, "PUBLISH")
    return props


def encode_entries(entries: list[tuple[int, int, int, bool, tuple[int, ...]]]) -> tuple[bytes, str | None]:
    """(sno, seq, qos, retain, subscription ids) entries as stored in one ``queued`` row."""
    flat = array("q")
    subs = None
    for i, (sno, seq, qos, retain, sub_ids) in enumerate(entries):
        flat.append(sno)
        flat.append(seq)
        flat.append(qos | _RETAIN_FLAG if retain else qos)
        if sub_ids:
            if subs is None:
                subs = [None] * len(entries)
            subs[i] = list(sub_ids)
    return flat.tobytes(), (json.dumps(subs, separators=(",", ":")) if subs is not None else None)


def decode_entries(blob: bytes, subs: str | None):
    """Yields (sno, seq, qos, retain, subscription ids) from one ``queued`` row."""
    flat = array("q")
    flat.frombytes(blob)
    sub_list = json.loads(subs) if subs else None
    for i in range(len(flat) // 3):
        flags = flat[3 * i + 2]
        ids = sub_list[i] if sub_list is not None else None
        yield flat[3 * i], flat[3 * i + 1], flags & 3, bool(flags & _RETAIN_FLAG), tuple(ids) if ids else ()


@dataclass(slots=True)
class Queue:
    """What the store knows of one session's deliveries (all of it is in the ``queues`` row)."""

    sno: int
    head: int = 0
    gone: set[int] = field(default_factory=set)
    inflight: set[int] = field(default_factory=set)  # seqs with an in-flight row


class MessageLog:
    """Reads and writes the tables above inside the SQLite store's transactions."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.next_sno = 1
        self.next_msg_id = 1  # above every message row written (ids of msg_id-0 messages come from here)
        self.next_part = 1

    # ---- loading -----------------------------------------------------------------------------
    def load(self, db: sqlite3.Connection) -> tuple[dict[str, list[StoredDelivery]], int, set[int]]:
        """Every live delivery by client (seq order), the next message id, the unreferenced messages."""
        queues = self.queues
        queues.clear()
        by_sno: dict[int, tuple[str, Queue]] = {}
        for client_id, sno, head, gone in db.execute("SELECT client_id, sno, head, gone FROM queues"):
            q = queues[client_id] = Queue(sno, head, set(json.loads(gone)) if gone != "[]" else set())
            by_sno[sno] = (client_id, q)
        row = db.execute("SELECT value FROM meta WHERE key = 'next_sno'").fetchone()
        self.next_sno = max(max(by_sno, default=0) + 1, int(row[0]) if row else 1)
        messages: dict[int, StoredMessage] = {}
        for row in db.execute("SELECT id, topic, payload, qos, retain, props, origin, expiry_at_wall, is_will "
                              "FROM messages"):
            mid, topic, payload, qos, retain, props, origin, expiry, is_will = row
            messages[mid] = StoredMessage(topic, bytes(payload), qos, bool(retain), unprops(props), origin, expiry,
                                          bool(is_will), mid)
        self.next_msg_id = max(messages, default=0) + 1
        out: dict[str, list[StoredDelivery]] = {}
        used: set[int] = set()
        for sno, seq, mid, qos, retain, sub_ids, pid, state in db.execute(
                "SELECT sno, seq, msg_id, qos, retain, sub_ids, packet_id, state FROM inflight"):
            owner = by_sno.get(sno)
            m = messages.get(mid)
            if owner is None or m is None:  # never written so by this store: left alone
                continue
            owner[1].inflight.add(seq)
            used.add(mid)
            out.setdefault(owner[0], []).append(StoredDelivery(
                owner[0], seq, m, qos, bool(retain), tuple(json.loads(sub_ids)) if sub_ids else (), pid, state))
        max_part = 0
        for part, mid, blob, subs in db.execute("SELECT part, msg_id, entries, subs FROM queued"):
            max_part = max(max_part, part)
            m = messages.get(mid)
            if m is None:
                continue
            for sno, seq, qos, retain, sub_ids in decode_entries(blob, subs):
                owner = by_sno.get(sno)
                if owner is None:
                    continue
                q = owner[1]
                if seq < q.head or seq in q.gone or seq in q.inflight:
                    continue
                used.add(mid)
                out.setdefault(owner[0], []).append(StoredDelivery(owner[0], seq, m, qos, retain, sub_ids))
        self.next_part = max_part + 1
        for items in out.values():
            items.sort(key=lambda d: d.seq)
        return out, self.next_msg_id, set(messages) - used

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
            db.executemany("DELETE FROM inflight WHERE sno = ?", [(q.sno,) for _, q in gone if q.inflight])
            for cid, _ in gone:
                del self.queues[cid]

    def write(self, db: sqlite3.Connection, deliveries: dict[tuple[str, int], StoredDelivery],
              deleted: set[tuple[str, int]], messages: dict[int, StoredMessage], messages_deleted: set[int],
              heads: dict[str, int], queued_in: dict[int, list] | None = None) -> None:
        """Apply a batch's deliveries and messages (sessions deleted before, see sessions_deleted)."""
        new_rows: dict[str, Queue] = {}
        changed: dict[str, Queue] = {}
        msg_rows = []
        auto: dict[int, int] = {}  # id() of a StoredMessage without msg_id -> the id it is given here
        next_id = self.next_msg_id
        for mid, m in messages.items():
            msg_rows.append((mid, m.topic, m.payload, m.qos, int(m.retain), props_blob(m.properties), m.origin,
                             m.expiry_at_wall, int(m.is_will)))
            if mid >= next_id:
                next_id = mid + 1
        queued: dict[int, list] = {}
        rows = []
        if queued_in:  # Batch.queued: entries as the recorder keeps them, packed here
            queues = self.queues
            part = self.next_part
            for mid, entries in queued_in.items():
                flat = array("q")
                subs = None
                for i, (cid, seq, flags, sub_ids) in enumerate(entries):
                    q = queues.get(cid)
                    if q is None:
                        q = self.queue_of(cid, new_rows)
                    flat.extend((q.sno, seq, flags))
                    if sub_ids:
                        if subs is None:
                            subs = [None] * len(entries)
                        subs[i] = list(sub_ids)
                rows.append((part, mid, flat.tobytes(),
                             json.dumps(subs, separators=(",", ":")) if subs is not None else None))
                part += 1
            self.next_part = part
        inflight_rows = []
        for (cid, seq), d in deliveries.items():
            m = d.message
            mid = m.msg_id
            if not mid:  # a message without an id (a batch made by hand): a row of its own
                mid = auto.get(id(m))
                if mid is None:
                    mid = auto[id(m)] = next_id
                    next_id += 1
                    msg_rows.append((mid, m.topic, m.payload, m.qos, int(m.retain), props_blob(m.properties),
                                     m.origin, m.expiry_at_wall, int(m.is_will)))
            elif mid >= next_id:
                next_id = mid + 1
            q = self.queue_of(cid, new_rows)
            if d.packet_id is not None:
                q.inflight.add(seq)
                inflight_rows.append((q.sno, seq, mid, d.qos, int(d.retain),
                                      json.dumps(list(d.subscription_ids)) if d.subscription_ids else None,
                                      d.packet_id, d.state))
            else:
                entries = queued.get(mid)
                if entries is None:
                    entries = queued[mid] = []
                entries.append((q.sno, seq, d.qos, d.retain, d.subscription_ids))
        self.next_msg_id = next_id
        if msg_rows:
            db.executemany("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?)", msg_rows)
        if queued:
            part = self.next_part
            for mid, entries in queued.items():
                blob, subs = encode_entries(entries)
                rows.append((part, mid, blob, subs))
                part += 1
            self.next_part = part
        if rows:
            db.executemany("INSERT INTO queued VALUES (?,?,?,?)", rows)
        if inflight_rows:
            db.executemany("INSERT OR REPLACE INTO inflight VALUES (?,?,?,?,?,?,?,?)", inflight_rows)
        for cid, head in heads.items():
            q = self.queue_of(cid, new_rows)
            if head != q.head:
                q.head = head
                if q.gone:
                    q.gone = {s for s in q.gone if s >= head}
                changed[cid] = q
        if deleted:
            done_inflight = []
            for cid, seq in deleted:
                q = self.queues.get(cid)
                if q is None:
                    continue
                if seq in q.inflight:
                    q.inflight.discard(seq)
                    done_inflight.append((q.sno, seq))
                if seq >= q.head:  # out of queue order (a batch made by hand): remembered one by one
                    q.gone.add(seq)
                    changed[cid] = q
            if done_inflight:
                db.executemany("DELETE FROM inflight WHERE sno = ? AND seq = ?", done_inflight)
        for cid, q in new_rows.items():
            changed[cid] = q
        if new_rows:  # numbers are never given twice, also after a restart (those of deleted sessions
            # are still in the entries of messages other sessions need)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_sno', ?)", (str(self.next_sno),))
        if changed:
            db.executemany("INSERT OR REPLACE INTO queues VALUES (?,?,?,?)", [
                (cid, q.sno, q.head, json.dumps(sorted(q.gone)) if q.gone else "[]") for cid, q in changed.items()])
        if messages_deleted:
            ids = [(mid,) for mid in messages_deleted]
            db.executemany("DELETE FROM queued WHERE msg_id = ?", ids)
            db.executemany("DELETE FROM messages WHERE id = ?", ids)


def migrate_from_v4(db: sqlite3.Connection) -> None:
    """Schema 4 -> 5 inside the caller's transaction (statement by statement: executescript would
    commit it): the ``deliveries`` rows (each with its own copy
    of the message) become one ``messages`` row per distinct message, ``queued`` entries for the
    queued deliveries and ``inflight`` rows for the others; identical copies (same topic, payload,
    properties, origin, expiry, will flag) become one message."""
    for statement in TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    by_content: dict[tuple, int] = {}
    snos: dict[str, int] = {}
    queued: dict[int, list] = {}
    next_id = 1
    for row in db.execute("SELECT client_id, seq, qos, retain, subscription_ids, packet_id, state, topic, payload, "
                          "msg_qos, msg_retain, props, origin, expiry_at_wall, is_will FROM deliveries "
                          "ORDER BY client_id, seq").fetchall():
        (cid, seq, qos, retain, sub_ids, pid, state, topic, payload, mqos, mretain, props, origin, expiry,
         is_will) = row
        key = (topic, hashlib.sha256(payload).digest(), len(payload), mqos, mretain, bytes(props), origin, expiry,
               is_will)
        mid = by_content.get(key)
        if mid is None:
            mid = by_content[key] = next_id
            next_id += 1
            db.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?)",
                       (mid, topic, payload, mqos, mretain, props, origin, expiry, is_will))
        sno = snos.get(cid)
        if sno is None:
            sno = snos[cid] = len(snos) + 1
        ids = tuple(json.loads(sub_ids)) if sub_ids and sub_ids != "[]" else ()
        if pid is not None:
            db.execute("INSERT INTO inflight VALUES (?,?,?,?,?,?,?,?)",
                       (sno, seq, mid, qos, retain, json.dumps(list(ids)) if ids else None, pid, state))
        else:
            queued.setdefault(mid, []).append((sno, seq, qos, bool(retain), ids))
    for part, (mid, entries) in enumerate(sorted(queued.items()), start=1):
        blob, subs = encode_entries(entries)
        db.execute("INSERT INTO queued VALUES (?,?,?,?)", (part, mid, blob, subs))
    db.executemany("INSERT INTO queues VALUES (?,?,?,?)", [(cid, sno, 0, "[]") for cid, sno in snos.items()])
    db.execute("INSERT OR REPLACE INTO meta VALUES ('next_sno', ?)", (str(len(snos) + 1),))
    db.execute("DROP TABLE deliveries")
