"""A small private CA and certificates for a lab or a first deployment (`reconciler tls init`).

Layout written to `out_dir` (keys 0600, certificates 0644, the directory 0700 when created):

    ca.pem, ca-key.pem                 the CA (reused when both exist: adding a node later keeps
                                       every existing certificate valid)
    daemon.pem, daemon-key.pem         client certificate of the daemon (CN and SAN DNS = daemon_name)
    node-NAME.pem, node-NAME-key.pem   per node: server *and* client (agents replicate to each
                                       other), SAN DNS:NAME, DNS:localhost, IP:127.0.0.1, IP:::1

Existing leaf certificates issued by this CA are kept: delete a pair to reissue it. For
production, use your own CA; these files only need to be PEM with the right names in the SANs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LabPKI", "LeafFiles", "create_lab_pki"]

# Same rule as node names in the config: the name goes into file names and SANs.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
_DNS_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
CA_MIN_DAYS = 3650  # the CA outlives the leaves so reissuing a leaf never needs a new CA
_SKEW = timedelta(minutes=5)  # valid slightly in the past: clocks on lab machines drift


class LeafFiles(TypedDict):
    name: str
    cert: Path
    key: Path


class LabPKI(TypedDict):
    dir: Path
    ca: Path  # the CA certificate: what every party trusts (`tls.ca`)
    ca_key: Path
    daemon: LeafFiles
    nodes: dict[str, LeafFiles]
    created: list[Path]  # files written by this call (empty when everything existed)


def _write(path: Path, data: bytes, mode: int) -> None:
    # Atomic and born with its final mode: a key is never briefly world-readable or half-written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    if cert.public_key() != key.public_key():
        raise ValueError(f"{key_path} does not belong to {cert_path}")
    return cert, key


def _new_ca(days: int, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reconciler lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "reconciler lab CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + timedelta(days=max(days, CA_MIN_DAYS)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    *,
    server: bool,
    days: int,
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        # localhost and loopback too, so a lab on one machine connects by 127.0.0.1 without an override
        sans += [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reconciler lab"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _issued_by(cert_path: Path, ca_cert: x509.Certificate) -> bool:
    """Whether an existing leaf belongs to this CA (one from an older CA is reissued)."""
    try:
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def create_lab_pki(
    out_dir: Path,
    *,
    nodes: list[str],
    daemon_name: str = "reconciler-daemon",
    days: int = 825,
) -> LabPKI:
    """Create (or complete) a lab PKI in `out_dir`; see the module docstring for the layout.

    Raises ValueError for a bad node or daemon name, duplicate nodes or days < 1.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    bad = [n for n in nodes if not _NAME_RE.match(n)]
    if bad:
        raise ValueError(
            f"invalid node name(s) {', '.join(map(repr, bad))}: use 1-63 letters, digits, '-' or '_'"
        )
    if len(set(nodes)) != len(nodes):
        raise ValueError("duplicate node names")
    if not _DNS_RE.match(daemon_name):
        raise ValueError(f"invalid daemon name {daemon_name!r}: use a DNS-style name")

    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    created: list[Path] = []

    ca_path, ca_key_path = out_dir / "ca.pem", out_dir / "ca-key.pem"
    if ca_path.exists() and ca_key_path.exists():
        ca_cert, ca_key = _load_ca(ca_path, ca_key_path)
    elif ca_path.exists() or ca_key_path.exists():
        raise ValueError(
            f"{out_dir}: only one of ca.pem and ca-key.pem exists; remove it or restore the other"
        )
    else:
        ca_cert, ca_key = _new_ca(days, now)
        _write(ca_key_path, _key_pem(ca_key), 0o600)
        _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        created += [ca_key_path, ca_path]

    def leaf(stem: str, name: str, *, server: bool) -> LeafFiles:
        cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}-key.pem"
        if not (cert_path.exists() and key_path.exists() and _issued_by(cert_path, ca_cert)):
            cert, key = _leaf(ca_cert, ca_key, name, server=server, days=days, now=now)
            _write(key_path, _key_pem(key), 0o600)
            _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            created.extend([key_path, cert_path])
        return {"name": name, "cert": cert_path, "key": key_path}

    daemon = leaf("daemon", daemon_name, server=False)
    node_files = {n: leaf(f"node-{n}", n, server=True) for n in nodes}
    return {
        "dir": out_dir,
        "ca": ca_path,
        "ca_key": ca_key_path,
        "daemon": daemon,
        "nodes": node_files,
        "created": created,
    }
