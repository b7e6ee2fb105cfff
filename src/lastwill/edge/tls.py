"""TLS for the tls_listen and wss_listen listeners: the server's SSLContext, built once at start-up
(the TLS layer of each connection is edge/tlsconn.py).

A certificate or key that cannot be used stops start-up with a ConfigError naming the key and the
file (a missing file, not PEM, an encrypted key, a key that does not match the certificate).
"""

from __future__ import annotations

import logging
import ssl

from ..config import Config, TlsFiles, parse_listener_certs
from ..errors import ConfigError

log = logging.getLogger("lastwill")


# what the usual handshake failures mean (the OpenSSL reason is logged first)
HINTS = {
    "UNSUPPORTED_PROTOCOL": "the client offered only TLS versions below 1.2",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (tls_require_client_cert)",
    "CERTIFICATE_VERIFY_FAILED": "the client certificate is not signed by a CA of tls_ca, or expired",
    "WRONG_VERSION_NUMBER": "not TLS (plain MQTT on a TLS port?)",
    "HTTP_REQUEST": "not TLS (plain HTTP on a TLS port?)",
    "NO_SHARED_CIPHER": "no cipher suite in common",
}


class _EncryptedKey(Exception):
    pass


def _ask_password() -> str:
    # called by OpenSSL only for an encrypted key: lastwill has no passphrase setting (and must never
    # prompt on a terminal), so such a key is refused with a message
    raise _EncryptedKey


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"config key '{key}': cannot read file {path!r}: {e.strerror or e}") from None


def server_context(config: Config) -> ssl.SSLContext:
    """The SSLContext of the TLS listeners without a certificate of their own: TLS 1.2 at least, the
    server certificate, and the client CAs (tls_ca) when set. Raises ConfigError naming the key and the file."""
    return context_for(config, TlsFiles(config.tls_cert, config.tls_key, config.tls_ca))


def listener_files(config: Config) -> dict[str, TlsFiles]:
    """The files of each TLS listener ("HOST:PORT" as written in tls_listen / wss_listen): its own
    (tls_listener_certs) or tls_cert, tls_key, tls_ca."""
    own = parse_listener_certs(config.tls_listener_certs)
    default = TlsFiles(config.tls_cert, config.tls_key, config.tls_ca)
    return {item: own.get(item, default) for item in (*config.tls_listen, *config.wss_listen)}


def tls_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """Every TLS listener's SSLContext (one per distinct set of files). Raises ConfigError naming the
    key and the file."""
    built: dict[TlsFiles, ssl.SSLContext] = {}
    out = {}
    for item, files in listener_files(config).items():
        if files not in built:
            built[files] = context_for(config, files)
        out[item] = built[files]
    return out


def context_for(config: Config, files: TlsFiles) -> ssl.SSLContext:
    """The SSLContext of a TLS listener. Raises ConfigError naming the key and the file."""
    cert, key, ca = files.cert, files.key, files.ca
    k_cert, k_key, k_ca = files.name("tls_cert"), files.name("tls_key"), files.name("tls_ca")
    cert_pem = _read(k_cert, cert)
    key_pem = _read(k_key, key)
    if b"-----BEGIN" not in cert_pem or b"CERTIFICATE-----" not in cert_pem:
        raise ConfigError(f"config key '{k_cert}': file {cert!r} is not a PEM certificate "
                          f"(no '-----BEGIN CERTIFICATE-----')")
    if b"PRIVATE KEY-----" not in key_pem:
        raise ConfigError(f"config key '{k_key}': file {key!r} is not a PEM private key "
                          f"(no '-----BEGIN ... PRIVATE KEY-----')")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # (Python's default today too: explicit, whatever the default)
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2 renegotiation: a cheap way to make the server work
    try:
        ctx.load_cert_chain(cert, key, password=_ask_password)
    except _EncryptedKey:
        raise ConfigError(f"config key '{k_key}': file {key!r} is an encrypted private key: lastwill needs "
                          f"it unencrypted (e.g. openssl pkey -in {key} -out plain.key), readable only by "
                          f"the broker's user") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"config key '{k_key}': the private key in {key!r} does not match the "
                              f"certificate in {cert!r} ({k_cert})") from None
        try:  # which of the two is unusable?
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except ssl.SSLError:
            raise ConfigError(f"config key '{k_cert}': file {cert!r} holds no usable PEM certificate "
                              f"({e.reason or e})") from None
        raise ConfigError(f"config key '{k_key}': file {key!r} holds no usable private key for the "
                          f"certificate in {cert!r} ({e.reason or e})") from None
    except OSError as e:  # e.g. removed between the read above and here
        raise ConfigError(f"config key '{k_cert}'/'{k_key}': cannot load {cert!r} / {key!r}: "
                          f"{e.strerror or e}") from None
    if ca:
        ca_pem = _read(k_ca, ca)
        if b"CERTIFICATE-----" not in ca_pem:
            raise ConfigError(f"config key '{k_ca}': file {ca!r} is not a PEM file of CA certificates "
                              f"(no '-----BEGIN CERTIFICATE-----')")
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"config key '{k_ca}': file {ca!r} holds no usable PEM CA certificate "
                              f"({getattr(e, 'reason', None) or e})") from None
        # asked for, and verified against tls_ca when sent; required or not
        ctx.verify_mode = ssl.CERT_REQUIRED if config.tls_require_client_cert else ssl.CERT_OPTIONAL
    log.info("TLS%s: certificate %s, key %s, TLS 1.2 at least; client certificates: %s",
             f" ({files.where})" if files.where else "", cert, key,
             "not asked for" if not ca else
             f"{'required' if config.tls_require_client_cert else 'optional'}, CAs from {ca}"
             + ("; the certificate's CN is the user name" if config.tls_cert_cn_as_username else ""))
    return ctx


def common_name(peercert: dict | None) -> str | None:
    """The first Common Name of a verified peer certificate's subject (as ``getpeercert()`` gives it)."""
    for rdn in (peercert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def cert_username(config: Config, transport) -> tuple[bool, str | None]:
    """For a new connection on a TLS listener: (accepted, the certificate's CN when
    tls_cert_cn_as_username is on). A verified certificate without a CN cannot name a user: the
    connection is refused (False) with a log line."""
    if not config.tls_cert_cn_as_username:
        return True, None
    cn = common_name(transport.get_extra_info("peercert"))
    if not cn:
        peer = transport.get_extra_info("peername")
        log.warning("connection from %s refused: its client certificate has no Common Name to use as the "
                    "user name (tls_cert_cn_as_username)", peer)
        return False, None
    return True, cn
