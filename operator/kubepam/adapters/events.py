"""Kubernetes Events for lifecycle steps posted outside kopf's handlers (scheduled work), and one
structured audit log line per step (adapters/audit.py, docs/audit.md). Messages name people and
reasons, never credentials."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes

from kubepam.adapters import audit as audit_trail
from kubepam.adapters.kube import KubeError, call, load_config

log = logging.getLogger("kubepam.events")


def audit_event(
    obj: Mapping[str, Any], reason: str, fields: Mapping[str, Any], now: datetime | None = None
) -> None:
    """The one audit line of an Event posted with audit fields (also written when the Event cannot be)."""
    audit_trail.for_event(obj, reason, fields, now)


class Events:
    def __init__(self, component: str = "kubepam-operator") -> None:
        load_config()
        self._api = kubernetes.client.EventsV1Api()
        self._component = component

    async def emit(
        self,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        audit: Mapping[str, Any] | None = None,
    ) -> None:
        meta = obj.get("metadata") or {}
        now = datetime.now(UTC)
        if audit is not None:
            audit_event(obj, reason, audit, now)
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'kubepam')}-",
                "namespace": meta.get("namespace"),
            },
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": f"kubepam.io/{self._component}",
            "reportingInstance": self._component,
            "action": reason,
            "reason": reason,
            "note": message[:1024],
            "type": "Warning" if warning else "Normal",
            "regarding": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
        }
        try:
            await call(self._api.create_namespaced_event, meta.get("namespace"), body)
        except KubeError as exc:  # an event that cannot be posted must not stop the work it describes
            log.warning(
                "could not post event %s for %s/%s: %s", reason, meta.get("namespace"), meta.get("name"), exc
            )
