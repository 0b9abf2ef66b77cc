"""Roles and RoleBindings the operator makes in a team namespace: per-checkout read access to one
Secret, and elevation and JIT bindings. Created idempotently; an existing object of the same name is
replaced or deleted only if it is provably kubepam's for the same owner (see domain/ownership.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config
from kubepam.domain.ownership import ForeignObject, owner_labels, provably_ours, qualified


def _owned(obj: Any, owner: Mapping[str, Any]) -> bool:
    meta = obj.metadata
    owners = [str(ref.uid) for ref in (meta.owner_references or ())]
    return provably_ours(dict(meta.labels or {}), owners, str(owner.get("uid", "")))


def binding_name(base: str, cluster_role: str) -> str:
    return qualified(base, cluster_role)


class Rbac:
    def __init__(self) -> None:
        load_config()
        self._api = kubernetes.client.RbacAuthorizationV1Api()

    async def _read(self, kind: str, namespace: str, name: str) -> Any | None:
        try:
            return await call(getattr(self._api, f"read_namespaced_{kind}"), name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def _create_or_replace(
        self, kind: str, namespace: str, body: dict[str, Any], owner: Mapping[str, Any]
    ) -> None:
        create = getattr(self._api, f"create_namespaced_{kind}")
        replace = getattr(self._api, f"replace_namespaced_{kind}")
        name = body["metadata"]["name"]
        try:
            await call(create, namespace, body)
            return
        except KubeError as exc:
            if not exc.conflict:
                raise
        current = await self._read(kind, namespace, name)
        if current is None:  # deleted in between: create again
            await call(create, namespace, body)
            return
        if not _owned(current, owner):
            raise ForeignObject(
                kind.replace("_", ""), namespace, name, f"{owner.get('kind')} {owner.get('name')}"
            )
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await call(replace, name, namespace, body)

    async def _delete(self, kind: str, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        current = await self._read(kind, namespace, name)
        if current is None:
            return
        if not _owned(current, owner):
            raise ForeignObject(
                kind.replace("_", ""), namespace, name, f"{owner.get('kind')} {owner.get('name')}"
            )
        try:
            await call(
                getattr(self._api, f"delete_namespaced_{kind}"),
                name,
                namespace,
                body=kubernetes.client.V1DeleteOptions(
                    preconditions=kubernetes.client.V1Preconditions(uid=str(current.metadata.uid))
                ),
            )
        except KubeError as exc:
            if not exc.not_found:
                raise

    @staticmethod
    def _meta(namespace: str, name: str, owner: Mapping[str, Any], same_namespace: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": owner_labels(str(owner["kind"]), str(owner["name"]), str(owner["uid"])),
        }
        if same_namespace:  # an ownerReference cannot point across namespaces: the label says whose it is
            meta["ownerReferences"] = [dict(owner)]
        return meta

    async def grant_secret_read(
        self, namespace: str, name: str, secret: str, user: str, owner: Mapping[str, Any]
    ) -> None:
        """Only ``user`` may read the one Secret ``secret`` (Role + RoleBinding named ``name``)."""
        await self._create_or_replace(
            "role",
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": self._meta(namespace, name, owner, True),
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}
                ],
            },
            owner,
        )
        await self._create_or_replace(
            "role_binding",
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": self._meta(namespace, name, owner, True),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
            owner,
        )

    async def bind_cluster_roles(
        self,
        namespace: str,
        name: str,
        cluster_roles: Sequence[str],
        subject: Mapping[str, str],
        owner: Mapping[str, Any],
        *,
        owner_namespace: str,
    ) -> None:
        """One RoleBinding per ClusterRole (:func:`binding_name`) for ``subject`` in ``namespace``."""
        for role in cluster_roles:
            meta = self._meta(namespace, binding_name(name, role), owner, namespace == owner_namespace)
            meta["labels"]["kubepam.io/grant"] = name[:63].rstrip("-")
            await self._create_or_replace(
                "role_binding",
                namespace,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": meta,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [dict(subject)],
                },
                owner,
            )

    async def unbind(
        self, namespace: str, name: str, cluster_roles: Sequence[str], owner: Mapping[str, Any]
    ) -> None:
        for role in cluster_roles:
            await self._delete("role_binding", namespace, binding_name(name, role), owner)

    async def revoke_secret_read(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        await asyncio.gather(
            self._delete("role_binding", namespace, name, owner), self._delete("role", namespace, name, owner)
        )
