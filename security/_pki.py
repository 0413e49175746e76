"""A private X.509 CA for the fleet's transport TLS: the broker, the coordinator's HTTPS
and the SuperLink.

These certificates protect the transports only. Who a site is comes from its
post-quantum identity and enrollment (:mod:`fedge.security._identity`), never from a
certificate. EC P-256 keys and SHA-256 signatures, as every TLS stack on a gNB host
speaks them. The CA's key stays where ``fedge pki init`` wrote it (keep it off the hosts);
each host gets the CA certificate and its own certificate and key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedge.security._errors import PkiError

__all__ = ["CA_CERT", "CA_KEY", "Issued", "init_ca", "issue"]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
MAX_DAYS = 3650
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")  # fmt: skip


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as written."""

    cert: Path
    key: Path


def _days(days: int) -> datetime.timedelta:
    if not 1 <= days <= MAX_DAYS:
        raise PkiError(f"--days: between 1 and {MAX_DAYS}, got {days}")
    return datetime.timedelta(days=days)


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    if path.exists() and not force:
        raise PkiError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def init_ca(
    directory: Path, *, common_name: str = "fedge CA", days: int = 1825, force: bool = False
) -> Issued:
    """Make a CA in ``directory``: ``ca.pem`` (0644) and its key ``ca.key`` (0600)."""
    if not common_name.strip() or len(common_name) > 64:
        raise PkiError("--name: 1 to 64 characters")
    lifetime = _days(days)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise PkiError(f"{directory} already holds a CA; pass --force to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _subject(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600, force)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return Issued(cert_path, key_path)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(
            f"{directory} holds no CA ({exc.filename} is missing): run `fedge pki init`"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{directory}: the CA does not load: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _alt_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _DNS.match(value):
        raise PkiError(f"--server-name: {value!r} is neither an IP address nor a DNS name")
    return x509.DNSName(value.lower())


def issue(
    directory: Path,
    name: str,
    *,
    server_names: Sequence[str] = (),
    client: bool = False,
    days: int = 365,
    force: bool = False,
) -> Issued:
    """Issue ``<name>.pem`` and ``<name>.key`` (0600) from the CA in ``directory``: a server
    certificate for the addresses in ``server_names`` (what the clients dial), a client one
    (``client``; the common name is the broker user name), or both."""
    if not _NAME.match(name):
        raise PkiError(f"name {name!r}: 1 to 64 letters, digits, '.', '_' or '-'")
    if name == "ca":
        raise PkiError("name 'ca' is the CA's own")
    if not server_names and not client:
        raise PkiError("say what the certificate is for: --server-name ADDRESS or --client")
    alt_names = [_alt_name(v) for v in server_names]
    lifetime = _days(days)
    ca_cert, ca_key = _load_ca(directory)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise PkiError(f"{cert_path} exists; pass --force to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if alt_names else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (_CryptoInvalidSignature, ValueError, TypeError) as exc:  # pragma: no cover
        raise PkiError(f"the issued certificate does not verify against {directory}") from exc
    _write(key_path, _key_pem(key), 0o600, force)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
    return Issued(cert_path, key_path)
