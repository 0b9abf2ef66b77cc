"""Writing AccessRecords when things finish, and deleting them when their retention has passed.

Writing: the leader's event handlers (handlers/accessrecord.py) hand every Checkout, JitAccount and
certificate request they see to ``observe_*``; domain/records.py decides whether something finished and
what its record says. Each record is created once through the one scheduler (a failed create is retried
with its backoff); its name comes from the source's uid, so a retry, a restart or a new leader gets 409
for a record already written, and that is success. A record whose retention would already have passed is
not written at all (so an old finished Checkout does not come back as a record on every restart).

Collecting: every record the operator wrote (labels app.kubernetes.io/managed-by=kubepam and
kubepam.io/record-kind) gets a deadline in the scheduler at ``finishedAt + retention``; seen again at
start-up (kopf lists them), each one is re-armed, and one already past is deleted at once. Records
somebody else made are never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubepam.adapters.kube import KubeError
from kubepam.domain import records
from kubepam.domain.records import Record
from kubepam.services.scheduler import Scheduler

log = logging.getLogger("kubepam.records")


class RecordObjects(Protocol):
    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def delete(self, plural: str, namespace: str, name: str, uid: str) -> bool: ...


class RecordService:
    def __init__(
        self,
        objects: RecordObjects,
        scheduler: Scheduler,
        clock: Callable[[], datetime],
        retention: timedelta,
    ) -> None:
        self._objects = objects
        self._scheduler = scheduler
        self._clock = clock
        self.retention = retention
        self._known: set[tuple[str, str]] = set()  # records known to exist: no create call for them
        self.written = 0
        self.collected = 0

    # -- writing ----------------------------------------------------------------------------------

    def observe_checkout(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        record = records.checkout_record(obj, self._clock(), deleted=deleted)
        if record is not None:
            self.write(record)

    def observe_jit(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        for record in records.jit_records(obj, self._clock(), deleted=deleted):
            self.write(record)

    def observe_certificate(self, kind: str, obj: Mapping[str, Any]) -> None:
        record = records.certificate_record(kind, obj, self._clock())
        if record is not None:
            self.write(record)

    def write(self, record: Record) -> None:
        key = (record.namespace, record.name)
        if key in self._known or self._scheduler.deadline(("access-record", *key)) is not None:
            return
        manifest = record.manifest()
        due = records.expires_at(manifest, self.retention)
        if due is not None and due <= self._clock():
            return  # it would be collected at once: its retention has passed already

        async def create() -> None:
            if key in self._known:
                return
            try:
                await self._objects.create(records.PLURAL, record.namespace, manifest)
                self.written += 1
                log.info("access record %s/%s written (%s)", record.namespace, record.name, record.outcome)
            except KubeError as exc:
                if not exc.conflict:
                    raise  # retried by the scheduler
            self._known.add(key)

        self._scheduler.schedule(("access-record", *key), self._clock(), create)

    # -- collecting -------------------------------------------------------------------------------

    def seen(self, obj: Mapping[str, Any]) -> None:
        """A record exists (listed at start-up, or just written): arm its deletion if it is ours."""
        meta = obj.get("metadata") or {}
        ns, name, uid = (
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )
        self._known.add((ns, name))
        if not records.owned(obj):
            return
        due = records.expires_at(obj, self.retention)
        if due is None:
            return
        key = ("access-record-gc", ns, name)
        if self._scheduler.deadline(key) == due:
            return

        async def collect() -> None:
            if await self._objects.delete(records.PLURAL, ns, name, uid):
                self.collected += 1
                log.info(
                    "access record %s/%s deleted: its retention (%s) has passed", ns, name, self.retention
                )

        self._scheduler.schedule(key, due, collect)

    def gone(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        self._known.discard((ns, name))
        self._scheduler.cancel(("access-record-gc", ns, name))
