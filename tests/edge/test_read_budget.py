"""ReadBudget (edge/tcp.py): bounded read work per loop turn, on a fake loop with fake transports.

``Edge(budget=0)``: every read that fills the buffer is past the turn's budget, so it is deferred,
and each turn serves exactly one waiting connection; with the default budget nothing in these tests
comes near it. A read that does not fill the buffer is always processed at once."""

from __future__ import annotations

from lastwill.codec.packets import Subscribe, Subscription, Will
from lastwill.edge.budget import DEFER_LIMIT

from .fakes import Edge, filler, publish_stream, sequence

PINGREQ = b"\xc0\x00"


def subscriber(edge: Edge, name: str, topic: str):
    s = edge.connected(name)
    s.packet(Subscribe(1, [Subscription(topic, 0)]))
    edge.loop.run()
    assert s.kinds()[-1] == "Suback"
    return s


def test_full_read_past_the_budget_is_deferred_and_the_connection_paused():
    e = Edge(budget=0)
    p = e.connected("p")
    size = p.read_size()
    assert p.read(PINGREQ * (size // 2))  # a full read
    assert p.transport.calls[-1] == "pause_reading"
    assert list(e.reads.waiting) == [p.protocol]
    assert e.reads.deferred_bytes == size
    e.loop.run_once()  # the turn that serves it: processed, then reading resumes
    assert p.transport.calls[-1] == "resume_reading"
    assert e.reads.deferred_bytes == 0 and not e.reads.waiting
    assert p.kinds().count("Pingresp") == 0  # its answers go out with the next turn's writes
    e.loop.run()
    assert p.kinds().count("Pingresp") == size // 2


def test_read_that_does_not_fill_the_buffer_is_processed_at_once_while_others_wait():
    e = Edge(budget=0)
    flood = e.connected("flood")
    ping = e.connected("ping")
    e.events.clear()
    assert flood.read(filler(flood.read_size()))  # deferred
    assert not ping.read(PINGREQ)  # processed at once: not queued behind the flood
    e.loop.run_once()  # one turn: the writes (its PINGRESP), then the flood's bytes
    assert ping.kinds() == ["Connack", "Pingresp"]
    assert e.events == [("flood", "pause_reading"), ("ping", "write"), ("flood", "resume_reading")]


def test_next_turn_serves_the_oldest_first_one_per_turn_at_budget_0():
    e = Edge(budget=0)
    peers = {name: e.connected(name) for name in ("a", "b", "c")}
    for name in ("b", "c", "a"):
        peers[name].read(filler(peers[name].read_size()))
    assert [p.transport.name for p in e.reads.waiting] == ["b", "c", "a"]
    resumed = []
    for _ in range(3):
        e.loop.run_once()
        resumed.append([n for n, call in e.events if call == "resume_reading"])
    assert resumed == [["b"], ["b", "c"], ["b", "c", "a"]]
    assert not e.reads.waiting


def test_bytes_read_while_older_ones_wait_go_behind_them_never_reordered():
    e = Edge(budget=0)
    sub = subscriber(e, "sub", "seq")
    pub = e.connected("pub")
    stream = publish_stream("seq", 300, 200)
    size = pub.read_size()
    assert pub.read(stream[:size])  # deferred
    assert not pub.read(stream[size:size + 1000])  # not full, but older bytes wait: queued behind them
    assert pub.protocol.deferred is not None and len(pub.protocol.deferred) == 2
    assert sub.publishes() == []
    pub.send(stream[size + 1000:])
    e.loop.run()
    assert sequence(sub.publishes()) == list(range(300))


def test_a_stream_split_into_many_deferred_turns_arrives_in_order():
    e = Edge(budget=0)
    sub = subscriber(e, "sub", "seq")
    pub = e.connected("pub")
    other = e.connected("other")
    stream = publish_stream("seq", 1000, 100)
    while stream:  # a read, then a loop iteration, as the loop alternates them
        n = min(len(stream), pub.read_size())
        pub.read(stream[:n])
        other.read(filler(other.read_size()))  # another flooding connection competes for the turns
        stream = stream[n:]
        e.loop.run_once()
    e.loop.run()
    assert e.reads.pauses > 1
    assert sequence(sub.publishes()) == list(range(1000))


def test_deferred_bytes_are_processed_when_the_connection_is_lost_disconnect_first_no_will():
    e = Edge(budget=0)
    watcher = subscriber(e, "watcher", "will/#")
    c = e.connected("c", will=Will("will/c", b"gone", 0, False))
    data = filler(c.read_size() - 2) + b"\xe0\x00"  # ... then DISCONNECT, in one full read
    assert c.read(data)
    assert c.protocol.deferred is not None  # nothing of it processed yet
    c.protocol.connection_lost(None)  # the client closed right after its DISCONNECT
    e.loop.run()
    assert watcher.publishes() == []  # the DISCONNECT counted: no will
    assert not c.protocol.deferred
    assert e.reads.deferred_bytes == 0


def test_deferred_bytes_without_disconnect_then_lost_publish_the_will():
    e = Edge(budget=0)
    watcher = subscriber(e, "watcher", "will/#")
    c = e.connected("c", will=Will("will/c", b"gone", 0, False))
    assert c.read(filler(c.read_size()))  # deferred
    c.protocol.connection_lost(ConnectionResetError("reset"))
    e.loop.run()
    assert [p.topic for p in watcher.publishes()] == ["will/c"]
    assert e.reads.deferred_bytes == 0


def test_lost_connection_still_queued_is_skipped_at_its_turn_not_resumed():
    e = Edge(budget=0)
    c = e.connected("c")
    c.read(filler(c.read_size()))
    c.transport.abort()
    e.loop.run()
    assert "resume_reading" not in c.transport.calls
    assert not e.reads.waiting


def test_past_the_defer_limit_a_full_read_is_processed_at_once():
    e = Edge(budget=0)
    late = e.connected("late")
    size = late.read_size()
    peers = [e.connected(f"w{i}") for i in range(-(-DEFER_LIMIT // size))]  # enough to reach the limit
    for p in peers:  # all in one loop turn: nothing is served meanwhile
        assert p.read(filler(p.read_size()))
    assert all(p.protocol.deferred for p in peers) and e.reads.deferred_bytes >= DEFER_LIMIT
    assert late.read(PINGREQ * (size // 2))
    assert late.protocol.deferred is None  # processed at once: memory stays bounded
    e.loop.run()
    assert late.kinds().count("Pingresp") == size // 2
    assert e.reads.deferred_bytes == 0


def test_without_a_budget_in_reach_a_full_read_is_processed_at_once():
    e = Edge(budget=3600)
    p = e.connected("p")
    size = p.read_size()
    assert p.read(PINGREQ * (size // 2))
    assert p.protocol.deferred is None and "pause_reading" not in p.transport.calls
    e.loop.run()
    assert p.kinds().count("Pingresp") == size // 2
