"""The broker's view of connections and roles, read from kopf indexes (no API calls per request).

Index functions parse each object once per spec generation; a Draft/Active change (a status patch)
only swaps the phase. `synced` turns true once kopf has finished its initial listing (kopf runs no
handler before every index is populated) or after a grace period when there is nothing to list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import kopf

from kubepam.adapters.jwks import JwksFetchError, KeySet
from kubepam.domain.checkout import CheckoutPolicySpec
from kubepam.domain.connection import parse_connection, phase_of
from kubepam.domain.errors import SpecError
from kubepam.domain.policy import Policy, ServerView
from kubepam.domain.project import ProjectSpec
from kubepam.domain.roles import Role, parse_role
from kubepam.domain.server_access import IssuedLogin
from kubepam.services.agents import ServerRecord
from kubepam.services.workload_identity import ConnectionEntry

_parsed: dict[tuple[str, str], tuple[int, ConnectionEntry]] = {}


def connection_entry(
    namespace: str, name: str, generation: int, spec: Mapping[str, Any], status: Mapping[str, Any] | None
) -> ConnectionEntry:
    """Parse (cached per generation) and attach the current phase."""
    phase = phase_of(status)
    cached = _parsed.get((namespace, name))
    if cached is not None and cached[0] == generation:
        entry = cached[1]
        if entry.phase is phase:
            return entry
        entry = ConnectionEntry(namespace, name, phase, entry.connection, entry.problems, entry.inline_keys)
    else:
        try:
            conn = parse_connection(spec)
            inline = KeySet.from_jwks(conn.inline_jwks) if conn.inline_jwks is not None else None
            entry = ConnectionEntry(namespace, name, phase, conn, (), inline)
        except SpecError as exc:
            entry = ConnectionEntry(namespace, name, phase, None, tuple(exc.problems))
        except JwksFetchError as exc:
            entry = ConnectionEntry(namespace, name, phase, None, (f"spec.jwks: {exc}",))
    _parsed[(namespace, name)] = (generation, entry)
    return entry


def forget_connection(namespace: str, name: str) -> None:
    _parsed.pop((namespace, name), None)


def role_entry(namespace: str, name: str, spec: Mapping[str, Any]) -> Role | None:
    try:
        return parse_role(namespace, name, spec)
    except SpecError:
        return None


def _first(index: Mapping[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store)) if store else None


class KopfDirectory:
    """Everything the broker and the certificate issuer read, from kopf indexes (by their handler names)."""

    def __init__(
        self,
        indexes: Mapping[str, Any],
        clock: Callable[[], datetime],
        started: datetime,
        grace: timedelta,
    ) -> None:
        self._connections: kopf.Index[Any, Any] = indexes["connections_index"]
        self._roles: kopf.Index[Any, Any] = indexes["roles_index"]
        self._policies: kopf.Index[Any, Any] = indexes["policies_index"]
        self._servers: kopf.Index[Any, Any] = indexes["servers_index"]
        self._projects: kopf.Index[Any, Any] = indexes["projects_index"]
        self._checkout_policies: kopf.Index[Any, Any] = indexes["checkout_policies_index"]
        self._server_agents: Mapping[Any, Any] = indexes.get("server_agents_index", {})
        self._issued_logins: Mapping[Any, Any] = indexes.get("issued_logins_index", {})
        self._clock = clock
        self._started = started
        self._grace = grace
        self._synced = False

    def mark_synced(self) -> None:
        self._synced = True

    def synced(self) -> bool:
        if not self._synced and self._clock() - self._started >= self._grace:
            self._synced = True
        return self._synced

    def connection(self, namespace: str, name: str) -> ConnectionEntry | None:
        entry: ConnectionEntry | None = _first(self._connections, (namespace, name))
        return entry

    def policies(self, namespace: str) -> Sequence[Policy]:
        store = self._policies.get(namespace)
        return list(store) if store else []

    def server(self, namespace: str, name: str) -> ServerView | None:
        server: ServerView | None = _first(self._servers, (namespace, name))
        return server

    def server_record(self, namespace: str, name: str) -> ServerRecord | None:
        record: ServerRecord | None = _first(self._server_agents, (namespace, name))
        return record

    def issued_logins(self, namespace: str, server: str) -> Sequence[IssuedLogin]:
        store = self._issued_logins.get((namespace, server))
        return list(store) if store else []

    def project_uid(self, namespace: str, name: str) -> str | None:
        project = self.project(namespace, name)
        return project.uid if project is not None else None

    def checkout_policy(self, namespace: str, project: str) -> CheckoutPolicySpec | None:
        store = self._checkout_policies.get((namespace, project))
        if not store:
            return None
        first: tuple[str, CheckoutPolicySpec] = min(store, key=lambda item: item[0])
        return first[1]  # (policy name, spec): the first by name decides

    def project(self, namespace: str, name: str) -> ProjectSpec | None:
        project: ProjectSpec | None = _first(self._projects, (namespace, name))
        return project

    def all_connections(self) -> list[ConnectionEntry]:
        return [entry for store in self._connections.values() for entry in store]

    def roles(self, namespace: str) -> Sequence[Role]:
        store = self._roles.get(namespace)
        return list(store) if store else []
