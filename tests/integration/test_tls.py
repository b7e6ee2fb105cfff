"""TLS listeners (tls_listen): server authentication, client certificates, TLS 1.2 at least, the
certificate's CN as the user name, wills over TLS, mosquitto's clients, and start-up errors for bad
certificate and key files. Certificates are made by the tests (certs.py, the openssl command)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import subprocess
import sys
import time
import warnings

import pytest

from lastwill import Broker
from lastwill.cli import build_parser, config_from_args
from lastwill.config import Config, load_config
from lastwill.edge.tls import server_context
from lastwill.errors import ConfigError
from tests.integration.certs import make_certs
from tests.integration.transports import Client, client_tls_context, wait_log
from tests.rawbytes import connect_packet

pytestmark = pytest.mark.integration

CONNACK_OK_V311 = b"\x20\x02\x00\x00"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_broker(broker_factory, certs):
    """A broker with a TLS listener; ``tls_broker(**more)`` for client-certificate settings."""
    def make(**settings):
        return broker_factory(tls_listen=["127.0.0.1:0"], tls_cert=str(certs.server_cert),
                              tls_key=str(certs.server_key), **settings)
    return make


@pytest.fixture
def lastwill_log(caplog):
    caplog.set_level(logging.INFO, logger="lastwill")
    return caplog


def mqtts_port(b) -> int:
    return b.broker.ports("mqtts")[0]


def raw_tls(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=host)


def connack_or_error(tls: ssl.SSLSocket) -> bytes | str:
    """Send a 3.1.1 CONNECT; the CONNACK's bytes, or what went wrong (the server closed, an alert)."""
    try:
        tls.sendall(connect_packet("raw-tls"))
        data = tls.recv(4)
        return data if data else "EOF"
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


# ---- server authentication only -----------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 5])
def test_paho_over_tls_publish_subscribe(tls_broker, certs, version):
    b = tls_broker()
    port = mqtts_port(b)
    c = Client(port, f"tls-{version}", version=version, tls={"ca": certs.ca})
    assert c.connack == 0
    tls_version = c.client.socket().version()
    assert tls_version in ("TLSv1.2", "TLSv1.3")
    c.subscribe("tls/echo")
    c.publish("tls/echo", b"over TLS")
    m = c.wait_message()
    assert (m.topic, m.payload) == ("tls/echo", b"over TLS")
    c.disconnect()


def test_tls_and_plain_clients_share_the_broker(tls_broker, certs, observer_factory):
    b = tls_broker()
    obs = observer_factory(b.port, "mixed/#")  # plain TCP
    c = Client(mqtts_port(b), "tls-pub", tls={"ca": certs.ca})
    c.publish("mixed/a", b"from TLS")
    m = obs.get()
    assert (m.topic, m.payload) == ("mixed/a", b"from TLS")
    c.disconnect()


def test_tls_server_certificate_is_checked_by_the_client(tls_broker, certs):
    """The server presents tls_cert: a client trusting another CA refuses it (the test is not vacuous)."""
    b = tls_broker()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.rogue_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_tls(mqtts_port(b), ctx)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca))
    with raw_tls(mqtts_port(b), ctx) as tls:
        assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
        assert connack_or_error(tls) == CONNACK_OK_V311


def test_tls_below_1_2_refused(tls_broker, certs, lastwill_log):
    b = tls_broker()
    port = mqtts_port(b)
    # a client that can only speak TLS 1.1 (allowed on its side with SECLEVEL=0, so that the refusal
    # is the broker's: the broker logs UNSUPPORTED_PROTOCOL for the ClientHello it received)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(certs.ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        raw_tls(port, old)
    wait_log(lastwill_log, "UNSUPPORTED_PROTOCOL: the client offered only TLS versions below 1.2")
    # TLS 1.2 itself is accepted
    v12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    v12.load_verify_locations(str(certs.ca))
    v12.maximum_version = ssl.TLSVersion.TLSv1_2
    with raw_tls(port, v12) as tls:
        assert tls.version() == "TLSv1.2"
        assert connack_or_error(tls) == CONNACK_OK_V311


def test_tls_plain_mqtt_on_the_tls_port_is_closed_and_logged(tls_broker, certs, lastwill_log):
    b = tls_broker()
    with socket.create_connection(("127.0.0.1", mqtts_port(b)), timeout=5) as sock:
        sock.sendall(connect_packet("plain-on-tls"))
        data = sock.recv(100)
        assert b"\x20\x02" not in data  # no CONNACK: the core never saw it
    wait_log(lastwill_log, "WRONG_VERSION_NUMBER: not TLS")
    assert Client(mqtts_port(b), "after", tls={"ca": certs.ca}).connack == 0


def test_tls_handshake_timeout_closes_silent_connections(tls_broker, lastwill_log):
    b = tls_broker(connect_timeout=0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", mqtts_port(b)), timeout=5) as sock:
        assert sock.recv(10) == b""  # closed by the broker
    assert time.monotonic() - started < 3
    wait_log(lastwill_log, "no TLS handshake within 0.5s (connect_timeout)")


# ---- client certificates ------------------------------------------------------------------------
def test_tls_client_certificate_accepted(tls_broker, certs):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    c = Client(mqtts_port(b), "with-cert", tls={"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key})
    c.subscribe("cert/echo")
    c.publish("cert/echo", b"mutual TLS")
    assert c.wait_message().payload == b"mutual TLS"
    c.disconnect()


def test_tls_client_certificate_required_refuses_a_client_without_one(tls_broker, certs, lastwill_log):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    with raw_tls(mqtts_port(b), client_tls_context(certs, cert=False)) as tls:
        # TLS 1.3: the client's side of the handshake completes before the server checks; nothing more
        result = connack_or_error(tls)
    assert not isinstance(result, bytes), result  # not one byte of MQTT came back
    wait_log(lastwill_log, "PEER_DID_NOT_RETURN_A_CERTIFICATE")
    # paho-mqtt without a certificate: no CONNACK either
    c = Client(mqtts_port(b), "no-cert", tls={"ca": certs.ca}, expect_connack=False)
    with pytest.raises(AssertionError, match="no CONNACK"):
        c.loop_until(lambda: c.connack is not None, "no CONNACK", timeout=1.5)


def test_tls_client_certificate_from_another_ca_refused(tls_broker, certs, lastwill_log):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca))
    ctx.load_cert_chain(str(certs.rogue_cert), str(certs.rogue_key))
    with raw_tls(mqtts_port(b), ctx) as tls:
        result = connack_or_error(tls)
    assert not isinstance(result, bytes), result
    wait_log(lastwill_log, "CERTIFICATE_VERIFY_FAILED")


# ---- a refused client certificate: the client is told why, with a TLS alert (RFC 8446 6.2) --------
def tls_alert(port: int, ctx: ssl.SSLContext) -> ssl.SSLError:
    """Connect, then send a CONNECT and read: the TLS alert the broker sent, as the client's SSLError.
    (TLS 1.2: it comes during the handshake. TLS 1.3: the client's side of the handshake is done
    before the server checks the certificate, so it comes at the first read.)"""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        tls.sendall(connect_packet("alerted"))
        data = tls.recv(4)
    except ssl.SSLError as e:
        return e
    finally:
        sock.close()
    raise AssertionError(f"no TLS alert: the client read {data!r} (b'': a plain end of file)")


def tls12(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@pytest.mark.parametrize("tls_version,reason", [
    ("1.3", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),  # certificate_required (116)
    ("1.2", "SSLV3_ALERT_HANDSHAKE_FAILURE"),  # TLS 1.2 has no certificate_required: handshake_failure (40)
])
def test_tls_alert_sent_to_a_client_without_a_required_certificate(tls_broker, certs, lastwill_log, tls_version,
                                                                   reason):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    ctx = client_tls_context(certs, cert=False)
    if tls_version == "1.2":
        tls12(ctx)
    err = tls_alert(mqtts_port(b), ctx)
    assert err.reason == reason, err
    wait_log(lastwill_log, "PEER_DID_NOT_RETURN_A_CERTIFICATE: the client sent no certificate")


@pytest.mark.parametrize("tls_version", ["1.3", "1.2"])
def test_tls_alert_sent_to_a_client_with_an_expired_certificate(tls_broker, certs, lastwill_log, tls_version):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    ctx = client_tls_context(certs, cert=False)
    ctx.load_cert_chain(str(certs.expired_cert), str(certs.expired_key))
    if tls_version == "1.2":
        tls12(ctx)
    err = tls_alert(mqtts_port(b), ctx)
    assert err.reason == "SSLV3_ALERT_CERTIFICATE_EXPIRED", err  # certificate_expired (45)
    wait_log(lastwill_log, "CERTIFICATE_VERIFY_FAILED (certificate has expired)")


@pytest.mark.parametrize("tls_version", ["1.3", "1.2"])
def test_tls_alert_sent_to_a_client_with_an_untrusted_certificate(tls_broker, certs, lastwill_log, tls_version):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    ctx = client_tls_context(certs, cert=False)
    ctx.load_cert_chain(str(certs.rogue_cert), str(certs.rogue_key))
    if tls_version == "1.2":
        tls12(ctx)
    err = tls_alert(mqtts_port(b), ctx)
    assert err.reason == "TLSV1_ALERT_UNKNOWN_CA", err  # unknown_ca (48)
    wait_log(lastwill_log, "CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)")
    # and the broker goes on: a client with a good certificate is served
    with raw_tls(mqtts_port(b), client_tls_context(certs, cert=True)) as tls:
        assert connack_or_error(tls) == CONNACK_OK_V311


def test_tls_alert_sent_to_a_client_offering_only_tls_1_1(tls_broker, certs, lastwill_log):
    b = tls_broker()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(certs.ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    err = tls_alert(mqtts_port(b), old)
    assert err.reason == "TLSV1_ALERT_PROTOCOL_VERSION", err  # protocol_version (70)
    wait_log(lastwill_log, "UNSUPPORTED_PROTOCOL")


def test_tls_client_certificate_optional_when_not_required(tls_broker, certs):
    b = tls_broker(tls_ca=str(certs.ca))
    with raw_tls(mqtts_port(b), client_tls_context(certs, cert=False)) as tls:
        assert connack_or_error(tls) == CONNACK_OK_V311
    with raw_tls(mqtts_port(b), client_tls_context(certs, cert=True)) as tls:
        assert connack_or_error(tls) == CONNACK_OK_V311


def _connected_event(obs, client_id: str) -> dict:
    deadline = time.monotonic() + 5
    while True:
        m = obs.get(max(0.1, deadline - time.monotonic()))
        if m.topic.endswith(f"/clients/{client_id}/connected"):
            return json.loads(m.payload)


def test_tls_cert_cn_as_username(tls_broker, certs, observer_factory):
    """The CN of the verified certificate replaces the CONNECT's user name (Conn.cert_username)."""
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True, tls_cert_cn_as_username=True)
    obs = observer_factory(b.port, "$SYS/brokers/+/clients/+/connected")
    c = Client(mqtts_port(b), "cn-user", tls={"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key},
               username="mallory")
    event = _connected_event(obs, "cn-user")
    assert event["username"] == "sensor-7"
    conns = b.call(lambda: [(x.client_id, x.cert_username) for x in b.broker.core.conns.values()])
    assert ("cn-user", "sensor-7") in conns
    c.disconnect()


def test_tls_without_cn_as_username_keeps_the_connect_user_name(tls_broker, certs, observer_factory):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    obs = observer_factory(b.port, "$SYS/brokers/+/clients/+/connected")
    c = Client(mqtts_port(b), "name-user", tls={"ca": certs.ca, "cert": certs.client_cert,
                                                 "key": certs.client_key}, username="alice")
    assert _connected_event(obs, "name-user")["username"] == "alice"
    conns = b.call(lambda: [(x.client_id, x.cert_username) for x in b.broker.core.conns.values()])
    assert ("name-user", None) in conns
    c.disconnect()


def test_tls_cert_without_cn_refused_when_cn_is_the_username(tls_broker, certs, lastwill_log):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True, tls_cert_cn_as_username=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs.ca))
    ctx.load_cert_chain(str(certs.no_cn_cert), str(certs.no_cn_key))
    with raw_tls(mqtts_port(b), ctx) as tls:
        result = connack_or_error(tls)
    assert not isinstance(result, bytes), result
    wait_log(lastwill_log, "has no Common Name")


# ---- wills over TLS -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 5])
def test_tls_crash_publishes_the_will_MQTT_3_1_2_8(tls_broker, certs, observer_factory, version):
    b = tls_broker()
    obs = observer_factory(b.port, "dead/#")
    c = Client(mqtts_port(b), f"tls-crash-{version}", version=version, tls={"ca": certs.ca},
               will=("dead/tls", b"tls client gone", 1))
    c.crash()
    m = obs.get()
    assert (m.topic, m.payload) == ("dead/tls", b"tls client gone")


def test_tls_clean_disconnect_publishes_no_will_MQTT_3_14_4_3(tls_broker, certs, observer_factory):
    b = tls_broker()
    obs = observer_factory(b.port, "dead/#")
    c = Client(mqtts_port(b), "tls-clean", tls={"ca": certs.ca}, will=("dead/tls", b"should not", 1))
    c.disconnect()
    obs.expect_none(1.0)


# ---- mosquitto's clients --------------------------------------------------------------------------
def _mosquitto_roundtrip(port: int, tls_args: list[str], version: str) -> str:
    sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(port), "-V", version, "-t", "mosq/tls",
                            "-C", "1", "-W", "10", "-i", f"mosq-sub-{version}", *tls_args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = ""
        deadline = time.monotonic() + 8
        while sub.poll() is None and time.monotonic() < deadline:
            # publish until the subscriber (connecting in parallel) has received one
            subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "-V", version, "-t", "mosq/tls",
                            "-m", "hello from mosquitto_pub", "-q", "1", "-i", f"mosq-pub-{version}", *tls_args],
                           check=True, timeout=10, capture_output=True)
            try:
                out, err = sub.communicate(timeout=0.3)
            except subprocess.TimeoutExpired:
                continue
        assert sub.returncode == 0, sub.stderr.read() if sub.stderr else ""
        return out.strip()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients_over_tls(tls_broker, certs, mosquitto_clients, version):
    b = tls_broker()
    assert _mosquitto_roundtrip(mqtts_port(b), ["--cafile", str(certs.ca)], version) == "hello from mosquitto_pub"


def test_mosquitto_clients_over_tls_with_client_certificates(tls_broker, certs, mosquitto_clients):
    b = tls_broker(tls_ca=str(certs.ca), tls_require_client_cert=True)
    args = ["--cafile", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key)]
    assert _mosquitto_roundtrip(mqtts_port(b), args, "mqttv311") == "hello from mosquitto_pub"
    # and without its certificate, mosquitto_pub cannot publish
    proc = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(mqtts_port(b)), "-t", "mosq/tls", "-m", "x",
                           "-q", "1", "--cafile", str(certs.ca)], capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0


# ---- start-up: bad files stop it, naming the key and the file -------------------------------------
def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lastwill", "serve", "--memory", "--listen", "127.0.0.1:0",
                           "--tls-listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30)


def test_tls_startup_missing_cert_file_named(certs, tmp_path):
    missing = tmp_path / "nope.crt"
    proc = _serve("--tls-cert", str(missing), "--tls-key", str(certs.server_key))
    assert proc.returncode == 2
    assert f"config key 'tls_cert': cannot read file '{missing}': No such file or directory" in proc.stderr


def test_tls_startup_missing_key_file_named(certs, tmp_path):
    missing = tmp_path / "nope.key"
    proc = _serve("--tls-cert", str(certs.server_cert), "--tls-key", str(missing))
    assert proc.returncode == 2
    assert f"config key 'tls_key': cannot read file '{missing}'" in proc.stderr


def test_tls_startup_key_not_matching_the_certificate_named(certs):
    proc = _serve("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.other_key))
    assert proc.returncode == 2
    assert (f"config key 'tls_key': the private key in '{certs.other_key}' does not match the certificate in "
            f"'{certs.server_cert}'") in proc.stderr
    assert "listening" not in proc.stderr


def test_tls_startup_bad_ca_file_named(certs):
    proc = _serve("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
                  "--tls-ca", str(certs.server_key), "--tls-require-client-cert")
    assert proc.returncode == 2
    assert f"config key 'tls_ca': file '{certs.server_key}' is not a PEM file of CA certificates" in proc.stderr


@pytest.mark.parametrize("case", ["encrypted_key", "key_as_cert", "cert_as_key", "corrupt_cert", "directory"])
def test_tls_bad_files_named(certs, tmp_path, case):
    cert, key = str(certs.server_cert), str(certs.server_key)
    if case == "encrypted_key":
        key, expected = str(certs.encrypted_key), f"'tls_key': file '{certs.encrypted_key}' is an encrypted private key"
    elif case == "key_as_cert":
        cert, expected = key, f"'tls_cert': file '{key}' is not a PEM certificate"
    elif case == "cert_as_key":
        key, expected = cert, f"'tls_key': file '{cert}' is not a PEM private key"
    elif case == "corrupt_cert":
        bad = tmp_path / "corrupt.crt"
        bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        cert, expected = str(bad), f"'tls_cert': file '{bad}' holds no usable PEM certificate"
    else:
        cert, expected = str(tmp_path), f"'tls_cert': cannot read file '{tmp_path}': Is a directory"
    with pytest.raises(ConfigError) as err:
        server_context(Config(tls_listen=["127.0.0.1:0"], tls_cert=cert, tls_key=key))
    assert expected in str(err.value)


def test_tls_embedded_broker_start_raises_config_error(certs):
    broker = Broker(listen=["127.0.0.1:0"], memory=True, tls_listen=["127.0.0.1:0"], tls_cert=str(certs.server_cert),
                    tls_key=str(certs.other_key))
    with pytest.raises(ConfigError, match="does not match the certificate"):
        asyncio.run(broker.start())


# ---- the settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "expected"), [
    ({"tls_listen": ["127.0.0.1:8883"]}, "config key 'tls_cert': required when tls_listen is set"),
    ({"wss_listen": ["127.0.0.1:8884"], "tls_cert": "a.crt"}, "config key 'tls_key': required when wss_listen is set"),
    ({"tls_require_client_cert": True}, "config key 'tls_ca': required when tls_require_client_cert is true"),
    ({"tls_ca": "ca.crt", "tls_cert_cn_as_username": True},
     "config key 'tls_cert_cn_as_username': needs tls_require_client_cert = true"),
    ({"tls_listen": "127.0.0.1:8883"}, "config key 'tls_listen': expected a list of HOST:PORT"),
    ({"tls_listen": ["localhost"]}, "config key 'tls_listen': expected HOST:PORT"),
    ({"tls_require_client_cert": "yes"}, "config key 'tls_require_client_cert': expected true or false"),
    ({"listen": []}, "config key 'listen': expected a non-empty list of HOST:PORT (or at least one of tls_listen"),
])
def test_tls_settings_validated(settings, expected):
    with pytest.raises(ConfigError) as err:
        Config(**settings).validate()
    assert expected in str(err.value)


def test_tls_settings_from_flags():
    args = build_parser().parse_args([
        "serve", "--listen", "", "--tls-listen", "127.0.0.1:8883", "--tls-listen", "[::1]:8883",
        "--tls-cert", "s.crt", "--tls-key", "s.key", "--tls-ca", "ca.crt", "--tls-require-client-cert",
        "--tls-cert-cn-as-username", "--ws-listen", "127.0.0.1:8080", "--wss-listen", "127.0.0.1:8443",
        "--ws-path", "/ws"])
    config = config_from_args(args)
    assert config.listen == []
    assert config.tls_listen == ["127.0.0.1:8883", "[::1]:8883"]
    assert (config.tls_cert, config.tls_key, config.tls_ca) == ("s.crt", "s.key", "ca.crt")
    assert config.tls_require_client_cert and config.tls_cert_cn_as_username
    assert (config.ws_listen, config.wss_listen, config.ws_path) == (["127.0.0.1:8080"], ["127.0.0.1:8443"], "/ws")
    assert config.listeners() == [("mqtts", "127.0.0.1:8883"), ("mqtts", "[::1]:8883"), ("ws", "127.0.0.1:8080"),
                                  ("wss", "127.0.0.1:8443")]


def test_tls_settings_from_toml(tmp_path):
    path = tmp_path / "lastwill.toml"
    path.write_text('listen = []\ntls_listen = ["127.0.0.1:8883"]\ntls_cert = "s.crt"\ntls_key = "s.key"\n'
                    'wss_listen = ["127.0.0.1:8443"]\nws_path = "/"\n')
    config = load_config(path)
    assert config.listen == [] and config.tls_listen == ["127.0.0.1:8883"] and config.ws_path == "/"
