"""What checkouts and JIT accounts share: work serialised per object, status written with kstatus
health, events posted only once a step's status is written, and failures retried through the one
scheduler with capped backoff (attempts counted in memory too, for when status cannot be written)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubepam.adapters import metrics, postgres
from kubepam.adapters.events import Events
from kubepam.adapters.kube import KubeError
from kubepam.domain.ownership import ForeignObject
from kubepam.domain.plans import Plan, settling, status_patch
from kubepam.services.scheduler import Scheduler

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# A ForeignObject stays refused (and said in status and Events) until a person removes the object
# squatting the derived name; retrying with backoff picks the work up again once they have.
RETRYABLE = (postgres.BackendError, KubeError, RuntimeError, ForeignObject)

log = logging.getLogger("kubepam.reconciler")


class Objects(Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...
    def pages(self, plural: str) -> AsyncIterator[list[dict[str, Any]]]: ...


def key_of(obj: Mapping[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


class ObjectReconciler:
    plural = ""

    def __init__(
        self, objects: Objects, scheduler: Scheduler, events: Events, clock: Callable[[], datetime]
    ) -> None:
        self._objects = objects
        self._scheduler = scheduler
        self._events = events
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts: dict[str, int] = {}
        self._notes: dict[str, list[tuple[Mapping[str, Any], str, str, bool, Mapping[str, Any] | None]]] = {}

    # ----- to be provided by each kind ----------------------------------------------------------
    async def _step(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def _health(self, status: Mapping[str, Any]) -> Plan:
        raise NotImplementedError

    async def _record_failure(self, obj: dict[str, Any], message: str, attempts: int, delay: float) -> None:
        """Put the failure into the object's status (each kind knows where it belongs)."""

    # ----- shared machinery ---------------------------------------------------------------------
    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one object forward as far as it can go now; its next deadline or retry is scheduled."""
        key = f"{namespace}/{name}"
        async with self._locks.setdefault(key, asyncio.Lock()):
            obj = await self._objects.get(self.plural, namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                if obj is None:
                    self._scheduler.cancel((self.plural, key))
                    self._locks.pop(key, None)
                return
            try:
                await self._step(obj)
                self._attempts.pop(key, None)
            except RETRYABLE as exc:
                self._notes.pop(key, None)  # nothing of a failed step is announced
                latest = await self._objects.get(
                    self.plural, namespace, name
                )  # the step may have written intent
                await self._failed(latest or obj, exc)

    def due(self, obj: Mapping[str, Any]) -> datetime | None:
        """When the object's status says it next needs a step (its deadline), or None; each kind says."""
        return None

    async def arm_listed(self) -> int:
        """At leadership start: arm the deadline of every object of the kind from a paged list of their
        statuses, so they fire on time while kopf is still resuming every object one by one. A failed list
        is logged, not raised: the resume handlers arm them all the same, only later."""
        armed = 0
        try:
            async for page in self._objects.pages(self.plural):
                armed += self.rearm(page)
        except KubeError as exc:
            log.warning("could not list %s to arm their deadlines early: %s", self.plural, exc)
        return armed

    def rearm(self, objs: Iterable[Mapping[str, Any]]) -> int:
        """Put the deadlines these objects' statuses carry into the scheduler, unless one is already
        there. Returns how many were armed."""
        armed = 0
        for obj in objs:
            meta = obj.get("metadata") or {}
            when = self.due(obj)
            if when is None or meta.get("deletionTimestamp"):
                continue
            if self._scheduler.deadline((self.plural, f"{meta['namespace']}/{meta['name']}")) is None:
                self.wake(meta["namespace"], meta["name"], when)
                armed += 1
        return armed

    def enqueue(self, namespace: str, name: str) -> None:
        """Reconcile the object as soon as the scheduler's queue gets to it (kopf's create, update and
        resume handlers call this and return): a backlog costs a key, and the object is read fresh
        when its turn comes. Should the operator stop first, its resume on start enqueues it again."""
        self._scheduler.soon((self.plural, f"{namespace}/{name}"), self._reconcile_later(namespace, name))

    def wake(self, namespace: str, name: str, when: datetime) -> None:
        self._scheduler.schedule(
            (self.plural, f"{namespace}/{name}"), when, self._reconcile_later(namespace, name)
        )

    def _reconcile_later(self, namespace: str, name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.reconcile(namespace, name)

        return run

    def _settling(self, obj: Mapping[str, Any]) -> bool:
        return settling(obj["metadata"], self._clock())

    async def _wait_for_reference(self, obj: dict[str, Any], problem: str) -> dict[str, Any]:
        """Stay Pending, say what is awaited, and look again shortly."""
        meta = obj["metadata"]
        self.wake(meta["namespace"], meta["name"], self._clock() + timedelta(seconds=3))
        waiting = f"waiting: {problem}"
        return {} if (obj.get("status") or {}).get("message") == waiting else {"message": waiting}

    def forget(self, namespace: str, name: str) -> None:
        self._scheduler.cancel((self.plural, f"{namespace}/{name}"))

    async def _write(self, obj: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch ``changes`` into status with consistent conditions; returns the object as written."""
        meta = obj["metadata"]
        status = {**(obj.get("status") or {}), **changes}
        desired = (
            status_patch(
                self._health(status), obj.get("status"), int(meta.get("generation") or 0), self._clock()
            )
            or {}
        )
        await self._objects.patch_status(self.plural, meta["namespace"], meta["name"], {**changes, **desired})
        return {**obj, "status": {**status, **desired}}

    def _note(
        self,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        audit: Mapping[str, Any] | None = None,
    ) -> None:
        """An Event and audit line for a step, posted once its status is written (never twice)."""
        self._notes.setdefault(key_of(obj), []).append((obj, reason, message, warning, audit))

    async def _flush(self, obj: Mapping[str, Any]) -> None:
        for target, reason, message, warning, audit in self._notes.pop(key_of(obj), []):
            await self._events.emit(target, reason, message, warning=warning, audit=audit)

    async def _failed(self, obj: dict[str, Any], exc: Exception) -> None:
        key = key_of(obj)
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        metrics.record_reconcile_error(self.plural, exc)
        delay = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
        message = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("%s %s: %s (attempt %d, retrying in %ss)", self.plural, key, message, attempts, delay)
        await self._events.emit(obj, "RetryScheduled", message, warning=True)
        try:
            await self._record_failure(obj, message, attempts, delay)
        except KubeError as write_error:  # the retry below happens whether or not status could be written
            log.warning("%s %s: could not record the failure: %s", self.plural, key, write_error)
        self.wake(
            obj["metadata"]["namespace"], obj["metadata"]["name"], self._clock() + timedelta(seconds=delay)
        )
