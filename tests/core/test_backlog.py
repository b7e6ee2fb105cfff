"""Start-up loads a session's first queued deliveries; the rest of its queue (its backlog) stays in the
store and is read as the queue drains to it (storage/msgload.py, core/backlog.py). Here with small
pages (EAGER_QUEUED, PAGE_COUNT patched) so that short queues have backlogs: order kept
[MQTT-4.6.0-6], expired messages never sent [MQTT-3.3.2-5], queue limits counted, messages shared
and reclaimed with their last delivery, and store == core after every step of random sequences."""

from __future__ import annotations

import random

import pytest

from lastwill.codec.packets import Puback, Pubcomp, Pubrec
from lastwill.core import backlog as core_backlog
from lastwill.storage import msgload
from lastwill.storage.sqlite import SqliteStorage
from tests.core.harness import Harness


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(msgload, "EAGER_QUEUED", 3)
    monkeypatch.setattr(core_backlog, "PAGE_COUNT", 4)


def full_stored(tmp_path) -> tuple[dict, set]:
    """Every live delivery the store holds, its backlogs' too: {client: [(seq, msg id, packet id)]}."""
    store = SqliteStorage(tmp_path / "data")
    state = store.load()
    store.close()
    out = {c: [(d.seq, d.message.msg_id, d.packet_id) for d in items] for c, items in state.deliveries.items()}
    for c, b in state.backlogs.items():
        out.setdefault(c, []).extend((r[0] + j, r[1] + j, None) for r in b.runs for j in range(r[2]))
        out[c].sort()
    return out, state.unreferenced_messages


def full_core(h: Harness) -> dict:
    out = {}
    for cid, s in h.core.ownership.by_id.items():
        if not s.expiry_interval:
            continue
        items = [(d.seq, d.message.store_id, None) for d in s.queue if d.seq]
        if s.backlog is not None:
            items += [(r[0] + j, r[1] + j, None) for r in s.backlog.runs for j in range(r[2])]
            items += [(d.seq, d.message.store_id, None) for d in s.backlog.after if d.seq]
        items += [(f.delivery.seq, f.delivery.message.store_id, pid) for pid, f in s.inflight.items()
                  if f.delivery.seq]
        if items:
            out[cid] = sorted(items)
    return out


def check(h: Harness, tmp_path) -> None:
    stored, unreferenced = full_stored(tmp_path)
    assert stored == full_core(h)
    assert not unreferenced


def make(tmp_path, **config) -> Harness:
    store = SqliteStorage(tmp_path / "data")
    store.load()
    return Harness(store=store, **config)


def offline(h: Harness, name: str, qos: int = 1) -> None:
    c = h.connect(name, clean_start=False, session_expiry_interval=3600)
    c.subscribe("t/#", qos=qos)
    c.drop()


def _drain(h, client) -> list:
    """What the client gets over ten turns: a backlog reaches it page by page as the pump runs."""
    got = client.messages()
    for _ in range(10):
        h.advance(0)
        got += client.messages()
    return got


def test_a_restored_backlog_comes_in_order_behind_the_first_and_before_the_new_MQTT_4_6_0_6(tmp_path):
    h = make(tmp_path)
    offline(h, "s")
    pub = h.connect("pub")
    for i in range(20):
        pub.publish("t/a", bytes([i]), qos=1)
    h.commit()
    h2 = h.restart(downtime=1)
    s = h2.core.ownership.by_id["s"]
    assert len(s.queue) == 3 and s.backlog.count == 17 and s.queued_count() == 20
    assert s.queued_bytes == 20 * (1 + 3)  # topics + payloads, the backlog's too
    pub = h2.connect("pub")
    pub.publish("t/a", bytes([20]), qos=1)  # behind the backlog
    h2.commit()
    check(h2, tmp_path)
    c = h2.connect("s", clean_start=False, session_expiry_interval=3600, receive_maximum=5)
    got = []
    for _ in range(30):
        batch = c.messages()
        got += batch
        for p in batch:
            c.send(Puback(p.packet_id))
        h2.commit()
        check(h2, tmp_path)
        if len(got) == 21:
            break
    assert [p.payload[0] for p in got] == list(range(21))
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert h2.core.ownership.by_id["s"].backlog is None


def test_messages_shared_by_backlogs_are_read_once_and_reclaimed_with_the_last(tmp_path):
    h = make(tmp_path)
    for name in ("a", "b", "c"):
        offline(h, name)
    pub = h.connect("pub")
    for i in range(12):
        pub.publish("t/a", bytes([i]), qos=1)
    h.commit()
    h2 = h.restart(downtime=1)
    a = h2.connect("a", clean_start=False, session_expiry_interval=3600, receive_maximum=100)
    got_a = _drain(h2, a)
    assert [p.payload[0] for p in got_a] == list(range(12))
    for p in got_a:
        a.send(Puback(p.packet_id))
    h2.commit()
    check(h2, tmp_path)
    b = h2.core.ownership.by_id["b"]
    assert b.backlog is not None  # b's entries keep the messages
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 12
    bc = h2.connect("b", clean_start=False, session_expiry_interval=3600, receive_maximum=100)
    got_b = _drain(h2, bc)
    assert [p.payload for p in got_b] == [p.payload for p in got_a]
    a_msgs = {id(f.delivery.message) for f in h2.core.ownership.by_id["b"].inflight.values()}
    assert len(a_msgs) == 12  # one Message each, shared with what a got (read once)
    for p in got_b:
        bc.send(Puback(p.packet_id))
    h2.commit()
    check(h2, tmp_path)
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 12  # c still needs them
    h2.advance(3700)  # c's session expires [MQTT-3.1.2-23]: its backlog leaves, unread
    h2.commit()
    check(h2, tmp_path)
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_an_expired_message_in_a_backlog_is_never_sent_MQTT_3_3_2_5(tmp_path):
    h = make(tmp_path)
    offline(h, "s")
    pub = h.connect("pub")
    for i in range(10):
        if i in (6, 7):
            pub.publish("t/a", bytes([i]), qos=1, message_expiry_interval=5)
        else:
            pub.publish("t/a", bytes([i]), qos=1)
    h.commit()
    h2 = h.restart(downtime=10)
    c = h2.connect("s", clean_start=False, session_expiry_interval=3600, receive_maximum=100)
    got = _drain(h2, c)
    assert [p.payload[0] for p in got] == [0, 1, 2, 3, 4, 5, 8, 9]
    for p in got:
        c.send(Puback(p.packet_id))
    h2.commit()
    check(h2, tmp_path)
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_a_backlog_counts_against_max_queued_messages(tmp_path):
    h = make(tmp_path, max_queued_messages=10)
    offline(h, "s")
    pub = h.connect("pub")
    for i in range(10):
        pub.publish("t/a", bytes([i]), qos=1)
    h.commit()
    h2 = h.restart(downtime=1, max_queued_messages=10)
    pub = h2.connect("pub")
    pub.publish("t/a", b"over", qos=1)  # the queue holds 10: 3 in memory, 7 in the store
    s = h2.core.ownership.by_id["s"]
    assert s.queued_count() == 10 and s.dropped == 1
    assert h2.core.limits.queued_messages == 3  # the broker's memory account: what is in memory


def test_resumed_with_session_expiry_0_gets_its_whole_queue(tmp_path):
    h = make(tmp_path)
    offline(h, "s")
    pub = h.connect("pub")
    for i in range(9):
        pub.publish("t/a", bytes([i]), qos=1)
    h.commit()
    h2 = h.restart(downtime=1)
    c = h2.connect("s", clean_start=False, session_expiry_interval=0, receive_maximum=100)
    got = _drain(h2, c)
    h2.commit()
    assert [p.payload[0] for p in got] == list(range(9))
    assert h2.store.db.execute("SELECT count(*) FROM queues").fetchone()[0] == 0
    for p in got:
        c.send(Puback(p.packet_id))
    h2.commit()
    assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


@pytest.mark.parametrize("seed", range(25))
def test_random_sequences_with_backlogs_keep_store_and_core_in_step(seed, tmp_path):
    rng = random.Random(seed)
    h = make(tmp_path, receive_maximum=3, max_queued_messages=20)
    names = [f"s{i}" for i in range(4)]
    clients: dict[str, object] = {}
    publisher = h.connect("pub")

    def connect(name):
        c = h.connect(name, clean_start=rng.random() < 0.1, session_expiry_interval=rng.choice([0, 60, 3600, 3600]),
                      receive_maximum=rng.choice([1, 2, 5]))
        c.subscribe("t/#", qos=rng.choice([1, 2]), sub_id=rng.choice([None, 7]))
        clients[name] = c

    for name in names:
        connect(name)
    for _ in range(150):
        op = rng.random()
        name = rng.choice(names)
        c = clients.get(name)
        if op < 0.45:
            if publisher.closed:
                publisher = h.connect("pub")
            publisher.publish(f"t/{rng.randrange(3)}", bytes([rng.randrange(256)]) * rng.randrange(1, 50),
                              qos=rng.choice([0, 1, 1, 2]), message_expiry_interval=rng.choice([None, None, 5]) or 0)
            publisher.take()
        elif op < 0.62 and c is not None and not c.closed:
            for p in c.messages():
                if p.qos == 1:
                    c.send(Puback(p.packet_id))
                elif p.qos == 2:
                    c.send(Pubrec(p.packet_id))
                    c.send(Pubcomp(p.packet_id))
        elif op < 0.72 and c is not None and not c.closed:
            c.drop()
        elif op < 0.84 and (c is None or c.closed):
            connect(name)
        elif op < 0.89:
            h.advance(rng.choice([0, 1, 10, 100]))
        elif op < 0.96:
            h.commit()
            h = h.restart(downtime=rng.choice([1, 30]), crashed=rng.random() < 0.5, receive_maximum=3,
                          max_queued_messages=20)
            clients.clear()
            publisher = h.connect("pub")
        elif c is not None and not c.closed:
            c.disconnect()
        h.commit()
        check(h, tmp_path)
