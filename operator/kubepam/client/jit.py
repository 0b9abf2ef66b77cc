"""`kubepam jit create|enable|disable|list`: personal temporary privileged accounts with plain Kubernetes
objects, as the current kubeconfig user (the API server checks the owner and the project's rules)."""

from __future__ import annotations

from typing import Any

from kubepam.client.errors import api_message

GROUP, VERSION, PLURAL = "kubepam.io", "v1alpha1", "jitaccounts"


class JitError(Exception):
    """Safe to print."""


def _api() -> Any:
    import kubernetes

    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.CustomObjectsApi()


def _error(exc: Any) -> JitError:
    return JitError(api_message(exc))


def create(
    namespace: str,
    name: str,
    project: str,
    owner: str,
    groups: list[str],
    reason: str,
    duration: str,
    account: str | None,
) -> None:
    from kubernetes.client.exceptions import ApiException

    spec: dict[str, Any] = {
        "project": project,
        "owner": owner,
        "groups": groups,
        "reason": reason,
        "duration": duration,
    }
    if account:
        spec["accountName"] = account
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JitAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    try:
        _api().create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    except ApiException as exc:
        raise _error(exc) from None


def enable(namespace: str, name: str, reason: str, duration: str) -> None:
    _patch_spec(namespace, name, {"reason": reason, "duration": duration, "disabled": False})


def disable(namespace: str, name: str) -> None:
    """End the current window now (the owner or a security admin)."""
    _patch_spec(namespace, name, {"disabled": True})


def _patch_spec(namespace: str, name: str, spec: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        _api().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})
    except ApiException as exc:
        raise _error(exc) from None


def listing(namespace: str | None) -> list[list[str]]:
    api = _api()
    items = (
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        if namespace
        else api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    )["items"]
    rows = []
    for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        status = obj.get("status") or {}
        rows.append(
            [
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                status.get("accountName", ""),
                obj["spec"].get("owner", ""),
                ",".join(obj["spec"].get("groups") or []),
                status.get("phase", "Pending"),
                status.get("expiresAt", ""),
                status.get("secretName", ""),
            ]
        )
    return rows
