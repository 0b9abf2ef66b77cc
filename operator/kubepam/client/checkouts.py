"""`kubepam checkout|checkin|checkouts|approve|deny`: shared-account checkouts with plain Kubernetes
objects, as the current kubeconfig user (the API server stamps who asks and who approves)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

from kubepam.client.errors import api_message

GROUP, VERSION, PLURAL = "kubepam.io", "v1alpha1", "checkouts"


class CheckoutError(Exception):
    """Safe to print."""


def _clients() -> tuple[Any, Any]:
    import kubernetes

    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.CustomObjectsApi(), kubernetes.client.CoreV1Api()


def _api_error(exc: Any) -> CheckoutError:
    return CheckoutError(api_message(exc))


def checkout(
    namespace: str,
    project: str,
    account: str,
    reason: str,
    duration: str | None,
    elevate: bool,
    wait: float,
    break_glass: str | None = None,
) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    api, _ = _clients()
    spec: dict[str, Any] = {
        "project": project,
        "account": account,
        "reason": reason,
        "requester": "stamped-by-the-api-server",
    }
    if duration:
        spec["duration"] = duration
    if elevate:
        spec["elevation"] = {"requested": True}
    if break_glass:
        spec["breakGlass"] = {"reason": break_glass}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Checkout",
        "metadata": {"generateName": f"{account.replace('_', '-')}-", "namespace": namespace},
        "spec": spec,
    }
    try:
        created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    except ApiException as exc:
        raise _api_error(exc) from None
    name = created["metadata"]["name"]
    deadline = time.monotonic() + wait
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Active", "Denied"):
            return dict(obj)
        time.sleep(0.25)
    waiting = ((obj.get("status") or {}).get("approvalRequest") or {}).get("message") if obj else None
    if waiting:
        raise CheckoutError(f"checkout {namespace}/{name} is waiting: {waiting}")
    raise CheckoutError(
        f"checkout {namespace}/{name} not decided after {wait:.0f}s; is the operator running?"
    )


def credential(namespace: str, secret: str) -> dict[str, str]:
    from kubernetes.client.exceptions import ApiException

    _, core = _clients()
    try:
        obj = core.read_namespaced_secret(secret, namespace)
    except ApiException as exc:
        raise _api_error(exc) from None
    return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}


def patch_spec(namespace: str, name: str, patch: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    api, _ = _clients()
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": patch})
    except ApiException as exc:
        raise _api_error(exc) from None


def decide(namespace: str, name: str, decision: str, reason: str) -> None:
    from kubernetes.client.exceptions import ApiException

    api, _ = _clients()
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        request = ((obj.get("status") or {}).get("approvalRequest") or {}).get("id") or ""
        # Append one vote (JSON patch): the API server stamps who we are and refuses what we may not do.
        body = [{"op": "add", "path": "/status/approvals/-", "value": vote(request, decision, reason)}]
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
    except ApiException as exc:
        raise _api_error(exc) from None


def vote(request: str, decision: str, comment: str) -> dict[str, str]:
    """One vote for status.approvals (approver and groups are stamped by the API server)."""
    return {"request": request, "decision": decision, "comment": comment}


def listing(namespace: str | None) -> list[list[str]]:
    api, _ = _clients()
    if namespace:
        items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    else:
        items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    rows = []
    now = datetime.now(UTC)
    for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        status = obj.get("status") or {}
        left = ""
        if status.get("phase") == "Active" and status.get("expiresAt"):
            remaining = datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00")) - now
            left = f"{max(int(remaining.total_seconds()), 0) // 60}m"
        rows.append(
            [
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                obj["spec"]["project"],
                obj["spec"]["account"],
                status.get("holder") or obj["spec"].get("requester", ""),
                status.get("phase", "Pending"),
                status.get("expiresAt", ""),
                left,
                (status.get("elevation") or {}).get("state", ""),
                "yes" if (status.get("breakGlass") or {}).get("used") else "",
            ]
        )
    return rows
