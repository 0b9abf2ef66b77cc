"""The leader-election Lease (coordination.k8s.io/v1) in the operator's namespace: read it, create it,
and replace it conditionally on the resourceVersion read, so that of two replicas racing exactly one
write succeeds (the API server decides, as for checkout holds)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call_in, load_config
from kubepam.domain.leadership import Record


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderLease:
    def __init__(self, namespace: str, name: str) -> None:
        load_config()
        # its own connection and thread: a renewal never waits behind the reconcilers' API calls
        self._api = kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient())
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubepam-lease")
        self.namespace = namespace
        self.name = name
        self._raw: Any = None

    async def read(self) -> Record | None:
        try:
            self._raw = await call_in(self._pool, self._api.read_namespaced_lease, self.name, self.namespace)
        except KubeError as exc:
            if exc.not_found:
                self._raw = None
                return None
            raise
        spec = self._raw.spec
        return Record(
            str(spec.holder_identity or "") if spec else "",
            str(self._raw.metadata.resource_version),
            int(spec.lease_transitions or 0) if spec else 0,
        )

    async def write(self, me: str, seen: Record | None, duration: float) -> bool:
        """Take or renew the Lease for ``me`` over what was read as ``seen``; False if someone else wrote
        first (or created it first)."""
        now = _now()
        renewing = seen is not None and seen.holder == me
        spec: dict[str, Any] = {
            "holderIdentity": me,
            "leaseDurationSeconds": max(1, round(duration)),
            "renewTime": now.isoformat(timespec="microseconds"),
            "leaseTransitions": (seen.transitions if seen else 0) + (0 if renewing or seen is None else 1),
        }
        prior = self._raw.spec if self._raw is not None else None
        spec["acquireTime"] = (
            prior.acquire_time.isoformat(timespec="microseconds")
            if renewing and prior is not None and prior.acquire_time
            else now.isoformat(timespec="microseconds")
        )
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/name": "kubepam", "app.kubernetes.io/managed-by": "kubepam"},
        }
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
        try:
            if seen is None:
                await call_in(self._pool, self._api.create_namespaced_lease, self.namespace, body)
            else:
                meta["resourceVersion"] = seen.version
                await call_in(self._pool, self._api.replace_namespaced_lease, self.name, self.namespace, body)
        except KubeError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def release(self, me: str, seen: Record) -> None:
        """Step down on a clean exit: clear the holder so another replica takes over at once."""
        if seen.holder != me:
            return
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": seen.version},
            "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "leaseTransitions": seen.transitions},
        }
        try:
            await call_in(self._pool, self._api.replace_namespaced_lease, self.name, self.namespace, body)
        except KubeError as exc:
            if not (exc.conflict or exc.not_found):
                raise
