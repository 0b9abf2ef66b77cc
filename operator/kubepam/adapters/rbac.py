"""Roles and RoleBindings the operator makes in a team namespace: per-checkout read access to one
Secret, and elevation bindings. Created idempotently, owned by the object they serve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config


class Rbac:
    def __init__(self) -> None:
        load_config()
        self._api = kubernetes.client.RbacAuthorizationV1Api()

    async def _create_or_replace(self, kind: str, namespace: str, body: dict[str, Any]) -> None:
        create = getattr(self._api, f"create_namespaced_{kind}")
        replace = getattr(self._api, f"replace_namespaced_{kind}")
        try:
            await call(create, namespace, body)
        except KubeError as exc:
            if not exc.conflict:
                raise
            await call(replace, body["metadata"]["name"], namespace, body)

    async def _delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await call(getattr(self._api, f"delete_namespaced_{kind}"), name, namespace)
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def grant_secret_read(
        self, namespace: str, name: str, secret: str, user: str, owner: Mapping[str, Any]
    ) -> None:
        """Only ``user`` may read the one Secret ``secret`` (Role + RoleBinding named ``name``)."""
        meta = {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [dict(owner)],
            "labels": {"app.kubernetes.io/managed-by": "kubepam"},
        }
        await self._create_or_replace(
            "role",
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta,
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}
                ],
            },
        )
        await self._create_or_replace(
            "role_binding",
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )

    async def bind_cluster_roles(
        self,
        namespace: str,
        name: str,
        cluster_roles: Sequence[str],
        subject: Mapping[str, str],
        owner: Mapping[str, Any] | None,
    ) -> None:
        """One RoleBinding per ClusterRole, ``<name>-<role>``, for ``subject`` in ``namespace``."""
        for role in cluster_roles:
            meta: dict[str, Any] = {
                "name": f"{name}-{role}"[:253],
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "kubepam", "kubepam.io/grant": name},
            }
            if owner:
                meta["ownerReferences"] = [dict(owner)]
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
            )

    async def unbind(self, namespace: str, name: str, cluster_roles: Sequence[str]) -> None:
        for role in cluster_roles:
            await self._delete("role_binding", namespace, f"{name}-{role}"[:253])

    async def revoke_secret_read(self, namespace: str, name: str) -> None:
        await self._delete("role_binding", namespace, name)
        await self._delete("role", namespace, name)
