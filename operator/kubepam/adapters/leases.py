"""Exclusive holds on shared accounts with coordination.k8s.io Leases.

Acquisition is decided by the API server: creating the Lease, or taking a free one with its
resourceVersion, succeeds for exactly one contender however many replicas and requests race; the
losers read the winner. No in-memory lock is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config

HOLDER = "kubepam.io/holder"
CHECKOUT = "kubepam.io/checkout"
EXPIRES = "kubepam.io/expires-at"


@dataclass(frozen=True)
class Hold:
    uid: str  # the Checkout's uid: the Lease's holderIdentity
    checkout: str
    holder: str
    expires_at: datetime | None


def _hold(lease: Any) -> Hold | None:
    if lease is None or not lease.spec or not lease.spec.holder_identity:
        return None
    notes = lease.metadata.annotations or {}
    expires = notes.get(EXPIRES)
    return Hold(
        lease.spec.holder_identity,
        notes.get(CHECKOUT, ""),
        notes.get(HOLDER, ""),
        datetime.fromisoformat(expires) if expires else None,
    )


class Leases:
    def __init__(self) -> None:
        load_config()
        self._api = kubernetes.client.CoordinationV1Api()

    async def _read(self, namespace: str, name: str) -> Any:
        try:
            return await call(self._api.read_namespaced_lease, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def _body(
        self,
        namespace: str,
        name: str,
        hold: Hold | None,
        resource_version: str | None,
        owner: dict[str, Any] | None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubepam"},
            "annotations": {},
        }
        if resource_version:
            meta["resourceVersion"] = resource_version
        if owner:
            meta["ownerReferences"] = [owner]
        spec: dict[str, Any] = {"holderIdentity": None}
        if hold is not None:
            meta["annotations"] = {
                HOLDER: hold.holder,
                CHECKOUT: hold.checkout,
                EXPIRES: hold.expires_at.isoformat() if hold.expires_at else "",
            }
            spec = {  # MicroTime wants all six digits, even when the microseconds happen to be 0
                "holderIdentity": hold.uid,
                "acquireTime": datetime.now(UTC).isoformat(timespec="microseconds"),
                "renewTime": datetime.now(UTC).isoformat(timespec="microseconds"),
            }
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def holder(self, namespace: str, name: str) -> Hold | None:
        return _hold(await self._read(namespace, name))

    async def acquire(
        self, namespace: str, name: str, want: Hold, owner: dict[str, Any] | None = None
    ) -> Hold:
        """Returns who holds the account afterwards: ``want`` if this call (or an earlier one) won."""
        for _ in range(10):
            lease = await self._read(namespace, name)
            try:
                if lease is None:
                    await call(
                        self._api.create_namespaced_lease,
                        namespace,
                        self._body(namespace, name, want, None, owner),
                    )
                    return want
                current = _hold(lease)
                if current is not None:
                    return current  # held: by us (idempotent) or by someone else (we lost)
                await call(
                    self._api.replace_namespaced_lease,
                    name,
                    namespace,
                    self._body(namespace, name, want, lease.metadata.resource_version, owner),
                )
                return want
            except KubeError as exc:
                if exc.conflict:  # somebody else moved first: look again
                    continue
                raise
        raise RuntimeError(f"lease {namespace}/{name}: too much contention")

    async def update_expiry(self, namespace: str, name: str, hold: Hold) -> None:
        lease = await self._read(namespace, name)
        if lease is not None and (current := _hold(lease)) is not None and current.uid == hold.uid:
            await call(
                self._api.replace_namespaced_lease,
                name,
                namespace,
                self._body(namespace, name, hold, lease.metadata.resource_version, None),
            )

    async def release(self, namespace: str, name: str, uid: str) -> None:
        """Free the account if ``uid`` holds it (idempotent)."""
        for _ in range(10):
            lease = await self._read(namespace, name)
            current = _hold(lease)
            if current is None or current.uid != uid:
                return
            try:
                await call(
                    self._api.replace_namespaced_lease,
                    name,
                    namespace,
                    self._body(namespace, name, None, lease.metadata.resource_version, None),
                )
                return
            except KubeError as exc:
                if not exc.conflict:
                    raise
        raise RuntimeError(f"lease {namespace}/{name}: could not release")
