"""Shared accounts' credentials: one Secret per account in the project's namespace (owned by the
Project, named from its uid so no other object's name reaches it), and password rotation that records
its intent before acting.

Rotation order (as Vault's LDAP library does it): a new password is written to the Secret as
``pending-password`` first, then set in the backend, then promoted to ``password``. A crash or a
backend outage at any point leaves the pending password in place, and the retry sets that same
password again: a rotation completes once, and the Secret never holds a password the backend lacks.
"""

from __future__ import annotations

import asyncio
import secrets as random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubepam.adapters import metrics, postgres
from kubepam.adapters.kube import KubeError, SecretData, ensure_owned, owner_reference
from kubepam.domain.backends import pinning_problem
from kubepam.domain.checkout import object_name
from kubepam.domain.conditions import rfc3339
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.ownership import derived_name, qualified
from kubepam.services.projects import DataStore, write


@dataclass(frozen=True)
class Account:
    namespace: str
    project: str
    name: str
    backend: str  # kubernetes | postgresql
    password_length: int
    postgresql: Mapping[str, Any] | None
    project_uid: str

    @property
    def secret_name(self) -> str:
        return qualified(derived_name("account", self.project, self.project_uid), self.name)

    @property
    def owner(self) -> dict[str, Any]:
        return owner_reference(API_VERSION, "Project", self.project, self.project_uid)

    @property
    def lease_name(self) -> str:
        return object_name("kubepam-checkout", self.project, self.name)


def find_account(namespace: str, project: str, project_uid: str, accounts: Any, name: str) -> Account | None:
    for raw in accounts or ():
        if raw.get("name") == name:
            return Account(
                namespace,
                project,
                name,
                str(raw.get("backend", "kubernetes")),
                int(raw.get("passwordLength", 32)),
                raw.get("postgresql"),
                project_uid,
            )
    return None


def new_password(length: int) -> str:
    return random.token_urlsafe(length)[:length]


class Accounts:
    def __init__(
        self, secrets: DataStore, clock: Callable[[], datetime], configmaps: DataStore | None = None
    ) -> None:
        self._secrets = secrets
        self._clock = clock
        self._configmaps = configmaps

    async def server(self, namespace: str, settings: Mapping[str, Any]) -> postgres.Server:
        """How to reach a PostgreSQL backend. The admin Secret must be pinned to the host:port asked for
        (annotation kubepam.io/allowed-hosts, set by a security admin) and the server verified against
        the referenced CA; otherwise BackendError, before any connection is attempted."""
        ref = (settings.get("adminSecretRef") or {}).get("name", "")
        host, port = str(settings.get("host", "")), int(settings.get("port", 5432))
        admin = await self._secrets.get(namespace, ref)
        if admin is None or "username" not in admin.data or "password" not in admin.data:
            raise postgres.BackendError(f"admin Secret {namespace}/{ref} needs username and password keys")
        problem = pinning_problem(f"{namespace}/{ref}", admin.annotations, host, port)
        if problem:
            raise postgres.BackendError(problem)
        return postgres.Server(
            host,
            port,
            str(settings.get("database", "postgres")),
            admin.data["username"].decode(),
            admin.data["password"].decode(),
            await self._ca_file(namespace, settings),
        )

    async def _ca_file(self, namespace: str, settings: Mapping[str, Any]) -> str:
        ref = settings.get("caConfigMapRef") or {}
        name, key = str(ref.get("name", "")), str(ref.get("key") or "ca.crt")
        if not name:
            raise postgres.BackendError(
                "postgresql.caConfigMapRef is required: the CA that signed the server's certificate"
            )
        found = await self._configmaps.get(namespace, name) if self._configmaps is not None else None
        if found is None or key not in found.data:
            raise postgres.BackendError(
                f"CA ConfigMap {namespace}/{name} (postgresql.caConfigMapRef) is missing or has no key {key}"
            )
        try:
            return await asyncio.to_thread(postgres.ca_file, found.data[key])
        except postgres.BackendError as exc:
            raise postgres.BackendError(f"CA ConfigMap {namespace}/{name} key {key}: {exc}") from None

    async def _set_in_backend(self, account: Account, password: str) -> None:
        if account.backend == "postgresql":
            assert account.postgresql is not None
            await postgres.set_password(
                await self.server(account.namespace, account.postgresql), account.name, password
            )

    def _base(self, account: Account) -> dict[str, bytes]:
        data = {"username": account.name.encode(), "backend": account.backend.encode()}
        if account.postgresql:
            data.update(
                host=str(account.postgresql.get("host", "")).encode(),
                port=str(account.postgresql.get("port", 5432)).encode(),
                database=str(account.postgresql.get("database", "postgres")).encode(),
            )
        return data

    async def _read(self, account: Account) -> SecretData | None:
        stored = await self._secrets.get(account.namespace, account.secret_name)
        ensure_owned(stored, "Secret", account.namespace, account.secret_name, account.owner)
        return stored

    async def credential(self, account: Account) -> dict[str, bytes]:
        """The account's current credential, creating (and setting) the first password if needed."""
        stored = await self._read(account)
        if stored is None or "password" not in stored.data or "pending-password" in stored.data:
            await self.rotate(account)
            stored = await self._read(account)
        assert stored is not None
        return {k: v for k, v in stored.data.items() if k != "pending-password"}

    async def current_password(self, account: Account) -> str | None:
        stored = await self._read(account)
        return stored.data["password"].decode() if stored and "password" in stored.data else None

    async def rotate(self, account: Account) -> None:
        """New password: intent in the Secret, then the backend, then the Secret. Raises on failure,
        leaving the intent for the retry."""
        first: list[bool] = []  # whether the first read found an earlier attempt's pending password
        try:
            await self._rotate(account, first)
        except Exception:
            metrics.record_rotation(account.backend, ok=False, resumed=bool(first and first[0]))
            raise
        metrics.record_rotation(account.backend, ok=True, resumed=bool(first and first[0]))

    async def _rotate(self, account: Account, first: list[bool]) -> None:
        owner = account.owner
        for _ in range(5):
            stored = await self._read(account)
            data: dict[str, bytes] = dict(stored.data) if stored else self._base(account)
            if not first:
                first.append("pending-password" in data)
            try:
                if "pending-password" not in data:
                    data["pending-password"] = new_password(account.password_length).encode()
                    stored = await write(
                        self._secrets, account.namespace, account.secret_name, data, stored, owner
                    )
                pending = data["pending-password"].decode()
                await self._set_in_backend(account, pending)
                done = {k: v for k, v in data.items() if k != "pending-password"}
                done["password"] = pending.encode()
                done["rotated-at"] = rfc3339(self._clock()).encode()
                done["rotations"] = str(int(data.get("rotations", b"0")) + 1).encode()
                await write(self._secrets, account.namespace, account.secret_name, done, stored, owner)
                return
            except KubeError as exc:
                if exc.conflict:
                    continue
                raise
        raise RuntimeError(f"could not rotate {account.namespace}/{account.secret_name}: write conflicts")

    async def stored(self, account: Account) -> SecretData | None:
        return await self._read(account)
