"""Test certificates, made with the openssl command (Debian's openssl package; scripts/test.sh installs
it): a CA, a server certificate for localhost and 127.0.0.1, client certificates, and bad ones (another
CA's, an expired one).

``make_certs(folder)`` returns a ``Certs`` with the paths. P-256 keys: quick to generate.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LEAF_EXT = """basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


@dataclass
class Certs:
    dir: Path
    ca: Path  # the CA that signs the server and client certificates
    ca_key: Path
    server_cert: Path  # CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    server_key: Path
    client_cert: Path  # CN=sensor-7, signed by ca
    client_key: Path
    no_cn_cert: Path  # a client certificate signed by ca whose subject has no CN (O=acme only)
    no_cn_key: Path
    rogue_ca: Path  # another CA, not trusted by the broker
    rogue_cert: Path  # CN=sensor-7 too, signed by rogue_ca
    rogue_key: Path
    expired_cert: Path  # CN=old-sensor, signed by ca, valid only on 2020-01-01
    expired_key: Path
    other_key: Path  # a key that matches none of the certificates
    encrypted_key: Path  # server_key, encrypted with the passphrase "secret"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=cwd)


def _ca(name: str, subject: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "3",
             "-subj", subject, cwd=cwd)


def _leaf(name: str, subject: str, ca: str, usage: str, san: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(LEAF_EXT.format(usage=usage, san=san))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


def _expired_leaf(name: str, subject: str, ca: str, cwd: Path) -> None:
    """A client certificate signed by ``ca`` that expired long ago (``openssl ca`` sets the dates)."""
    _key(f"{name}.key", cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(LEAF_EXT.format(usage="clientAuth", san=""))
    db = cwd / f"{name}-ca"
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    (db / "ca.cnf").write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n"
                               f"serial = {db}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n")
    _openssl("ca", "-batch", "-config", str(db / "ca.cnf"), "-cert", f"{ca}.crt", "-keyfile", f"{ca}.key",
             "-in", f"{name}.csr", "-out", f"{name}.crt", "-startdate", "20200101000000Z",
             "-enddate", "20200102000000Z", "-extfile", f"{name}.ext", "-notext", cwd=cwd)


def make_certs(folder: Path) -> Certs:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is missing: scripts/test.sh installs Debian's openssl package")
    folder.mkdir(parents=True, exist_ok=True)
    _ca("ca", "/CN=lastwill test CA", folder)
    _ca("rogue-ca", "/CN=rogue CA", folder)
    _leaf("server", "/CN=localhost", "ca", "serverAuth", "subjectAltName = DNS:localhost, IP:127.0.0.1", folder)
    _leaf("client", "/O=acme/CN=sensor-7", "ca", "clientAuth", "", folder)
    _leaf("no-cn", "/O=acme", "ca", "clientAuth", "", folder)
    _leaf("rogue", "/CN=sensor-7", "rogue-ca", "clientAuth", "", folder)
    _expired_leaf("expired", "/CN=old-sensor", "ca", folder)
    _key("other.key", folder)
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key", cwd=folder)
    return Certs(
        dir=folder, ca=folder / "ca.crt", ca_key=folder / "ca.key",
        server_cert=folder / "server.crt", server_key=folder / "server.key",
        client_cert=folder / "client.crt", client_key=folder / "client.key",
        no_cn_cert=folder / "no-cn.crt", no_cn_key=folder / "no-cn.key",
        rogue_ca=folder / "rogue-ca.crt", rogue_cert=folder / "rogue.crt", rogue_key=folder / "rogue.key",
        expired_cert=folder / "expired.crt", expired_key=folder / "expired.key",
        other_key=folder / "other.key", encrypted_key=folder / "encrypted.key",
    )
