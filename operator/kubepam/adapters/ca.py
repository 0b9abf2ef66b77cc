"""Certificate authorities with ``cryptography``: key generation (Ed25519, ECDSA P-256, RSA 3072),
OpenSSH user certificates through ``SSHCertificateBuilder``, X.509 client certificates from CSRs,
fingerprints as ssh-keygen and openssl print them, and the JSON form kept in a project's Secret."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubepam.domain.certificates import STANDARD_EXTENSIONS, Validity
from kubepam.domain.project import CAGeneration

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CA_LIFETIME = timedelta(days=5 * 365)
_EXTENSIONS = tuple(ext.encode() for ext in sorted(STANDARD_EXTENSIONS))


class CertificateError(ValueError):
    """Input that cannot be certified (bad public key, bad CSR); the message says why."""


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ECDSA-P256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "RSA-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise CertificateError(f"unknown key type {key_type}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ssh_fingerprint(public_line: str) -> str:
    """SHA256:<base64> as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class CAKeys:
    generation: int
    key_type: str
    ssh_key: PrivateKey
    x509_key: PrivateKey
    x509_cert: x509.Certificate
    retire_at: datetime | None = None

    @property
    def meta(self) -> CAGeneration:
        return CAGeneration(self.generation, self.key_type, self.retire_at)

    def ssh_public_line(self, comment: str) -> str:
        raw = (
            self.ssh_key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        return f"{raw} {comment}"

    @property
    def ssh_fingerprint(self) -> str:
        return ssh_fingerprint(self.ssh_public_line(""))

    @property
    def x509_pem(self) -> str:
        return self.x509_cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def x509_fingerprint(self) -> str:
        return "SHA256:" + self.x509_cert.fingerprint(hashes.SHA256()).hex(":").upper()


def self_signed_ca(
    key: PrivateKey, name: x509.Name, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A CA certificate for ``key``: path length 0, signing certificates and CRLs only."""
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )


def new_ca(generation: int, key_type: str, common_name: str, now: datetime) -> CAKeys:
    ssh_key, x509_key = generate_key(key_type), generate_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubepam"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = self_signed_ca(x509_key, name, now - timedelta(minutes=5), now + CA_LIFETIME)
    return CAKeys(generation, key_type, ssh_key, x509_key, cert)


def encode_ring(ring: Sequence[CAKeys]) -> bytes:
    return json.dumps(
        [
            {
                "generation": ca.generation,
                "keyType": ca.key_type,
                "retireAt": ca.retire_at.isoformat() if ca.retire_at else None,
                "sshKey": _pem(ca.ssh_key),
                "x509Key": _pem(ca.x509_key),
                "x509Cert": ca.x509_pem,
            }
            for ca in ring
        ],
        indent=1,
    ).encode()


def _load_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError("unsupported CA key type in Secret")
    return key


def decode_ring(data: bytes) -> list[CAKeys]:
    out = []
    for item in json.loads(data):
        retire = item.get("retireAt")
        out.append(
            CAKeys(
                int(item["generation"]),
                item["keyType"],
                _load_key(item["sshKey"]),
                _load_key(item["x509Key"]),
                x509.load_pem_x509_certificate(item["x509Cert"].encode()),
                datetime.fromisoformat(retire) if retire else None,
            )
        )
    return out


def with_retirement(ca: CAKeys, retire_at: datetime | None) -> CAKeys:
    return replace(ca, retire_at=retire_at)


@functools.lru_cache(maxsize=4096)
def parse_ssh_public_key(line: str) -> Any:
    """Parse (and cache: people renew certificates for the same key every few minutes) a public key line."""
    try:
        key = load_ssh_public_key(line.strip().encode())
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"spec.publicKey: not a usable OpenSSH public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise CertificateError("spec.publicKey: RSA keys must be at least 2048 bits")
    return key


def random_serial() -> int:
    return secrets.randbits(63) or 1


def sign_ssh_user(
    ca: CAKeys, public_key: Any, principals: Sequence[str], valid: Validity, key_id: str, serial: int
) -> str:
    """An OpenSSH user certificate line (ssh-*-cert-v01@openssh.com ...)."""
    builder = (
        SSHCertificateBuilder()
        .public_key(public_key)
        .serial(serial)
        .type(SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([p.encode() for p in principals])
        .valid_after(int(valid.after.timestamp()))
        .valid_before(int(valid.before.timestamp()))
    )
    for ext in _EXTENSIONS:
        builder = builder.add_extension(ext, b"")
    cert = builder.sign(ca.ssh_key)
    return cert.public_bytes().decode()


def sign_client_csr(
    ca: CAKeys, csr_pem: str, common_name: str, uri: str, valid: Validity, serial: int
) -> str:
    """An X.509 client certificate (clientAuth) for the CSR's key, named by kubepam, not by the CSR."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise CertificateError(f"spec.csr: not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise CertificateError("spec.csr: the CSR's signature does not verify (no proof of key possession)")
    public = csr.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateError("spec.csr: key type must be Ed25519, ECDSA or RSA")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise CertificateError("spec.csr: RSA keys must be at least 2048 bits")
    ca_ski = ca.x509_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubepam"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca.x509_cert.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(valid.after)
        .not_valid_after(valid.before)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(public, rsa.RSAPublicKey),
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(ca.x509_key, _hash_for(ca.x509_key))
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
