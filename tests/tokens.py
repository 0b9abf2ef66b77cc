"""Test issuers: local keys that mint JWTs shaped like each CI/CD provider's, and hostile variants.

Used by handler tests, e2e tests and the benchmark. Keys are generated per process; nothing here
talks to a network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

CIRCLE_ORG = "0b1c2d3e-1111-2222-3333-444455556666"
CIRCLE_PROJECT = "7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff"
AUDIENCE = "https://kubepam.example.com"

ISSUERS = {
    "github": "https://token.actions.githubusercontent.com",
    "gitlab": "https://gitlab.com",
    "circleci": f"https://oidc.circleci.com/org/{CIRCLE_ORG}",
    "gcp": "https://accounts.google.com",
    "generic": "https://ci.acme.internal",
}


def provider_claims(provider: str) -> dict[str, Any]:
    """Claims as each provider really issues them (names, nesting, types)."""
    if provider == "github":
        return {
            "sub": "repo:acme/payments:environment:production",
            "repository": "acme/payments",
            "repository_owner": "acme",
            "repository_id": "680148012",
            "repository_owner_id": "9919",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "environment": "production",
            "workflow": "deploy",
            "event_name": "push",
            "actor": "octocat",
            "job_workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
            "run_id": "8532051234",
            "run_attempt": "1",
            "runner_environment": "github-hosted",
        }
    if provider == "gitlab":
        return {
            "sub": "project_path:acme/web:ref_type:branch:ref:main",
            "project_path": "acme/web",
            "project_id": "42",
            "namespace_path": "acme",
            "namespace_id": "7",
            "ref": "main",
            "ref_type": "branch",
            "ref_protected": "true",
            "pipeline_source": "push",
            "user_login": "jdoe",
            "environment": "production",
        }
    if provider == "circleci":
        return {
            "sub": f"org/{CIRCLE_ORG}/project/{CIRCLE_PROJECT}/user/5d2f5c1e-0000-1111-2222-333344445555",
            "oidc.circleci.com/project-id": CIRCLE_PROJECT,
            "oidc.circleci.com/context-ids": ["c1a2b3c4-0000-0000-0000-000000000001"],
            "oidc.circleci.com/vcs-origin": "github.com/acme/api",
            "oidc.circleci.com/vcs-ref": "refs/heads/main",
        }
    if provider == "gcp":
        return {
            "sub": "109876543210987654321",
            "email": "ci@acme-prod.iam.gserviceaccount.com",
            "email_verified": True,
            "azp": "109876543210987654321",
            "google": {
                "compute_engine": {
                    "project_id": "acme-prod",
                    "project_number": 1234567890,
                    "zone": "europe-west1-b",
                    "instance_name": "runner-1",
                }
            },
        }
    return {"sub": "pipeline:acme/tools:main", "pipeline": "acme/tools", "branch": "main", "run": 7}


@dataclass
class Issuer:
    """An OIDC issuer with one current signing key."""

    issuer: str
    alg: str = "RS256"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    key: Any = None

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = new_private_key(self.alg)

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.key, self.alg, self.kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def claims(self, provider: str = "generic", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            **provider_claims(provider),
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def mint(self, provider: str = "generic", headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        return jwt.encode(
            self.claims(provider, **overrides),
            self.key,
            algorithm=self.alg,
            headers={"kid": self.kid, **(headers or {})},
        )


def new_private_key(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


def public_jwk(private: Any, alg: str, kid: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


def sign_raw(issuer: Issuer, header: bytes, payload: bytes, alg: str | None = None) -> str:
    """A token over exactly these header and payload bytes, signed with the issuer's real key (``alg``:
    the algorithm that signs, whatever the header says), for inputs PyJWT's encoder would never write."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    algorithm = jwt.get_algorithm_by_name(alg or issuer.alg)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), issuer.key))}"


def signed_claims(issuer: Issuer, claims: Any, headers: dict[str, Any] | None = None) -> str:
    """``claims`` (any JSON value) as the payload, signed with the issuer's key and kid."""
    header = {"alg": issuer.alg, "typ": "JWT", "kid": issuer.kid, **(headers or {})}
    return sign_raw(issuer, json.dumps(header).encode(), json.dumps(claims).encode())


def hs256_with_public_key(issuer: Issuer, claims: dict[str, Any]) -> str:
    """The classic key-confusion attack: HMAC-sign with the issuer's *public* key as the secret."""
    pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def hostile_tokens(issuer: Issuer) -> list[tuple[str, str, str, int]]:
    """(name, token, expected outcome, expected HTTP status) for every attack the broker must refuse."""
    now = int(time.time())
    stranger = Issuer(issuer.issuer, alg=issuer.alg, kid="kid-nobody-published")
    impostor = Issuer(issuer.issuer, alg=issuer.alg, kid=issuer.kid)  # same kid, other key
    no_exp = issuer.claims(exp=None)
    return [
        ("alg-none", forge({"alg": "none", "kid": issuer.kid}, issuer.claims()), "alg_none", 400),
        ("hs256-with-public-key", hs256_with_public_key(issuer, issuer.claims()), "alg_symmetric", 400),
        ("kid-unknown", stranger.mint(), "kid_unknown", 400),
        ("wrong-key", impostor.mint(), "bad_signature", 400),
        ("expired", issuer.mint(exp=now - 3600, iat=now - 7200, nbf=now - 7200), "expired", 400),
        ("nbf-in-future", issuer.mint(nbf=now + 3600), "not_yet_valid", 400),
        ("wrong-iss", issuer.mint(iss="https://evil.example"), "wrong_iss", 400),
        ("wrong-aud", issuer.mint(aud="https://someone-else.example"), "wrong_aud", 400),
        (
            "missing-exp",
            jwt.encode(no_exp, issuer.key, algorithm=issuer.alg, headers={"kid": issuer.kid}),
            "missing_exp",
            400,
        ),
        ("two-segments", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", "malformed", 400),
        ("garbage-segments", "!!!.###.$$$", "malformed", 400),
        (
            "oversize",
            issuer.mint(padding="x" * 50_000),
            "oversize",
            400,
        ),  # 64-72 KiB: the token, not the body
    ]
