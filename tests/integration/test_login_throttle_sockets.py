"""Login throttling on real sockets (docs/security.md "Password guessing"): a password-guessing client
from one address while real clients keep connecting from another."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from lastwill.codec.decoder import Decoder
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect
from tests.integration.test_auth_sockets import write_passwords

pytestmark = pytest.mark.integration


def login(port: int, user: str, password: str, version: int = 5, source: str = "127.0.0.1",
          client_id: str = "") -> int:
    """CONNECT with a user name and password from ``source``: the CONNACK's reason code (3.1.1: return code)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    try:
        sock.sendall(encode(Connect(client_id=client_id or f"c-{user}-{time.monotonic_ns()}", protocol_level=version,
                                    username=user, password=password.encode()), version))
        decoder = Decoder(server_side=False, protocol_level=version)
        packets: list = []
        while not packets:
            data = sock.recv(100)
            assert data, "closed without CONNACK"
            packets = decoder.feed(data)
        if version == 4:
            return encode(packets[0], 4)[3]
        return packets[0].reason_code
    finally:
        sock.close()


def test_a_password_guesser_is_throttled_while_real_clients_keep_connecting(broker_factory, tmp_path):
    pw = write_passwords(tmp_path / "passwords", alice="wonderland", bob="builder")
    b = broker_factory(password_file=str(pw), login_backoff=0.5, login_backoff_max=4.0)
    assert login(b.port, "alice", "wonderland", source="127.0.0.3") == 0  # alice logged in before
    stop = threading.Event()
    guesses: list[int] = []

    def guess() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            guesses.append(login(b.port, "alice", f"guess{n}", source="127.0.0.2", version=5 if n % 2 else 4))
            time.sleep(0.01)

    guesser = threading.Thread(target=guess)
    guesser.start()
    real: list[int] = []
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline or len(guesses) < 20:
            real.append(login(b.port, "bob", "builder"))  # another address, another user
            real.append(login(b.port, "alice", "wonderland", source="127.0.0.3"))  # the guessed user, verified before
            time.sleep(0.05)
    finally:
        stop.set()
        guesser.join(60)
    assert set(real) == {0}, real  # every real login accepted
    assert guesses[0] == 0x86  # the first guess is checked and refused
    assert set(guesses) <= {0x86, 0x89, 4, 3}, set(guesses)
    throttled = sum(1 for g in guesses if g in (0x89, 3))
    checked = len(guesses) - throttled
    assert throttled > checked, (throttled, checked)  # most guesses never reach a password check
    assert 3 in guesses and 0x89 in guesses  # both protocol levels see "server busy"
    hits = b.call(lambda: b.broker.server.core.limit_hits.get("login_throttled", 0))
    assert hits == throttled
    # checked guesses are bounded by the backoff (0.5, 1, 2, 4, 4, ... s), not by how fast it guesses
    assert checked <= 8, checked
    # a new address and user name are not affected; the guessed user's fresh logins wait for the backoff
    assert login(b.port, "bob", "builder", source="127.0.0.4") == 0
