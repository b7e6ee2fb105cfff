"""A storm of connection ends (issue 10): wills go out while the rest of the storm is handled, not
after all of it. On the fake loop with the real core; the time the edge's work takes is a fake clock."""

from __future__ import annotations

from lastwill.codec.packets import Subscribe, Subscription, Will
from lastwill.config import Config
from lastwill.edge.server import EARLY_WRITE_AFTER, FIRST_EARLY_WRITE_AFTER

from .fakes import Edge


class WorkClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_wills_of_a_storm_are_written_before_the_storm_is_over_MQTT_3_1_2_8():
    work = WorkClock()
    e = Edge(Config(), work_clock=work)
    watcher = e.connected("watcher", 4)
    watcher.packet(Subscribe(1, [Subscription("dead/#", 1)]))
    e.loop.run()
    peers = [e.connected(f"dev{i}", 4, will=Will(f"dead/dev{i}", b"gone", 1, False)) for i in range(10)]
    # the ten connections end in one loop turn (RST), each end taking a quarter of the early-write time
    written = []
    for p in peers:
        p.protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        work.now += EARLY_WRITE_AFTER / 4
        written.append(len(watcher.publishes()))
    assert written[-1] < 10  # the storm is not over: the last ones wait for the end of the turn
    assert 0 < written[4] <= 5  # the first wills left while the others were still being handled
    e.loop.run()
    assert sorted(p.topic for p in watcher.publishes()) == sorted(f"dead/dev{i}" for i in range(10))


def test_without_a_storm_a_turn_writes_once_at_its_end():
    work = WorkClock()
    e = Edge(Config(), work_clock=work)
    watcher = e.connected("watcher", 4)
    watcher.packet(Subscribe(1, [Subscription("dead/#", 1)]))
    e.loop.run()
    peers = [e.connected(f"dev{i}", 4, will=Will(f"dead/dev{i}", b"gone", 1, False)) for i in range(3)]
    for p in peers:  # quick: no early write
        p.protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    assert watcher.publishes() == []
    writes_before = watcher.transport.calls.count("write")
    e.loop.run()
    assert len(watcher.publishes()) == 3 and watcher.transport.calls.count("write") == writes_before + 1


def test_the_first_wills_of_a_storm_leave_before_the_later_batches_MQTT_3_1_2_8():
    # the first early write of a turn comes after FIRST_EARLY_WRITE_AFTER of work, the later ones
    # after EARLY_WRITE_AFTER each (fake work clock: no timing in the test)
    work = WorkClock()
    e = Edge(Config(), work_clock=work)
    watcher = e.connected("watcher", 4)
    watcher.packet(Subscribe(1, [Subscription("dead/#", 1)]))
    e.loop.run()
    peers = [e.connected(f"dev{i}", 4, will=Will(f"dead/dev{i}", b"gone", 1, False)) for i in range(12)]
    step = FIRST_EARLY_WRITE_AFTER
    assert EARLY_WRITE_AFTER >= 2 * step
    written = []
    for p in peers:
        p.protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        work.now += step
        written.append(len(watcher.publishes()))
    # the turn began with the first end; the second comes FIRST_EARLY_WRITE_AFTER later: both written
    assert written[0] == 0 and written[1] == 2
    assert written[2] == 2  # the later batches wait EARLY_WRITE_AFTER
    assert 2 < written[-1] < 12  # and go out while the storm lasts
    e.loop.run()
    assert sorted(p.topic for p in watcher.publishes()) == sorted(f"dead/dev{i}" for i in range(12))
