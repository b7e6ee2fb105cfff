"""A resumed session's queue goes out without a store row per delivery (schema 6: the session's runs of
sent seqs and packet ids), and a crash still brings back exactly what was unacknowledged: re-sent with
DUP 1 and its packet id [MQTT-4.4.0-1], PUBREL for what awaited PUBCOMP, nothing acknowledged, and the
rest of the queue after it, in order [MQTT-4.6.0-6]."""

from __future__ import annotations

from lastwill.codec.packets import Puback, Pubrec, Pubrel
from lastwill.storage.sqlite import SqliteStorage
from tests.core.harness import Harness


def test_crash_after_sending_from_the_queue_resends_the_unacknowledged_with_their_ids_MQTT_4_4_0_1(tmp_path):
    store = SqliteStorage(tmp_path / "data")
    store.load()
    h = Harness(store=store)
    s = h.connect("s", clean_start=False, session_expiry_interval=3600)
    s.subscribe("t", qos=2)
    s.drop()
    pub = h.connect("pub")
    for i in range(12):
        pub.publish("t", bytes([i]), qos=2 if i in (1, 2) else 1)
    h.commit()
    back = h.connect("s", clean_start=False, session_expiry_interval=3600, receive_maximum=6)
    got = back.messages()
    assert [p.payload[0] for p in got] == [0, 1, 2, 3, 4, 5] and not any(p.dup for p in got)
    h.commit()
    assert store.db.execute("SELECT count(*) FROM inflight").fetchone()[0] == 0  # no row per delivery sent
    back.send(Puback(got[3].packet_id))  # out of order
    back.send(Pubrec(got[1].packet_id))  # QoS 2: now awaiting PUBCOMP (a row: its state changed)
    answers = back.take()
    h.commit()
    assert store.db.execute("SELECT count(*) FROM inflight").fetchone()[0] == 1
    assert [type(p) for p in answers if isinstance(p, Pubrel)] == [Pubrel]
    sent_more = [p for p in answers if not isinstance(p, Pubrel)]  # the window opened by the PUBACK
    assert [p.payload[0] for p in sent_more] == [6]
    h.commit()
    h2 = h.restart(downtime=1, crashed=True)  # kill -9: nothing more reaches the store
    again = h2.connect("s", clean_start=False, session_expiry_interval=3600, receive_maximum=20)
    packets = again.take()
    pubrels = [p for p in packets if isinstance(p, Pubrel)]
    publishes = [p for p in packets if not isinstance(p, Pubrel) and hasattr(p, "payload")]
    assert [p.packet_id for p in pubrels] == [got[1].packet_id]  # [MQTT-4.4.0-1] PUBREL again
    unacked = [got[0], got[2], got[4], got[5], sent_more[0]]
    resent = publishes[:len(unacked)]
    assert [(p.payload[0], p.packet_id, p.dup) for p in resent] == [(u.payload[0], u.packet_id, True) for u in unacked]
    rest = publishes[len(unacked):]
    assert [p.payload[0] for p in rest] == [7, 8, 9, 10, 11] and not any(p.dup for p in rest)
    assert 3 not in [p.payload[0] for p in publishes]  # acknowledged: never again
