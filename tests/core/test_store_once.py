"""A message is stored once, however many sessions wait for it (schema 5), and leaves the store with
the last stored delivery that needs it: checked on the core with both backends, after every step of
random sequences of publishes, acknowledgements, disconnections, reconnections, session ends and
restarts (what the store holds = what the core's persistent sessions hold, no message without a
delivery, no delivery without its message)."""

from __future__ import annotations

import random

import pytest

from lastwill.codec.packets import Puback, Pubcomp, Pubrec
from lastwill.storage.memory import MemoryStorage
from lastwill.storage.sqlite import SqliteStorage
from tests.core.harness import Harness


def stored_view(h: Harness, backend: str, tmp_path) -> tuple[dict, set, set]:
    """What the store holds: {client: [(seq, msg_id, packet_id)]}, the message ids referred to, and
    the unreferenced ones."""
    if backend == "memory":
        state = h.store.load()
    else:
        store = SqliteStorage(tmp_path / "data")
        state = store.load()
        store.close()
    deliveries = {c: [(d.seq, d.message.msg_id, d.packet_id) for d in items] for c, items in state.deliveries.items()}
    used = {d.message.msg_id for items in state.deliveries.values() for d in items}
    return deliveries, used, state.unreferenced_messages


def core_view(h: Harness) -> dict:
    out = {}
    for cid, s in h.core.ownership.by_id.items():
        if not s.expiry_interval:
            continue
        items = [(d.seq, d.message.store_id, None) for d in s.queue if d.seq]
        items += [(f.delivery.seq, f.delivery.message.store_id, pid) for pid, f in s.inflight.items() if f.delivery.seq]
        if items:
            out[cid] = sorted(items)
    return out


def check(h: Harness, backend: str, tmp_path) -> None:
    stored, used, unreferenced = stored_view(h, backend, tmp_path)
    assert stored == core_view(h)
    assert not unreferenced  # no message outlives its deliveries
    for s in h.core.ownership.by_id.values():  # the core's count of each message's stored deliveries
        for d in list(s.queue) + [f.delivery for f in s.inflight.values()]:
            if d.seq:
                assert d.message.store_refs >= 1 and d.message.store_id in used


def make(backend: str, tmp_path) -> Harness:
    store = MemoryStorage() if backend == "memory" else SqliteStorage(tmp_path / "data")
    if backend == "sqlite":
        store.load()
    return Harness(store=store, receive_maximum=3, max_queued_messages=20)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("seed", range(30))
def test_random_sequences_keep_store_and_core_in_step(backend, seed, tmp_path):
    rng = random.Random(seed)
    h = make(backend, tmp_path)
    names = [f"s{i}" for i in range(5)]
    clients: dict[str, object] = {}
    publisher = h.connect("pub")

    def connect(name):
        c = h.connect(name, clean_start=rng.random() < 0.15, session_expiry_interval=rng.choice([0, 60, 3600]),
                      receive_maximum=rng.choice([1, 2, 5]))
        c.subscribe("t/#", qos=rng.choice([1, 2]), sub_id=rng.choice([None, 7]))
        clients[name] = c

    for name in names:
        connect(name)
    for _ in range(120):
        op = rng.random()
        name = rng.choice(names)
        c = clients.get(name)
        if op < 0.4:
            if publisher.closed:
                publisher = h.connect("pub")
            publisher.publish(f"t/{rng.randrange(3)}", bytes([rng.randrange(256)]) * rng.randrange(1, 50),
                              qos=rng.choice([0, 1, 2]), message_expiry_interval=rng.choice([None, None, 5]) or 0)
            publisher.take()
        elif op < 0.6 and c is not None and not c.closed:
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
        elif op < 0.9:
            h.advance(rng.choice([1, 10, 100]))
        elif op < 0.95:
            h.commit()
            h = h.restart(downtime=rng.choice([1, 30]), crashed=rng.random() < 0.5)
            clients.clear()
            publisher = h.connect("pub")
        else:
            if c is not None and not c.closed:
                c.disconnect()
        check(h, backend, tmp_path)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_one_message_for_many_offline_sessions_is_stored_once_and_reclaimed(backend, tmp_path):
    h = make(backend, tmp_path)
    for i in range(20):
        h.connect(f"s{i}", clean_start=False, session_expiry_interval=3600).subscribe("t", qos=1)
        h.clients[max(h.clients)].drop()
    pub = h.connect("pub")
    pub.publish("t", b"m" * 1000, qos=1)
    pub.publish("t", b"n" * 1000, qos=1)
    stored, used, _ = stored_view(h, backend, tmp_path)
    assert len(stored) == 20 and len(used) == 2  # 40 deliveries, 2 messages
    if backend == "sqlite":
        assert h.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    else:
        assert len(h.store._messages) == 2
    h2 = h.restart(downtime=1)
    restored = {id(s.queue[0].message) for s in h2.core.ownership.by_id.values() if s.queue}
    assert len(restored) == 1  # one Message object for the 20 sessions
    for i in range(20):  # each comes back, takes both and acknowledges them
        c = h2.connect(f"s{i}", clean_start=False, session_expiry_interval=3600)
        got = c.messages()
        assert [p.payload[:1] for p in got] == [b"m", b"n"]
        for p in got:
            c.send(Puback(p.packet_id))
        check(h2, backend, tmp_path)
        assert len(stored_view(h2, backend, tmp_path)[1]) == (2 if i < 19 else 0)  # until the last one
    stored, used, unreferenced = stored_view(h2, backend, tmp_path)
    assert stored == {} and used == set() and not unreferenced
    if backend == "sqlite":
        assert h2.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert h2.store.db.execute("SELECT count(*) FROM queued").fetchone()[0] == 0
    else:
        assert h2.store._messages == {}


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_session_expiry_reclaims_its_messages(backend, tmp_path):
    h = make(backend, tmp_path)
    h.connect("s", clean_start=False, session_expiry_interval=10).subscribe("t", qos=1)
    h.clients[max(h.clients)].drop()
    pub = h.connect("pub")
    for i in range(5):
        pub.publish("t", bytes([i]), qos=1)
    assert len(stored_view(h, backend, tmp_path)[1]) == 5
    h.advance(11)  # the session expires [MQTT-3.1.2-23]: its messages go with it
    stored, used, unreferenced = stored_view(h, backend, tmp_path)
    assert stored == {} and used == set() and not unreferenced
    if backend == "memory":
        assert h.store._messages == {}
    else:
        assert h.store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
