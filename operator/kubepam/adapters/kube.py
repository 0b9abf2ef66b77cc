"""Kubernetes API access for what kopf does not do for us (Secrets, ConfigMaps, RBAC objects).

Calls go through the official ``kubernetes`` client in a worker thread, so the event loop never
blocks. Errors become :class:`KubeError` with the HTTP status, so callers can tell a conflict (409,
someone else won the race) from a missing object (404) without importing the client.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@functools.cache
def load_config() -> None:
    """In-cluster config when running in a pod, else the current kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one client call in a thread, translating API errors."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            message = exc.body if isinstance(exc.body, str) else str(exc.reason)
            raise KubeError(int(exc.status or 0), str(exc.reason), message[:500]) from None

    return await asyncio.to_thread(run)


def _version(obj: Any) -> str:
    return str(obj.metadata.resource_version) if obj.metadata is not None else ""


@dataclass(frozen=True)
class SecretData:
    data: dict[str, bytes]
    resource_version: str


class Secrets:
    """Get, create and replace Secrets (replace is conditional on resourceVersion)."""

    def __init__(self) -> None:
        load_config()
        self._core = kubernetes.client.CoreV1Api()

    async def get(self, namespace: str, name: str) -> SecretData | None:
        try:
            obj = await call(self._core.read_namespaced_secret, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        return SecretData(data, _version(obj))

    async def create(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> SecretData:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {}),
                **({"ownerReferences": [dict(owner)]} if owner else {}),
            },
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        obj = await call(self._core.create_namespaced_secret, namespace, body)
        return SecretData(dict(data), _version(obj))

    async def replace(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        resource_version: str,
        labels: Mapping[str, str] | None = None,
    ) -> SecretData:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": resource_version,
                "labels": dict(labels or {}),
            },
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        obj = await call(self._core.replace_namespaced_secret, name, namespace, body)
        return SecretData(dict(data), _version(obj))


class CustomObjects:
    """Read kubepam objects and merge-patch their status outside kopf handlers (scheduled work)."""

    def __init__(self, group: str, version: str) -> None:
        load_config()
        self._api = kubernetes.client.CustomObjectsApi()
        self._group = group
        self._version = version

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: object = await call(
                self._api.get_namespaced_custom_object, self._group, self._version, namespace, plural, name
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return dict(obj) if isinstance(obj, dict) else None

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await call(
            self._api.patch_namespaced_custom_object_status,
            self._group,
            self._version,
            namespace,
            plural,
            name,
            {"status": dict(status)},
        )
