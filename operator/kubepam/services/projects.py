"""A project's certificate authorities and enrollment token, kept in Secrets of the project's namespace
(owned by the Project, so they go when it goes) and published in a ConfigMap.

The Secrets are named from the Project's uid (domain/ownership.py), so no Checkout, JitAccount or other
Project can ever name them; the ConfigMaps keep readable names (`<project>-ca`, `<project>-jit`, for
sshd set-up and the JIT admission policy) and, like every derived object, are replaced or deleted only
when they carry kubepam's label and an ownerReference to this Project.

The CA ring is created once and adopted after any restart (never regenerated); a rotation adds a new
generation and keeps the previous one trusted for the overlap; the ring in memory is what signs.
Writes are conditional on the Secret's resourceVersion, so replicas cannot fork the ring.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubepam.adapters.ca import CAKeys, decode_ring, encode_ring, new_ca, with_retirement
from kubepam.adapters.kube import DataObjects, KubeError, SecretData, ensure_owned, owner_reference
from kubepam.domain.conditions import rfc3339
from kubepam.domain.jit import SETTINGS_LABEL, admission_params, settings_configmap_name
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.ownership import derived_name
from kubepam.domain.project import ProjectSpec, plan_ca

RING_KEY = "ca.json"


DataStore = DataObjects  # Secrets or ConfigMaps


def ca_secret_name(project: str, uid: str) -> str:
    return derived_name("ca-keys", project, uid)


def ca_configmap_name(project: str) -> str:
    return f"{project}-ca"


def enrollment_secret_name(project: str, uid: str) -> str:
    return derived_name("enrollment", project, uid)


@dataclass(frozen=True)
class CAOutcome:
    status: dict[str, Any]
    next_change: datetime | None


async def write(
    store: DataStore,
    namespace: str,
    name: str,
    data: Mapping[str, bytes],
    current: SecretData | None,
    owner: Mapping[str, Any],
) -> SecretData:
    if current is None:
        return await store.create(namespace, name, data, owner=owner)
    return await store.replace(namespace, name, data, current, owner)


async def put(
    store: DataStore, namespace: str, name: str, data: Mapping[str, bytes], owner: Mapping[str, Any]
) -> SecretData:
    """Create the object, or replace it if it is already there and ours: one API call in the usual case
    (a new object), where reading first would take two."""
    try:
        return await store.create(namespace, name, data, owner=owner)
    except KubeError as exc:
        if not exc.conflict:
            raise
    current = await store.get(namespace, name)
    if current is None:  # deleted in between: the retry creates it
        raise KubeError(409, "Conflict", f"{namespace}/{name} went away while being replaced")
    return await store.replace(namespace, name, data, current, owner)


class CAStore:
    def __init__(
        self, secrets_store: DataStore, configmaps: DataStore, clock: Callable[[], datetime]
    ) -> None:
        self._secrets = secrets_store
        self._configmaps = configmaps
        self._clock = clock
        self._rings: dict[tuple[str, str], list[CAKeys]] = {}
        self._uids: dict[tuple[str, str], str] = {}

    def current(self, namespace: str, name: str) -> CAKeys | None:
        ring = self._rings.get((namespace, name))
        return max(ring, key=lambda c: c.generation) if ring else None

    def trusted(self, namespace: str, name: str) -> list[CAKeys]:
        return list(self._rings.get((namespace, name), []))

    def forget(self, namespace: str, name: str) -> None:
        self._rings.pop((namespace, name), None)
        self._uids.pop((namespace, name), None)

    def loaded_generation(self, namespace: str, name: str) -> int | None:
        current = self.current(namespace, name)
        return current.generation if current else None

    async def load(self, namespace: str, name: str, uid: str) -> None:
        """Read the ring the leader keeps (every replica signs with it); never writes."""
        secret = ca_secret_name(name, uid)
        stored = await self._secrets.get(namespace, secret)
        ensure_owned(stored, "Secret", namespace, secret, owner_reference(API_VERSION, "Project", name, uid))
        if stored is not None and RING_KEY in stored.data:
            self._rings[(namespace, name)] = decode_ring(stored.data[RING_KEY])
            self._uids[(namespace, name)] = uid

    def trusted_user_ca_keys(self, namespace: str, name: str) -> str:
        return "".join(
            ca.ssh_public_line(f"kubepam:{namespace}/{name}:g{ca.generation}") + "\n"
            for ca in self.trusted(namespace, name)
        )

    def ca_bundle(self, namespace: str, name: str) -> str:
        return "".join(ca.x509_pem for ca in self.trusted(namespace, name))

    async def reconcile(self, namespace: str, name: str, uid: str, spec: ProjectSpec) -> CAOutcome:
        now = self._clock()
        owner = owner_reference(API_VERSION, "Project", name, uid)
        secret = ca_secret_name(name, uid)
        for _ in range(5):
            stored = await self._secrets.get(namespace, secret)
            ensure_owned(
                stored, "Secret", namespace, secret, owner
            )  # never sign with keys someone else put there
            ring = decode_ring(stored.data[RING_KEY]) if stored and RING_KEY in stored.data else []
            plan = plan_ca([ca.meta for ca in ring], spec, now)
            if plan.changes:
                by_gen = {ca.generation: ca for ca in ring}
                new_ring = []
                for meta in plan.keep:
                    if meta.generation == plan.create:
                        common = f"kubepam {namespace}/{name} CA g{meta.generation}"
                        new_ring.append(new_ca(meta.generation, meta.key_type, common, now))
                    else:
                        new_ring.append(with_retirement(by_gen[meta.generation], meta.retire_at))
                try:
                    await write(
                        self._secrets, namespace, secret, {RING_KEY: encode_ring(new_ring)}, stored, owner
                    )
                except KubeError as exc:
                    if exc.conflict:  # another replica wrote first: read again, decide again
                        continue
                    raise
                ring = new_ring
            self._rings[(namespace, name)] = ring
            self._uids[(namespace, name)] = uid
            await self._publish(namespace, name, owner)
            return CAOutcome(self._status(namespace, name), plan.next_change)
        raise RuntimeError(f"could not update {namespace}/{secret} after 5 write conflicts")

    async def _publish(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        data = {
            "trusted-user-ca-keys": self.trusted_user_ca_keys(namespace, name).encode(),
            "ca.crt": self.ca_bundle(namespace, name).encode(),
            "sshd_config": (
                f"# kubepam project {namespace}/{name}: trust certificates signed by its SSH CA\n"
                f"TrustedUserCAKeys /etc/ssh/kubepam-{namespace}-{name}.pub\n"
            ).encode(),
        }
        cm = ca_configmap_name(name)
        for _ in range(5):
            current = await self._configmaps.get(namespace, cm)
            if current is not None and current.data == data and current.owned_by(str(owner["uid"])):
                return
            try:
                await write(self._configmaps, namespace, cm, data, current, owner)
                return
            except KubeError as exc:
                if not exc.conflict:
                    raise

    def _status(self, namespace: str, name: str) -> dict[str, Any]:
        current = self.current(namespace, name)
        assert current is not None
        older = [ca for ca in self.trusted(namespace, name) if ca.generation != current.generation]
        previous = None
        if older:
            prev = max(older, key=lambda c: c.generation)
            previous = {
                "sshFingerprint": prev.ssh_fingerprint,
                "x509Fingerprint": prev.x509_fingerprint,
                "removeAfter": rfc3339(prev.retire_at) if prev.retire_at else None,
            }
        return {
            "secretName": ca_secret_name(name, self._uids.get((namespace, name), "")),
            "configMapName": ca_configmap_name(name),
            "generation": current.generation,
            "ssh": {
                "publicKey": current.ssh_public_line(f"kubepam:{namespace}/{name}:g{current.generation}"),
                "fingerprint": current.ssh_fingerprint,
                "keyType": current.key_type,
            },
            "x509": {
                "fingerprint": current.x509_fingerprint,
                "notAfter": rfc3339(current.x509_cert.not_valid_after_utc),
            },
            "previous": previous,
        }


class EnrollmentTokens:
    """One random enrollment token per project in a Secret; a higher tokenGeneration replaces it."""

    def __init__(self, secrets_store: DataStore) -> None:
        self._secrets = secrets_store

    async def reconcile(self, namespace: str, name: str, uid: str, spec: ProjectSpec) -> dict[str, Any]:
        secret = enrollment_secret_name(name, uid)
        owner = owner_reference(API_VERSION, "Project", name, uid)
        if not spec.enrollment_enabled:
            await self._secrets.delete(namespace, secret, owner)
            return {"secretName": "", "tokenGeneration": spec.enrollment_generation}
        for _ in range(5):
            stored = await self._secrets.get(namespace, secret)
            ensure_owned(stored, "Secret", namespace, secret, owner)
            have = int(stored.data.get("generation", b"-1")) if stored else -1
            if stored is not None and have >= spec.enrollment_generation:
                return {"secretName": secret, "tokenGeneration": have}
            data = {
                "token": secrets.token_urlsafe(32).encode(),
                "generation": str(spec.enrollment_generation).encode(),
            }
            try:
                await write(self._secrets, namespace, secret, data, stored, owner)
            except KubeError as exc:
                if exc.conflict:
                    continue
                raise
            return {"secretName": secret, "tokenGeneration": spec.enrollment_generation}
        raise RuntimeError(f"could not write {namespace}/{secret}")

    async def valid(self, namespace: str, name: str, uid: str, token: str) -> bool:
        stored = await self._secrets.get(namespace, enrollment_secret_name(name, uid))
        if stored is None or "token" not in stored.data or not stored.owned_by(uid):
            return False
        return hmac.compare_digest(stored.data["token"], token.encode())


async def publish_jit_settings(
    configmaps: DataStore, namespace: str, name: str, uid: str, jit: Mapping[str, Any]
) -> None:
    """The project's JIT settings as a ConfigMap: the admission policy on JitAccounts reads it as its
    parameter, so the API server itself refuses groups, durations and creators the project does not allow."""
    data = {key: value.encode() for key, value in admission_params(name, jit).items()}
    owner = owner_reference(API_VERSION, "Project", name, uid)
    labels = {SETTINGS_LABEL: "true"}
    for _ in range(5):
        current = await configmaps.get(namespace, settings_configmap_name(name))
        if current is not None and current.data == data and current.owned_by(uid):
            return
        try:
            if current is None:
                await configmaps.create(
                    namespace, settings_configmap_name(name), data, labels=labels, owner=owner
                )
            else:
                await configmaps.replace(
                    namespace, settings_configmap_name(name), data, current, owner, labels=labels
                )
            return
        except KubeError as exc:
            if not exc.conflict:
                raise
