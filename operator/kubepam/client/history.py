"""`kubepam history`: the AccessRecords the current kubeconfig user may list (finished checkouts, ended
JIT activations, issued and denied certificates), one row each, built by domain/history.py exactly as
the console's History page builds them; filtered and exported as a table, CSV or JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubepam.client.errors import api_message
from kubepam.domain import history as hist
from kubepam.domain import records
from kubepam.domain.durations import parse_duration
from kubepam.domain.kinds import GROUP, VERSION


class HistoryError(Exception):
    """Safe to print."""


def moment(text: str, now: datetime) -> datetime:
    """An RFC 3339 time (2026-01-31T12:00:00Z) or a Go duration meaning that long ago (24h, 90m)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HistoryError(f"{text!r} is neither an RFC 3339 time nor a duration like 24h") from None
    if when.tzinfo is None:
        raise HistoryError(f"{text!r} has no time zone (add Z for UTC)")
    return when


def selector(person: str, project: str) -> str:
    """The label selector that narrows the listing on the server (the rows are filtered exactly after)."""
    parts = [f"{records.MANAGED_BY}={records.MANAGER}"]
    if person:
        parts.append(f"{records.LABEL_PERSON}={records.label_value(person)}")
    if project:
        parts.append(f"{records.LABEL_PROJECT}={records.label_value(project)}")
    return ",".join(parts)


def list_records(namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    api = kubernetes.client.CustomObjectsApi()
    items: list[dict[str, Any]] = []
    token = ""
    try:
        while True:
            extra: dict[str, Any] = {"label_selector": label_selector, "limit": 500}
            if token:
                extra["_continue"] = token
            page: Any
            if namespace:
                page = api.list_namespaced_custom_object(GROUP, VERSION, namespace, records.PLURAL, **extra)
            else:
                page = api.list_cluster_custom_object(GROUP, VERSION, records.PLURAL, **extra)
            items += [dict(i) for i in page.get("items") or []]
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items
    except ApiException as exc:
        raise HistoryError(api_message(exc)) from None


def rows(
    namespace: str | None,
    *,
    person: str = "",
    account: str = "",
    project: str = "",
    kind: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    lister: Callable[[str | None, str], list[dict[str, Any]]] | None = None,
) -> list[hist.Row]:
    found = (lister or list_records)(namespace, selector(person, project))
    return hist.narrow(
        hist.history((), (), found),
        person=person,
        account=account,
        project=project,
        kind=kind,
        since=since,
        until=until,
    )
