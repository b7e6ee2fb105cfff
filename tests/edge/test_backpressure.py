"""Backpressure at the edge (edge/tcp.py MqttProtocol), on a fake loop with the real core.

pause_writing (the transport's buffer is over its high-water mark) makes the core hold the
connection's deliveries in its session queue; resume_writing makes it send them, in order. A
client that keeps sending while more than UNSENT_HARD_LIMIT (+ max_packet_size) waits unsent to it
is aborted before its bytes are processed, and its will is published."""

from __future__ import annotations

import logging

from lastwill.codec.packets import Pingreq, Publish, Subscribe, Subscription, Will
from lastwill.config import Config
from lastwill.edge.tcp import UNSENT_HARD_LIMIT, WRITE_HIGH_WATER

from .fakes import Edge, sequence


def subscribed(e: Edge, name: str, topic: str, qos: int, level: int = 4):
    s = e.connected(name, level)
    s.packet(Subscribe(1, [Subscription(topic, qos)]))
    e.loop.run()
    assert s.kinds()[-1] == "Suback"
    return s


def publish_numbers(pub, topic: str, qos: int, numbers) -> None:
    for i in numbers:
        pub.packet(Publish(topic, i.to_bytes(8, "big"), qos, False, False, i + 1 if qos else None))


def test_write_limits_set_on_connection_made():
    e = Edge()
    assert e.peer("c").transport.limits == (WRITE_HIGH_WATER, WRITE_HIGH_WATER // 4)


def test_pause_writing_holds_deliveries_and_resume_writing_sends_them_in_order():
    e = Edge()
    sub = subscribed(e, "sub", "t", 1)
    pub = e.connected("pub")
    sub.protocol.pause_writing()
    publish_numbers(pub, "t", 1, range(5))
    e.loop.run()
    assert sub.publishes() == []
    assert pub.kinds().count("Puback") == 5  # accepted from the publisher all the same
    sub.protocol.resume_writing()
    e.loop.run()
    assert sequence(sub.publishes()) == list(range(5))


def test_qos0_deliveries_also_wait_while_paused():
    e = Edge()
    sub = subscribed(e, "sub", "t", 0)
    pub = e.connected("pub")
    sub.protocol.pause_writing()
    publish_numbers(pub, "t", 0, range(3))
    e.loop.run()
    assert sub.publishes() == []
    sub.protocol.resume_writing()
    e.loop.run()
    assert sequence(sub.publishes()) == [0, 1, 2]


def test_only_the_paused_connection_waits():
    e = Edge()
    slow = subscribed(e, "slow", "t", 1)
    fast = subscribed(e, "fast", "t", 1)
    pub = e.connected("pub")
    slow.protocol.pause_writing()
    publish_numbers(pub, "t", 1, range(3))
    e.loop.run()
    assert sequence(fast.publishes()) == [0, 1, 2] and slow.publishes() == []


def test_resume_writing_of_a_connection_never_paused_sends_nothing_new():
    e = Edge()
    sub = subscribed(e, "sub", "t", 1)
    before = len(sub.transport.written)
    sub.protocol.resume_writing()
    e.loop.run()
    assert len(sub.transport.written) == before


def test_client_that_does_not_read_is_aborted_past_the_unsent_hard_limit_and_its_will_published(caplog):
    config = Config()
    e = Edge(config)
    watcher = subscribed(e, "watcher", "will/#", 0)
    c = e.connected("deaf", will=Will("will/deaf", b"gone", 0, False))
    c.transport.unsent = UNSENT_HARD_LIMIT + config.max_packet_size + 1
    written = len(c.transport.written)
    with caplog.at_level(logging.WARNING, logger="lastwill"):
        c.packet(Pingreq())
        e.loop.run()
    assert c.transport.calls[-1] == "abort"
    assert len(c.transport.written) == written  # its PINGREQ was not processed: no PINGRESP
    assert any("client_id=deaf" in r.getMessage() and "does not read" in r.getMessage() for r in caplog.records)
    assert [(p.topic, p.payload) for p in watcher.publishes()] == [("will/deaf", b"gone")]


def test_client_at_the_unsent_hard_limit_is_still_served():
    config = Config()
    e = Edge(config)
    c = e.connected("slowreader")
    c.transport.unsent = UNSENT_HARD_LIMIT + config.max_packet_size  # not above it
    c.packet(Pingreq())
    e.loop.run()
    assert c.kinds()[-1] == "Pingresp" and "abort" not in c.transport.calls
