"""Login throttling's decisions (core/throttle.py), with a fake clock: exponential backoff per source
address and per user name, the failing answer held back, success clearing it, memory bounded."""

from __future__ import annotations

from lastwill.auth import PasswordFile, hash_password
from lastwill.clock import FakeClock
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect
from lastwill.codec.reason_codes import ReasonCode
from lastwill.core.throttle import LoginThrottle, Verdict
from tests.core.harness import Harness

CHECK, THROTTLED = Verdict.CHECK, Verdict.THROTTLED


def test_backoff_doubles_after_each_failure_up_to_the_maximum():
    clock = FakeClock()
    t = LoginThrottle(backoff=1.0, backoff_max=8.0, answer_max=5.0)
    delays, blocks = [], []
    for _ in range(6):
        assert t.check("10.0.0.1", "alice", clock.now).verdict is CHECK
        delay = t.failed("10.0.0.1", "alice", clock.now)
        delays.append(delay)
        clock.advance(delay)  # the CONNACK 0x86 goes out; a retry at once is throttled
        b = t.check("10.0.0.1", "alice", clock.now)
        assert b.verdict is THROTTLED
        blocks.append(b.until - clock.now)
        clock.set(b.until)  # waits exactly as long as it must
    assert delays == [1, 2, 4, 5, 5, 5]
    assert blocks == [1, 2, 4, 8, 8, 8]


def test_the_failing_answer_is_held_as_long_as_the_block_at_most_answer_max():
    t = LoginThrottle(backoff=1.0, backoff_max=60.0, answer_max=5.0)
    delays = [t.failed("a", "u", 1000.0 * i) for i in range(1, 6)]
    assert delays == [1, 2, 4, 5, 5]  # (each far apart, but within backoff_max + block: still counted)


def test_per_address_and_per_user_name_independently():
    t = LoginThrottle(backoff=10.0)
    t.failed("10.0.0.1", "alice", 0.0)
    b = t.check("10.0.0.1", "bob", 1.0)  # the same address, another user: the address is throttled
    assert (b.verdict, b.key_kind, b.key) == (THROTTLED, "address", "10.0.0.1")
    b = t.check("10.0.0.2", "alice", 1.0)  # another address, the same user: the user name is
    assert (b.verdict, b.key_kind, b.key) == (THROTTLED, "user name", "alice")
    assert t.check("10.0.0.2", "bob", 1.0).verdict is CHECK
    assert t.throttled == 2


def test_success_clears_both_keys():
    t = LoginThrottle(backoff=1.0)
    for i in range(4):
        t.failed("10.0.0.1", "alice", float(i))
    t.succeeded("10.0.0.1", "alice")
    assert t.check("10.0.0.1", "alice", 4.0).verdict is CHECK
    assert t.failed("10.0.0.1", "alice", 4.0) == 1.0  # counting starts again


def test_a_key_quiet_for_backoff_max_after_its_block_is_forgotten():
    t = LoginThrottle(backoff=1.0, backoff_max=30.0)
    t.failed("a", "u", 0.0)
    assert len(t) == 2
    assert t.check("a", "u", 2.5).verdict is CHECK  # blocked until 2 (1 s held, 1 s blocked)
    assert len(t) == 2
    assert t.check("a", "u", 32.0).verdict is CHECK and len(t) == 0  # quiet 30 s since: forgotten
    assert t.failed("a", "u", 32.0) == 1.0


def test_memory_is_bounded_the_least_recently_failed_forgotten_first():
    t = LoginThrottle(backoff=100.0, max_keys=1000)
    for i in range(50_000):  # a guesser from many addresses, many user names
        t.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", f"user{i}", 0.0)
    assert len(t.addresses.entries) == 1000 and len(t.users.entries) == 1000
    assert t.check("10.0.195.79", "user49999", 1.0).verdict is THROTTLED  # the latest are kept
    assert t.check("10.0.0.0", "user0", 1.0).verdict is CHECK  # the oldest went first


def test_zero_backoff_throttles_nothing():
    t = LoginThrottle(backoff=0.0)
    for _ in range(10):
        assert t.failed("a", "u", 0.0) == 0.0
    assert t.check("a", "u", 0.0).verdict is CHECK and len(t) == 0


# ---- the core's answer to a throttled login --------------------------------------------------------


def _connect(h: Harness, client_id: str, version: int):
    c = h.open()
    c.client_id = client_id
    c.send(Connect(client_id=client_id, clean_start=True, keep_alive=0, protocol_level=version,
                   username="alice", password=b"guess"))
    return c


def test_a_throttled_login_gets_connack_0x89_and_3_1_1_return_code_3():
    h = Harness(password_file="pw", passwords=PasswordFile.parse(f"alice:{hash_password('right', 1000)}\n", "pw"))
    h.hold_auth = True
    for version in (5, 4):
        c = _connect(h, f"guesser{version}", version)
        [auth] = h.pending_auth
        h.pending_auth.clear()
        h.dispatch(h.core.authenticated(auth.conn_id, False, h.now, throttled="address '10.0.0.1' after 3 failed"))
        [ack] = c.take("Connack")
        assert ack.reason_code == ReasonCode.SERVER_BUSY
        assert encode(ack, version)[-1 if version == 4 else 3] == (3 if version == 4 else 0x89)
        assert c.closed
    assert h.core.limit_hits["login_throttled"] == 2
    assert h.core.stats["auth_refused"] == 2
