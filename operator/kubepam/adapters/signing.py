"""kubepam's own signing keys (Ed25519) for access tokens, kept in one Secret shared by all replicas.

The Secret holds ``keys.json``: a list of {kid, created, retired, privateKey (PKCS#8 PEM)}. Which key
signs, which are published and when one is dropped is decided by :mod:`kubepam.domain.keyring`.
Writes use the Secret's resourceVersion, so two replicas rotating at once cannot both win.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kubepam.adapters.kube import KubeError, Secrets
from kubepam.domain import keyring
from kubepam.domain.keyring import KeyRecord

DATA_KEY = "keys.json"
LABELS = {
    "app.kubernetes.io/name": "kubepam",
    "app.kubernetes.io/managed-by": "kubepam",
    "kubepam.io/purpose": "signing-keys",
}


@dataclass(frozen=True)
class SigningKey:
    record: KeyRecord
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_jwk(self) -> dict[str, Any]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.record.kid, "alg": "EdDSA", "use": "sig"}


def new_key(now: datetime) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).rstrip(b"=").decode()
    return SigningKey(KeyRecord(kid=kid, created=now), private)


def _ts(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def _parse_ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def encode_keys(keys: list[SigningKey]) -> bytes:
    items = [
        {
            "kid": k.record.kid,
            "created": _ts(k.record.created),
            "retired": _ts(k.record.retired),
            "privateKey": k.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
        for k in keys
    ]
    return json.dumps(items, indent=1).encode()


def decode_keys(data: bytes) -> list[SigningKey]:
    out = []
    for item in json.loads(data):
        private = serialization.load_pem_private_key(item["privateKey"].encode(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"signing key {item['kid']} is not Ed25519")
        created = _parse_ts(item["created"])
        assert created is not None
        out.append(SigningKey(KeyRecord(item["kid"], created, _parse_ts(item.get("retired"))), private))
    return out


class SigningKeys:
    """The in-memory view of the keyring plus the operations that change it in the Secret."""

    def __init__(
        self,
        store: Secrets,
        namespace: str,
        name: str,
        *,
        rotation_period: timedelta,
        max_token_ttl: timedelta,
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._name = name
        self._period = rotation_period
        self._max_ttl = max_token_ttl
        self._keys: list[SigningKey] = []
        self._version = ""
        self._jwks: dict[str, Any] = {"keys": []}
        self._active: SigningKey | None = None
        self._by_kid: dict[str, SigningKey] = {}

    # ----- reading ------------------------------------------------------------------------------
    @property
    def active(self) -> SigningKey:
        if self._active is None:
            raise RuntimeError("signing keys not loaded")
        return self._active

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    def verification_key(self, kid: str) -> Ed25519PublicKey | None:
        key = self._by_kid.get(kid)
        return key.public if key is not None else None

    def next_deadline(self) -> datetime | None:
        return keyring.next_deadline([k.record for k in self._keys], self._period, self._max_ttl)

    def sign(self, claims: Mapping[str, Any]) -> str:
        key = self.active
        return jwt.encode(dict(claims), key.private, algorithm="EdDSA", headers={"kid": key.record.kid})

    def _install(self, keys: list[SigningKey], version: str, now: datetime) -> None:
        records = [k.record for k in keys]
        live = {r.kid for r in keyring.published(records, now, self._max_ttl)}
        self._keys = keys
        self._version = version
        active = keyring.active_key(records)
        self._active = next((k for k in keys if active and k.record.kid == active.kid), None)
        self._by_kid = {k.record.kid: k for k in keys if k.record.kid in live}
        self._jwks = {"keys": [k.public_jwk() for k in keys if k.record.kid in live]}

    # ----- changing -----------------------------------------------------------------------------
    async def sync(self, now: datetime) -> bool:
        """Load the Secret, creating it or rotating/pruning as due. Returns True if this call wrote it."""
        return await self._update(now, lambda keys: self._due_changes(keys, now))

    async def rotate(self, now: datetime) -> str:
        """Start signing with a new key now; the old one stays published until its tokens expire."""
        await self._update(now, lambda keys: self._rotated(keys, now))
        return self.active.record.kid

    async def _update(
        self, now: datetime, change: Callable[[list[SigningKey]], list[SigningKey] | None]
    ) -> bool:
        """Read, decide, write with the read resourceVersion. Safe with many replicas: a write that
        loses the race (409) reads again and decides again."""
        for _ in range(5):
            current = await self._store.get(self._namespace, self._name)
            keys = decode_keys(current.data[DATA_KEY]) if current else []
            changed = change(keys)
            if changed is None and current is not None:
                self._install(keys, current.resource_version, now)
                return False
            data = {DATA_KEY: encode_keys(changed or [])}
            try:
                if current is None:
                    written = await self._store.create(self._namespace, self._name, data, labels=LABELS)
                else:
                    written = await self._store.replace(
                        self._namespace, self._name, data, current, None, labels=LABELS
                    )
            except KubeError as exc:
                if exc.conflict:
                    continue
                raise
            self._install(changed or [], written.resource_version, now)
            return True
        raise RuntimeError("could not update the signing keys after 5 write conflicts")

    def _rotated(self, keys: list[SigningKey], now: datetime) -> list[SigningKey]:
        retired = keyring.retire_all([k.record for k in keys], now)
        return [SigningKey(r, k.private) for r, k in zip(retired, keys, strict=True)] + [new_key(now)]

    def _due_changes(self, keys: list[SigningKey], now: datetime) -> list[SigningKey] | None:
        records = [k.record for k in keys]
        keep = {r.kid for r in keyring.published(records, now, self._max_ttl)}
        changed = [k for k in keys if k.record.kid in keep]
        if keyring.rotation_due([k.record for k in changed], now, self._period):
            changed = self._rotated(changed, now)
        return changed if [k.record for k in changed] != records else None
