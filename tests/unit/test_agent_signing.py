"""The agent's identity and signed requests (docs/agent-protocol.md sections 1 and 2)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from kubepam.agent import identity
from kubepam.agent.signing import authorization, signed_token

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def issue(csr_pem: str, now: datetime = NOW) -> str:
    """What the broker does with the CSR, in miniature: a CA-signed client certificate for its key."""
    ca_key = Ed25519PrivateKey.generate()
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubepam"),
            x509.NameAttribute(NameOID.COMMON_NAME, "web-1"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=24))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("kubepam://server/team-a/web-1")]),
            critical=False,
        )
        .sign(ca_key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    key = identity.load_or_create_key(tmp_path / "state")
    path = tmp_path / "state" / identity.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    again = identity.load_or_create_key(tmp_path / "state")
    assert identity.key_fingerprint(again) == identity.key_fingerprint(key)
    path.chmod(0o644)
    identity.load_or_create_key(tmp_path / "state")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_foreign_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / identity.KEY_FILE).write_text("not a key")
    with pytest.raises(identity.IdentityError):
        identity.load_or_create_key(tmp_path)


def test_csr_carries_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    csr = x509.load_pem_x509_csr(identity.csr_pem(key, "web-1").encode())
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web-1"
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert identity.key_fingerprint(key) == digest.finalize().hex()


def test_certificate_storage_and_renew_after(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    answer = {
        "certificate": issue(identity.csr_pem(key, "web-1")),
        "caCertificates": "",
        "expiresAt": "2026-11-23T10:00:00Z",
        "renewAfter": "2026-11-22T22:00:00Z",
    }
    cert = identity.Certificate.from_answer(answer)
    identity.save_certificate(tmp_path, cert)
    assert (tmp_path / identity.CERT_FILE).stat().st_mode & 0o777 == 0o600
    loaded = identity.load_certificate(tmp_path)
    assert loaded == cert
    assert not cert.due(NOW)
    assert cert.due(datetime(2026, 11, 22, 22, 0, tzinfo=UTC))
    assert identity.load_certificate(tmp_path / "none") is None
    with pytest.raises(identity.IdentityError):
        identity.Certificate.from_answer(answer | {"certificate": "junk"})
    with pytest.raises(identity.IdentityError):
        identity.Certificate.from_answer(answer | {"expiresAt": "2026-11-23T10:00:00"})  # no zone


def test_signed_request_verifies_with_the_certificate_key() -> None:
    key = Ed25519PrivateKey.generate()
    cert_pem = issue(identity.csr_pem(key, "web-1"))
    token = signed_token(key, cert_pem, "get", "/v1/servers/self/access?wait=30", NOW)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    der = base64.b64decode(header["x5c"][0])
    cert = x509.load_der_x509_certificate(der)
    assert cert.public_bytes(serialization.Encoding.PEM).decode() == cert_pem
    claims = jwt.decode(
        token,
        cert.public_key(),  # the broker verifies with the key of the certificate in x5c
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["htm"] == "GET"
    assert claims["htu"] == "/v1/servers/self/access?wait=30"
    assert claims["iat"] == int(NOW.timestamp())
    assert 0 < claims["exp"] - claims["iat"] <= 60
    assert len(bytes.fromhex(claims["jti"])) == 16
    # another key's signature does not verify
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            Ed25519PrivateKey.generate().public_key(),
            algorithms=["EdDSA"],
            options={"verify_exp": False},
        )


def test_every_token_has_its_own_jti_and_expires() -> None:
    key = Ed25519PrivateKey.generate()
    cert_pem = issue(identity.csr_pem(key, "web-1"))
    header = authorization(key, cert_pem, "POST", "/v1/servers/self/events", NOW)
    scheme, _, token = header.partition(" ")
    assert scheme == "KubepamAgent"
    other = signed_token(key, cert_pem, "POST", "/v1/servers/self/events", NOW)
    opts = {"verify_exp": False, "verify_iat": False}
    one = jwt.decode(token, key.public_key(), algorithms=["EdDSA"], options=opts)
    two = jwt.decode(other, key.public_key(), algorithms=["EdDSA"], options=opts)
    assert one["jti"] != two["jti"]
    assert signed_token(key, cert_pem, "GET", "/x", NOW, lifetime=600).count(".") == 2
    long_lived = jwt.decode(
        signed_token(key, cert_pem, "GET", "/x", NOW, lifetime=600),
        key.public_key(),
        algorithms=["EdDSA"],
        options=opts,
    )
    assert long_lived["exp"] - long_lived["iat"] == 60  # never more than the broker accepts
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, key.public_key(), algorithms=["EdDSA"])  # NOW is long past
