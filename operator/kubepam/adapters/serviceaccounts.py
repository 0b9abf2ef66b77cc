"""ServiceAccounts and their TokenRequest tokens, for Kubernetes JIT accounts. Deleting a
ServiceAccount makes every token it ever had useless at once (tokens are bound to its uid)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config

MIN_TOKEN_SECONDS = 600  # the API server's floor for TokenRequest


class ServiceAccounts:
    def __init__(self) -> None:
        load_config()
        self._core = kubernetes.client.CoreV1Api()

    async def ensure(
        self, namespace: str, name: str, owner: Mapping[str, Any], labels: Mapping[str, str]
    ) -> str:
        """Create if missing; returns the uid."""
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
            obj = await call(self._core.read_namespaced_service_account, name, namespace)
        return str(obj.metadata.uid)

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await call(self._core.delete_namespaced_service_account, name, namespace)
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
