"""Kubernetes Events for lifecycle steps posted outside kopf's handlers (scheduled work), and one
structured audit log line per step. Messages name people and reasons, never credentials."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config

audit_log = logging.getLogger("kubepam.audit")
log = logging.getLogger("kubepam.events")


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
            audit_log.info(
                json.dumps(
                    {
                        "time": now.isoformat(),
                        "kind": obj.get("kind"),
                        "namespace": meta.get("namespace"),
                        "name": meta.get("name"),
                        "event": reason,
                        **audit,
                    },
                    sort_keys=True,
                )
            )
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
