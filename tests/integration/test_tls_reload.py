"""TLS certificates reloaded on SIGHUP, per-listener certificates, and handshakes and WebSocket upgrades
under way counted toward max_connections with their own timeout (docs/security.md "TLS"). Certificates
made with the openssl command (tests/integration/certs.py): two CAs, each signing a server certificate
for localhost."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import time

import pytest

from tests.integration.certs import make_certs
from tests.integration.test_durability import BrokerProcess, free_port, wait_until
from tests.rawbytes import connect_packet
from tests.rawclient import RawClient

pytestmark = pytest.mark.integration

CONNACK_OK_V311 = b"\x20\x02\x00\x00"


@pytest.fixture
def brokers():
    """Broker processes started by a test; stopped at the end whatever happened."""
    made: list[BrokerProcess] = []
    yield made
    for b in made:
        b.terminate()


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory):
    """Two independent sets (CA, server certificate for localhost, ...)."""
    return make_certs(tmp_path_factory.mktemp("certs-a")), make_certs(tmp_path_factory.mktemp("certs-b"))


def trusting(certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca))
    return ctx


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def handshake(port: int, certs) -> tuple[bool, ssl.SSLSocket | str]:
    """A TLS handshake trusting only ``certs``' CA, then a 3.1.1 CONNECT: (True, the socket) when the
    server's certificate verifies and the CONNECT is accepted, else (False, why)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        tls = trusting(certs).wrap_socket(sock, server_hostname="localhost")
    except ssl.SSLCertVerificationError as e:
        sock.close()
        return False, f"verify failed: {e.verify_message}"
    tls.sendall(connect_packet(f"tls-{time.monotonic_ns()}"))
    assert tls.recv(4) == CONNACK_OK_V311
    return True, tls


def ping(tls: ssl.SSLSocket) -> bool:
    tls.sendall(b"\xc0\x00")
    return tls.recv(2) == b"\xd0\x00"


def test_sighup_reloads_the_certificate_new_handshakes_get_it_open_connections_stay(tmp_path, two_cas, brokers):
    a, b = two_cas
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(a.server_cert, cert)
    shutil.copy(a.server_key, key)
    port, tls_port = free_port(), free_port()
    log = tmp_path / "broker.log"
    broker = BrokerProcess(port, tmp_path / "data", log, tls_listen=f"127.0.0.1:{tls_port}", tls_cert=cert,
                           tls_key=key)
    brokers.append(broker)
    broker.start()  # (it waits for the plain listener; the TLS one may open a moment later)
    assert wait_until(lambda: _listening(tls_port), 15), log.read_text()[-2000:]
    ok, before = handshake(tls_port, a)
    assert ok, before
    # the operator replaces the certificate and key, then reloads
    shutil.copy(b.server_cert, cert)
    shutil.copy(b.server_key, key)
    broker.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "SIGHUP: reloading password_file and acl_file, and the TLS certificates" in
                      log.read_text(), 10)
    assert wait_until(lambda: handshake(tls_port, b)[0], 10), log.read_text()[-2000:]  # the new certificate
    ok, why = handshake(tls_port, a)
    assert not ok and "verify failed" in why  # no longer the old one
    assert ping(before)  # the connection made before the reload goes on, with its session

    # a bad file: the certificate in force stays, one log line names the file
    key.write_text("not a key\n")
    broker.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "the certificate in force for" in log.read_text(), 10)
    line = next(x for x in log.read_text().splitlines() if "the certificate in force for" in x)
    assert "tls_key" in line and str(key) in line, line
    assert handshake(tls_port, b)[0]
    assert broker.proc.poll() is None
    before.close()


def test_reload_in_process_keeps_open_connections(broker_factory, two_cas, tmp_path):
    a, b = two_cas
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    shutil.copy(a.server_cert, cert)
    shutil.copy(a.server_key, key)
    br = broker_factory(tls_listen=["127.0.0.1:0"], tls_cert=str(cert), tls_key=str(key))
    port = br.broker.ports("mqtts")[0]
    ok, old = handshake(port, a)
    assert ok
    shutil.copy(b.server_cert, cert)
    shutil.copy(b.server_key, key)
    assert br.call(lambda: br.broker.reload()) is True
    assert handshake(port, b)[0] and not handshake(port, a)[0]
    assert ping(old)
    old.close()


def test_per_listener_certificates(broker_factory, two_cas):
    a, b = two_cas
    port_a, port_b = free_port(), free_port()
    br = broker_factory(tls_listen=[f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"], tls_cert=str(a.server_cert),
                        tls_key=str(a.server_key),
                        tls_listener_certs=[f"127.0.0.1:{port_b} cert={b.server_cert} key={b.server_key}"])
    assert handshake(port_a, a)[0] and not handshake(port_a, b)[0]
    assert handshake(port_b, b)[0] and not handshake(port_b, a)[0]
    del br


def test_per_listener_client_ca(broker_factory, two_cas):
    a, b = two_cas
    port = free_port()
    broker_factory(tls_listen=[f"127.0.0.1:{port}"], tls_require_client_cert=True, tls_ca=str(a.ca),
                   tls_listener_certs=[f"127.0.0.1:{port} cert={b.server_cert} key={b.server_key} ca={b.ca}"])
    ctx = trusting(b)
    ctx.load_cert_chain(str(b.client_cert), str(b.client_key))  # a client certificate of this listener's CA
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    tls.sendall(connect_packet("per-listener-ca"))
    assert tls.recv(4) == CONNACK_OK_V311
    tls.close()


def _limit_hits(b, name: str) -> int:
    return b.call(lambda: b.broker.server.core.limit_hits.get(name, 0))


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("kind", ["mqtts", "ws"])
def test_slowloris_handshakes_count_toward_max_connections_and_time_out(broker_factory, two_cas, kind):
    """Connections that open a TLS handshake (or a WebSocket upgrade) and never finish it hold a place
    in max_connections until handshake_timeout; meanwhile one more connection of any kind is refused."""
    a, _ = two_cas
    settings = dict(tls_listen=["127.0.0.1:0"], tls_cert=str(a.server_cert), tls_key=str(a.server_key)) \
        if kind == "mqtts" else dict(ws_listen=["127.0.0.1:0"])
    b = broker_factory(max_connections=3, handshake_timeout=1.5, connect_timeout=60, **settings)
    port = b.broker.ports(kind)[0]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    if kind == "mqtts":
        for s in slow:
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never the rest
    else:
        for s in slow:
            s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # the start of an upgrade, never the end
    assert wait_until(lambda: b.call(lambda: len(b.broker.server.handshakes) + len(b.broker.server.upgrades)) == 3,
                      10)
    extra = socket.create_connection(("127.0.0.1", b.port), timeout=10)  # a plain MQTT connection
    assert _closed_by_server(extra, 10)  # closed at accept: the handshakes hold the places
    extra_tls = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert _closed_by_server(extra_tls, 10)
    assert _limit_hits(b, "max_connections") == 2
    for s in slow:  # then handshake_timeout closes them
        assert _closed_by_server(s, 30)
    assert wait_until(lambda: _limit_hits(b, "handshake_timeout") == 3, 10)
    c = RawClient(b.port)  # and the places are free again
    assert c.connect("after", 5).reason_code == 0
    for s in (*slow, extra, extra_tls):
        s.close()
