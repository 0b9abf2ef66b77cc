"""ServiceAccounts and their TokenRequest tokens, for Kubernetes JIT accounts. Deleting a
ServiceAccount makes every token it ever had useless at once (tokens are bound to its uid).

A ServiceAccount that already exists under the account's name is adopted, replaced or deleted only if
it is provably kubepam's for the same JitAccount (managed-by label and ownerReference to its uid):
otherwise :class:`ForeignObject`, and nobody's token is handed out or taken away."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config
from kubepam.domain.ownership import ForeignObject, owner_labels, provably_ours

MIN_TOKEN_SECONDS = 600  # the API server's floor for TokenRequest


class ServiceAccounts:
    def __init__(self) -> None:
        load_config()
        self._core = kubernetes.client.CoreV1Api()

    async def _read(self, namespace: str, name: str) -> Any | None:
        try:
            return await call(self._core.read_namespaced_service_account, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    @staticmethod
    def _check(obj: Any, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        meta = obj.metadata
        owners = [str(ref.uid) for ref in (meta.owner_references or ())]
        if not provably_ours(dict(meta.labels or {}), owners, str(owner.get("uid", ""))):
            raise ForeignObject("ServiceAccount", namespace, name, f"{owner.get('kind')} {owner.get('name')}")

    async def ensure(
        self, namespace: str, name: str, owner: Mapping[str, Any], labels: Mapping[str, str]
    ) -> str:
        """Create if missing, adopt only if ours; returns the uid."""
        labels = {**labels, **owner_labels(str(owner["kind"]), str(owner["name"]), str(owner["uid"]))}
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "automountServiceAccountToken": False,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels),
                "ownerReferences": [dict(owner)],
            },
        }
        obj: Any
        try:
            obj = await call(self._core.create_namespaced_service_account, namespace, body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            obj = await self._read(namespace, name)
            if obj is None:
                raise
            self._check(obj, namespace, name, owner)
        return str(obj.metadata.uid)

    async def delete(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        obj = await self._read(namespace, name)
        if obj is None:
            return
        self._check(obj, namespace, name, owner)
        try:
            await call(
                self._core.delete_namespaced_service_account,
                name,
                namespace,
                body=kubernetes.client.V1DeleteOptions(
                    preconditions=kubernetes.client.V1Preconditions(uid=str(obj.metadata.uid))
                ),
            )
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def token(self, namespace: str, name: str, seconds: int) -> tuple[str, str]:
        """A bound token for the ServiceAccount; returns (token, expiration timestamp)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": max(seconds, MIN_TOKEN_SECONDS)},
        }
        obj: Any = await call(self._core.create_namespaced_service_account_token, name, namespace, body)
        if obj.status is None or not obj.status.token:
            raise KubeError(500, "NoToken", f"TokenRequest for {namespace}/{name} returned no token")
        expires = obj.status.expiration_timestamp
        return str(obj.status.token), expires.isoformat() if expires is not None else ""
