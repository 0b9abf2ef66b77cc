"""Kubernetes API access for what kopf does not do for us (Secrets, ConfigMaps, RBAC objects).

Calls go through the official ``kubernetes`` client in a worker thread, so the event loop never
blocks. Errors become :class:`KubeError` with the HTTP status, so callers can tell a conflict (409,
someone else won the race) from a missing object (404) without importing the client.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubepam.adapters import fencing
from kubepam.domain.ownership import MANAGED_BY, ForeignObject, owner_labels, provably_ours

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

    @property
    def forbidden(self) -> bool:
        return self.status == 403


POOL_SIZE = 64  # HTTP connections kept per API client: more than the threads that use it, so none is
# discarded and re-handshaken under load (urllib3's default of 10 churned TLS connections at 32 threads)


@functools.cache
def load_config() -> None:
    """In-cluster config when running in a pod, else the current kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = POOL_SIZE
    kubernetes.client.Configuration.set_default(config)
    # One API client (one connection pool) for every adapter: without a default, each *Api() makes its
    # own, and each pool grows to as many TLS connections as threads use it at once (seven of them held
    # ~200 connections, each with OpenSSL's buffers, under load).
    kubernetes.client.ApiClient.set_default(kubernetes.client.ApiClient(config))  # type: ignore[no-untyped-call]


def _translated(fn: Callable[..., T], args: Any, kwargs: Any) -> Callable[[], T]:
    def run() -> T:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            message = exc.body if isinstance(exc.body, str) else str(exc.reason)
            raise KubeError(int(exc.status or 0), str(exc.reason), message[:500]) from None

    return run


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one client call in a thread, translating API errors; refused by the fence when made on
    behalf of a leader that no longer leads."""
    fencing.check()
    return await asyncio.to_thread(_translated(fn, args, kwargs))


async def call_in(executor: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """As :func:`call`, on a dedicated executor (the leader Lease must not queue behind reconciling)."""
    fencing.check()
    return await asyncio.get_running_loop().run_in_executor(executor, _translated(fn, args, kwargs))


def _version(obj: Any) -> str:
    return str(obj.metadata.resource_version) if obj.metadata is not None else ""


@dataclass(frozen=True)
class SecretData:
    """The data of a Secret or ConfigMap (always bytes here), the version it was read at, and the
    metadata that says whose it is (labels, annotations, the uids of its owners)."""

    data: dict[str, bytes]
    resource_version: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_uids: tuple[str, ...] = ()
    uid: str = ""

    def owned_by(self, uid: str) -> bool:
        return provably_ours(self.labels, self.owner_uids, uid)


def read_meta(obj: Any) -> tuple[dict[str, str], dict[str, str], tuple[str, ...], str]:
    """Labels, annotations, owner uids and uid of a client object."""
    meta = obj.metadata
    if meta is None:
        return {}, {}, (), ""
    owners = tuple(str(ref.uid) for ref in (meta.owner_references or ()))
    return dict(meta.labels or {}), dict(meta.annotations or {}), owners, str(meta.uid or "")


def ensure_owned(
    current: SecretData | None, kind: str, namespace: str, name: str, owner: Mapping[str, Any] | None
) -> None:
    """Refuse to touch an existing object that kubepam did not make for ``owner`` (``None``: an object of
    the operator's own namespace with no owner, which must still carry kubepam's managed-by label)."""
    if current is None:
        return
    if owner is None:
        if current.labels.get(MANAGED_BY) != "kubepam":
            raise ForeignObject(kind, namespace, name, "the operator")
    elif not current.owned_by(str(owner.get("uid", ""))):
        raise ForeignObject(kind, namespace, name, f"{owner.get('kind')} {owner.get('name')}")


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """Makes the garbage collector delete the object with its owner (no finalizer rights needed)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


class DataObjects:
    """Get, create, replace (conditional on resourceVersion) and delete Secrets or ConfigMaps by name."""

    kind = ""

    def __init__(self) -> None:
        load_config()
        self._core = kubernetes.client.CoreV1Api()

    def _encode(self, data: Mapping[str, bytes]) -> dict[str, str]:
        raise NotImplementedError

    def _decode(self, obj: Any) -> dict[str, bytes]:
        raise NotImplementedError

    def _body(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None,
        owner: Mapping[str, Any] | None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        if owner:
            meta["ownerReferences"] = [dict(owner)]
            meta["labels"].update(owner_labels(str(owner["kind"]), str(owner["name"]), str(owner["uid"])))
        if resource_version:
            meta["resourceVersion"] = resource_version
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": self.kind,
            "metadata": meta,
            "data": self._encode(data),
        }
        if self.kind == "Secret":
            body["type"] = "Opaque"
        return body

    def _method(self, verb: str) -> Any:
        suffix = "secret" if self.kind == "Secret" else "config_map"
        return getattr(self._core, f"{verb}_namespaced_{suffix}")

    async def get(self, namespace: str, name: str) -> SecretData | None:
        try:
            obj = await call(self._method("read"), name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return SecretData(self._decode(obj), _version(obj), *read_meta(obj))

    async def create(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> SecretData:
        obj = await call(self._method("create"), namespace, self._body(namespace, name, data, labels, owner))
        return SecretData(dict(data), _version(obj), *read_meta(obj))

    async def replace(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        current: SecretData,
        owner: Mapping[str, Any] | None,
        labels: Mapping[str, str] | None = None,
    ) -> SecretData:
        """Replace what was read as ``current`` (conditional on its resourceVersion), only if it is ours."""
        ensure_owned(current, self.kind, namespace, name, owner)
        body = self._body(namespace, name, data, labels, owner, current.resource_version)
        obj = await call(self._method("replace"), name, namespace, body)
        return SecretData(dict(data), _version(obj), *read_meta(obj))

    async def delete(self, namespace: str, name: str, owner: Mapping[str, Any]) -> bool:
        """Delete the object only if it is provably ``owner``'s (the uid read is a precondition)."""
        current = await self.get(namespace, name)
        if current is None:
            return False
        ensure_owned(current, self.kind, namespace, name, owner)
        try:
            await call(
                self._method("delete"),
                name,
                namespace,
                body=kubernetes.client.V1DeleteOptions(
                    preconditions=kubernetes.client.V1Preconditions(uid=current.uid) if current.uid else None
                ),
            )
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True


class Secrets(DataObjects):
    kind = "Secret"

    def _encode(self, data: Mapping[str, bytes]) -> dict[str, str]:
        return {k: base64.b64encode(v).decode() for k, v in data.items()}

    def _decode(self, obj: Any) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}


class ConfigMaps(DataObjects):
    kind = "ConfigMap"

    def _encode(self, data: Mapping[str, bytes]) -> dict[str, str]:
        return {k: v.decode() for k, v in data.items()}

    def _decode(self, obj: Any) -> dict[str, bytes]:
        return {k: str(v).encode() for k, v in (obj.data or {}).items()}


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

    async def pages(self, plural: str, size: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object of the kind in every namespace, a page at a time (one list is never all in memory)."""
        token = ""
        while True:
            page: Any = await call(
                self._api.list_cluster_custom_object,
                self._group,
                self._version,
                plural,
                limit=size,
                **({"_continue": token} if token else {}),
            )
            yield list(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> None:
        await call(
            self._api.create_namespaced_custom_object,
            self._group,
            self._version,
            namespace,
            plural,
            dict(body),
        )

    async def patch(self, plural: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        await call(
            self._api.patch_namespaced_custom_object,
            self._group,
            self._version,
            namespace,
            plural,
            name,
            dict(body),
        )

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

    async def delete(self, plural: str, namespace: str, name: str, uid: str) -> bool:
        """Delete this object (this uid, never a newer one of the same name); False if already gone."""
        try:
            await call(
                self._api.delete_namespaced_custom_object,
                self._group,
                self._version,
                namespace,
                plural,
                name,
                body=kubernetes.client.V1DeleteOptions(
                    preconditions=kubernetes.client.V1Preconditions(uid=uid) if uid else None
                ),
            )
        except KubeError as exc:
            if exc.not_found or exc.conflict:  # gone, or a newer object of that name (not ours to delete)
                return False
            raise
        return True
