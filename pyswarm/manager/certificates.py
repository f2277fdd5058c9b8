"""The cluster's certificate authority and the manager's TLS certificate (the `cryptography` library).

`swarm init` makes the CA; every join token carries its SHA-256 digest, so a joining node checks the
manager before it sends anything (as swarm's SWMTKN-1-<CA digest>-<secret>). The manager's certificate is
issued by that CA for its addresses and renewed at start when it nears its end; clients trust the cluster's
CA alone, not the system's.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyswarm.manager.files import secure_dir

CERT_DIR = "certificates"
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
MANAGER_CERT = "manager.pem"
MANAGER_KEY = "manager-key.pem"
CA_LIFETIME = datetime.timedelta(days=20 * 365)  # swarm's root CA default: 20 years
MANAGER_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)  # a manager started this close to its certificate's end renews it


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def ca_digest(ca_pem: str) -> str:
    """SHA-256 of the CA certificate's DER form, in hex: what join tokens carry."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()


def cert_dir(data_dir: Path) -> Path:
    return data_dir / CERT_DIR


def read_ca(data_dir: Path) -> str | None:
    path = cert_dir(data_dir) / CA_CERT
    return path.read_text() if path.exists() else None


def create_ca(data_dir: Path, cluster_id: str) -> str:
    """A new cluster CA (its key 0600); its certificate as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pyswarm-root-ca-{cluster_id[:12]}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = secure_dir(cert_dir(data_dir))
    _write_private(directory / CA_KEY, _key_pem(key))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    _write_private(directory / CA_CERT, pem.encode())
    return pem


def ensure_manager_certificate(data_dir: Path, addresses: list[str]) -> tuple[Path, Path]:
    """The manager's certificate and key files: issued by the cluster CA for these addresses, again when
    missing, near their end, or lacking an address."""
    directory = cert_dir(data_dir)
    cert_path, key_path = directory / MANAGER_CERT, directory / MANAGER_KEY
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if current.not_valid_after_utc - _now() > RENEW_BEFORE and _covers(current, addresses):
            return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / CA_KEY} is not the cluster CA's EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyswarm-manager")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + MANAGER_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(_names(addresses)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _names(addresses: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in dict.fromkeys(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return names


def _covers(cert: x509.Certificate, addresses: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_names(addresses)) <= set(san)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
