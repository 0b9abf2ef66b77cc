"""Shared accounts' credentials: one Secret per account in the project's namespace (owned by the
Project), and password rotation that records its intent before acting.

Rotation order (as Vault's LDAP library does it): a new password is written to the Secret as
``pending-password`` first, then set in the backend, then promoted to ``password``. A crash or a
backend outage at any point leaves the pending password in place, and the retry sets that same
password again: a rotation completes once, and the Secret never holds a password the backend lacks.
"""

from __future__ import annotations

import secrets as random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubepam.adapters import postgres
from kubepam.adapters.kube import KubeError, SecretData, owner_reference
from kubepam.domain.checkout import object_name
from kubepam.domain.conditions import rfc3339
from kubepam.domain.kinds import API_VERSION
from kubepam.services.projects import DataStore, write


@dataclass(frozen=True)
class Account:
    namespace: str
    project: str
    name: str
    backend: str  # kubernetes | postgresql
    password_length: int
    postgresql: Mapping[str, Any] | None

    @property
    def secret_name(self) -> str:
        return object_name(self.project, "account", self.name)

    @property
    def lease_name(self) -> str:
        return object_name("kubepam-checkout", self.project, self.name)


def find_account(namespace: str, project: str, accounts: Any, name: str) -> Account | None:
    for raw in accounts or ():
        if raw.get("name") == name:
            return Account(
                namespace,
                project,
                name,
                str(raw.get("backend", "kubernetes")),
                int(raw.get("passwordLength", 32)),
                raw.get("postgresql"),
            )
    return None


def new_password(length: int) -> str:
    return random.token_urlsafe(length)[:length]


class Accounts:
    def __init__(self, secrets: DataStore, clock: Callable[[], datetime]) -> None:
        self._secrets = secrets
        self._clock = clock

    async def server(self, namespace: str, settings: Mapping[str, Any]) -> postgres.Server:
        ref = (settings.get("adminSecretRef") or {}).get("name", "")
        admin = await self._secrets.get(namespace, ref)
        if admin is None or "username" not in admin.data or "password" not in admin.data:
            raise postgres.BackendError(f"admin Secret {namespace}/{ref} needs username and password keys")
        return postgres.Server(
            str(settings["host"]),
            int(settings.get("port", 5432)),
            str(settings.get("database", "postgres")),
            admin.data["username"].decode(),
            admin.data["password"].decode(),
        )

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

    async def credential(self, account: Account, project_uid: str) -> dict[str, bytes]:
        """The account's current credential, creating (and setting) the first password if needed."""
        stored = await self._secrets.get(account.namespace, account.secret_name)
        if stored is None or "password" not in stored.data or "pending-password" in stored.data:
            await self.rotate(account, project_uid)
            stored = await self._secrets.get(account.namespace, account.secret_name)
        assert stored is not None
        return {k: v for k, v in stored.data.items() if k != "pending-password"}

    async def current_password(self, account: Account) -> str | None:
        stored = await self._secrets.get(account.namespace, account.secret_name)
        return stored.data["password"].decode() if stored and "password" in stored.data else None

    async def rotate(self, account: Account, project_uid: str) -> None:
        """New password: intent in the Secret, then the backend, then the Secret. Raises on failure,
        leaving the intent for the retry."""
        owner = owner_reference(API_VERSION, "Project", account.project, project_uid)
        for _ in range(5):
            stored = await self._secrets.get(account.namespace, account.secret_name)
            data: dict[str, bytes] = dict(stored.data) if stored else self._base(account)
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
        return await self._secrets.get(account.namespace, account.secret_name)
