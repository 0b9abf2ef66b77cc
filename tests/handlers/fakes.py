"""Fakes for fast handler and service tests: an in-memory directory, Secret store and JWKS source."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubepam.adapters.jwks import JwksCache, KeySet
from kubepam.adapters.kube import KubeError, SecretData, ensure_owned
from kubepam.domain.connection import Phase, parse_connection
from kubepam.domain.ownership import owner_labels
from kubepam.domain.roles import Role, parse_role
from kubepam.services.workload_identity import ConnectionEntry


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class FakeDirectory:
    entries: dict[tuple[str, str], ConnectionEntry] = field(default_factory=dict)
    role_list: list[Role] = field(default_factory=list)
    is_synced: bool = True

    def add_connection(
        self, namespace: str, name: str, spec: Mapping[str, Any], phase: Phase = Phase.ACTIVE
    ) -> None:
        conn = parse_connection(spec)
        inline = KeySet.from_jwks(conn.inline_jwks) if conn.inline_jwks is not None else None
        self.entries[(namespace, name)] = ConnectionEntry(namespace, name, phase, conn, (), inline)

    def add_role(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self.role_list.append(parse_role(namespace, name, spec))

    def connection(self, namespace: str, name: str) -> ConnectionEntry | None:
        return self.entries.get((namespace, name))

    def roles(self, namespace: str) -> Sequence[Role]:
        return [r for r in self.role_list if r.namespace == namespace]

    def synced(self) -> bool:
        return self.is_synced


class FakeFetcher:
    """Serves a JWKS document from memory; can be 'down'; counts fetches."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document = document or {"keys": []}
        self.down = False
        self.calls = 0

    async def __call__(self, url: str) -> Any:
        from kubepam.adapters.jwks import JwksFetchError

        self.calls += 1
        if self.down:
            raise JwksFetchError(f"GET {url}: connection refused")
        return self.document


def jwks_cache(fetcher: FakeFetcher, clock: Clock, **kw: Any) -> JwksCache:
    options = {
        "refresh": timedelta(minutes=15),
        "min_refetch": timedelta(seconds=10),
        "max_stale": timedelta(hours=24),
        **kw,
    }
    return JwksCache(fetcher, clock, **options)


class FakeSecrets:
    """An in-memory Secret store with resourceVersions, able to inject one conflict."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], SecretData] = {}
        self.version = 0
        self.conflict_next_write = False
        self.writes = 0

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    async def get(self, namespace: str, name: str) -> SecretData | None:
        return self.items.get((namespace, name))

    def _stored(self, data: Mapping[str, bytes], labels: Mapping[str, str] | None, owner: Any) -> SecretData:
        meta = dict(labels or {})
        owners: tuple[str, ...] = ()
        if owner:
            meta.update(owner_labels(owner["kind"], owner["name"], owner["uid"]))
            owners = (owner["uid"],)
        return SecretData(dict(data), self._bump(), meta, {}, owners)

    async def create(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None = None,
        owner: Any = None,
    ) -> SecretData:
        if (namespace, name) in self.items:
            raise KubeError(409, "AlreadyExists", name)
        self.writes += 1
        self.items[(namespace, name)] = self._stored(data, labels, owner)
        return self.items[(namespace, name)]

    async def replace(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        current_read: SecretData,
        owner: Any,
        labels: Mapping[str, str] | None = None,
    ) -> SecretData:
        ensure_owned(current_read, "Secret", namespace, name, owner)
        current = self.items.get((namespace, name))
        if self.conflict_next_write and current is not None:
            self.conflict_next_write = False
            self.items[(namespace, name)] = replace(current, resource_version=self._bump())
            raise KubeError(409, "Conflict", "object was modified")
        if current is None or current.resource_version != current_read.resource_version:
            raise KubeError(409, "Conflict", "object was modified")
        self.writes += 1
        self.items[(namespace, name)] = self._stored(data, labels, owner)
        return self.items[(namespace, name)]

    async def delete(self, namespace: str, name: str, owner: Any) -> bool:
        ensure_owned(self.items.get((namespace, name)), "Secret", namespace, name, owner)
        return self.items.pop((namespace, name), None) is not None


def record_outcomes() -> tuple[list[tuple[str, str]], Any]:
    seen: list[tuple[str, str]] = []

    def record(endpoint: str, outcome: str) -> None:
        seen.append((endpoint, outcome))

    return seen, record


class FakeLeases:
    """Leases with the API server's semantics: the first writer holds, others read the holder; the
    waiting line changes by the same pure rules as the real adapter (domain/queue.py), one write at a time."""

    def __init__(self) -> None:
        from kubepam.adapters.leases import Hold, Waiting

        self.held: dict[tuple[str, str], Hold] = {}
        self.lines: dict[tuple[str, str], tuple[Waiting, ...]] = {}
        self.writes = 0

    def _get(self, namespace: str, name: str) -> Any:
        from kubepam.domain.queue import LeaseState

        return LeaseState(self.held.get((namespace, name)), self.lines.get((namespace, name), ()))

    def _change(self, namespace: str, name: str, change: Any) -> Any:
        before = self._get(namespace, name)
        after = change(before)
        if after != before:
            self.writes += 1
            key = (namespace, name)
            if after.hold is None:
                self.held.pop(key, None)
            else:
                self.held[key] = after.hold
            if after.line:
                self.lines[key] = after.line
            else:
                self.lines.pop(key, None)
        return after

    def line(self, namespace: str, name: str) -> list[str]:
        """The checkouts waiting, in order (for assertions)."""
        return [w.checkout for w in self.lines.get((namespace, name), ())]

    async def state(self, namespace: str, name: str) -> Any:
        return self._get(namespace, name)

    async def take(self, namespace: str, name: str, want: Any, waiting: Any, owner: Any = None) -> Any:
        from kubepam.domain import queue

        return self._change(namespace, name, lambda s: queue.take(s, want, waiting))

    async def acquire(self, namespace: str, name: str, want: Any, owner: Any = None) -> Any:
        return (await self.take(namespace, name, want, None)).hold

    async def leave(self, namespace: str, name: str, uid: str) -> Any:
        from kubepam.domain import queue

        return self._change(namespace, name, lambda s: queue.leave(s, uid))

    async def handover(self, namespace: str, name: str, uid: str | None, offer_until: Any) -> Any:
        from kubepam.domain import queue

        return self._change(namespace, name, lambda s: queue.handover(s, uid, offer_until))

    async def holder(self, namespace: str, name: str) -> Any:
        return self.held.get((namespace, name))

    async def update_expiry(self, namespace: str, name: str, hold: Any) -> None:
        if (current := self.held.get((namespace, name))) is not None and current.uid == hold.uid:
            self.held[(namespace, name)] = hold

    async def release(self, namespace: str, name: str, uid: str) -> None:
        if (current := self.held.get((namespace, name))) is not None and current.uid == uid:
            del self.held[(namespace, name)]


class FakeObjects:
    """Kubepam objects in memory with merge-patched status."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        self.items[(plural, meta["namespace"], meta["name"])] = obj

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        import copy

        found = self.items.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def pages(self, plural: str) -> AsyncIterator[list[dict[str, Any]]]:
        yield [obj for (kind, _, _), obj in sorted(self.items.items()) if kind == plural]

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        obj = self.items[(plural, namespace, name)]
        merged = dict(obj.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        obj["status"] = merged


class FakeRbac:
    def __init__(self) -> None:
        self.readers: dict[tuple[str, str], str] = {}
        self.bindings: dict[tuple[str, str], tuple[str, ...]] = {}

    async def grant_secret_read(self, namespace: str, name: str, secret: str, user: str, owner: Any) -> None:
        self.readers[(namespace, secret)] = user

    async def revoke_secret_read(self, namespace: str, name: str, owner: Any) -> None:
        self.readers.pop((namespace, name), None)

    async def bind_cluster_roles(
        self, namespace: str, name: str, cluster_roles: Any, subject: Any, owner: Any, *, owner_namespace: str
    ) -> None:
        self.bindings[(namespace, name)] = tuple(cluster_roles)

    async def unbind(self, namespace: str, name: str, cluster_roles: Any, owner: Any) -> None:
        self.bindings.pop((namespace, name), None)


class FakeEvents:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.warnings: list[str] = []  # reasons of Warning events
        self.audits: list[tuple[str, Any]] = []  # (reason, audit fields)

    async def emit(
        self, obj: Mapping[str, Any], reason: str, message: str, *, warning: bool = False, audit: Any = None
    ) -> None:
        self.seen.append((obj["metadata"]["name"], reason, message))
        if warning:
            self.warnings.append(reason)
        if audit is not None:
            self.audits.append((reason, audit))
