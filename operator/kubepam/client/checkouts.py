"""`kubepam checkout|checkin|checkouts|approve|deny`: shared-account checkouts with plain Kubernetes
objects, as the current kubeconfig user (the API server stamps who asks and who approves)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
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
    queue: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Create a checkout and wait up to ``wait`` seconds for its decision. ``queue``: if the account is
    held, wait in its line (spec.queue, spec.claim: taken as soon as it is offered) until Active;
    ``progress`` hears of every new place in line. Given up at the timeout, the checkout leaves the line."""
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
    if queue:
        spec.update(queue=True, claim=True)
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
    seen: Any = None
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase in DECIDED:
            return dict(obj)
        place = (status.get("queue") or {}).get("position") if phase == "Queued" else phase
        if progress is not None and phase in ("Queued", "Offered") and place != seen:
            progress(name, status)
        seen = place
        time.sleep(0.25 if phase != "Queued" else 1.0)
    if obj is not None and (obj.get("status") or {}).get("phase") in ("Queued", "Offered"):
        late = f"checkout {namespace}/{name} still waiting after {wait:.0f}s"
        try:  # a bounded wait: leave the line rather than take the account with nobody there
            patch_spec(namespace, name, {"checkin": {"requested": True}})
        except CheckoutError as exc:
            raise CheckoutError(f"{late}; leaving the line failed: {exc}") from None
        raise CheckoutError(f"{late}: it left the line (--timeout SECONDS waits longer)")
    waiting = ((obj.get("status") or {}).get("approvalRequest") or {}).get("message") if obj else None
    if waiting:
        raise CheckoutError(f"checkout {namespace}/{name} is waiting: {waiting}")
    raise CheckoutError(
        f"checkout {namespace}/{name} not decided after {wait:.0f}s; is the operator running?"
    )


DECIDED = ("Active", "Denied", "Expired", "Cancelled", "CheckedIn")


def waiting_line(status: dict[str, Any]) -> str:
    """A queued or offered checkout's place, for people."""
    if status.get("phase") == "Offered":
        return f"offered until {(status.get('offer') or {}).get('expiresAt', '')}"
    place = status.get("queue") or {}
    return f"#{place.get('position')} in line, estimated by {place.get('estimatedAt', '?')}"


def position(status: dict[str, Any]) -> str:
    """The POSITION column: a queued checkout's place in line."""
    place = (status.get("queue") or {}).get("position") if status.get("phase") == "Queued" else None
    return str(place) if place else ""


def claim(namespace: str, name: str) -> None:
    """Take an account offered to this checkout (or take it at once when its turn comes)."""
    patch_spec(namespace, name, {"claim": True})


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
                position(status),
                status.get("expiresAt", ""),
                left,
                (status.get("elevation") or {}).get("state", ""),
                "yes" if (status.get("breakGlass") or {}).get("used") else "",
            ]
        )
    return rows
