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
from kubepam.domain.connection import parse_connection, phase_of
from kubepam.domain.errors import SpecError
from kubepam.domain.roles import Role, parse_role
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


class KopfDirectory:
    def __init__(
        self,
        connections: kopf.Index[Any, Any],
        roles: kopf.Index[Any, Any],
        clock: Callable[[], datetime],
        started: datetime,
        grace: timedelta,
    ) -> None:
        self._connections = connections
        self._roles = roles
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
        store = self._connections.get((namespace, name))
        if not store:
            return None
        entry: ConnectionEntry = next(iter(store))
        return entry

    def all_connections(self) -> list[ConnectionEntry]:
        return [entry for store in self._connections.values() for entry in store]

    def roles(self, namespace: str) -> Sequence[Role]:
        store = self._roles.get(namespace)
        return list(store) if store else []
