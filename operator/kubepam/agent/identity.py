"""The agent's identity in its state directory: the Ed25519 key (created once, mode 0600), the CSR for
it, and the client certificate the broker issued (with its CA bundle, expiry and renew-after time).

    <state-dir>/agent.key          PKCS#8 PEM, 0600
    <state-dir>/certificate.json   {"certificate", "caCertificates", "expiresAt", "renewAfter"}, 0600
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from kubepam.agent.files import write_atomic

KEY_FILE = "agent.key"
CERT_FILE = "certificate.json"


class IdentityError(Exception):
    pass


@dataclass(frozen=True)
class Certificate:
    certificate: str  # PEM
    ca_certificates: str  # PEM bundle
    expires_at: datetime
    renew_after: datetime

    @classmethod
    def from_answer(cls, answer: Any) -> Certificate:
        """The broker's `agent` answer (enrollment) or renewal answer."""
        try:
            cert = cls(
                certificate=str(answer["certificate"]),
                ca_certificates=str(answer.get("caCertificates", "")),
                expires_at=_time(answer["expiresAt"]),
                renew_after=_time(answer["renewAfter"]),
            )
            x509.load_pem_x509_certificate(cert.certificate.encode())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IdentityError(f"the broker's certificate answer is malformed: {exc}") from None
        return cert

    def to_json(self) -> dict[str, str]:
        return {
            "certificate": self.certificate,
            "caCertificates": self.ca_certificates,
            "expiresAt": self.expires_at.isoformat(),
            "renewAfter": self.renew_after.isoformat(),
        }

    def due(self, now: datetime) -> bool:
        return now >= self.renew_after


def _time(text: Any) -> datetime:
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when


def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    path = state_dir / KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = Ed25519PrivateKey.generate()
        pem = new.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(path, pem, mode=0o600)
        return new
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 key")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return key


def csr_pem(key: Ed25519PrivateKey, hostname: str) -> str:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubepam")]
        + ([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])] if hostname else [])
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return request.public_bytes(serialization.Encoding.PEM).decode()


def key_fingerprint(key: Ed25519PrivateKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex (what the broker records as keyFingerprint)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def load_certificate(state_dir: Path) -> Certificate | None:
    path = state_dir / CERT_FILE
    try:
        return Certificate.from_answer(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path}: {exc}") from None


def save_certificate(state_dir: Path, cert: Certificate) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(state_dir / CERT_FILE, json.dumps(cert.to_json(), indent=1) + "\n", mode=0o600)
