"""The one scheduler for deadlines: expiries, rotations, approval windows, key changes.

A heap of (deadline, key) and a single timer armed for the earliest one, so nothing polls: the loop
sleeps until the next deadline and wakes exactly then (or when an earlier deadline is added). Keys
are unique: scheduling a key again replaces its deadline. An action that raises is retried with
capped exponential backoff until it succeeds, unless the key was rescheduled or cancelled meanwhile.
Deadlines live in memory only; after a restart they are rebuilt from the API server's state by the
handlers that own them.

Beside the deadlines, a queue for work wanted as soon as possible (``soon``): what kopf's create,
update and resume handlers ask for. It is first in, first out, a key waits in it at most once, and at
most ``queue_concurrency`` of its jobs run at once, as controller-runtime's work queue does. So a
backlog (ten thousand objects created or resumed at once) costs a key each, not a body and a running
handler each; and a deadline never waits behind it: deadlines have their own slots.

A job scheduled by the leader's control work carries the leader fence (adapters/fencing.py), so it
writes nothing once this replica stops leading, and ``drop_fenced`` removes all of them when leadership
ends (the next leader rebuilds them from status). A job keeps the fence and nothing else of the context
it was scheduled from: a copy of that context would hold kopf's handler context (the cause with the whole
object body, its patch and logger) for as long as the deadline waits, tens of KiB per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubepam.adapters import fencing, metrics

log = logging.getLogger("kubepam.scheduler")

Action = Callable[[], Awaitable[None]]


@dataclass
class _Job:
    when: datetime
    seq: int
    action: Action
    attempts: int = 0
    fence: Callable[[], bool] | None = None  # the leader fence it was scheduled under, if any

    @property
    def fenced(self) -> bool:
        return self.fence is not None


class Scheduler:
    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        max_concurrency: int = 64,
        queue_concurrency: int = 16,
        backoff: tuple[float, ...] = (1, 2, 5, 10, 30, 60),
    ) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, int, Hashable]] = []
        self._jobs: dict[Hashable, _Job] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(max_concurrency)
        self._backoff = backoff
        self._running: set[asyncio.Task[None]] = set()
        self._queued: dict[Hashable, _Job] = {}  # insertion order is the queue's order
        self._queue_wake = asyncio.Event()
        self._queue_slots = asyncio.Semaphore(queue_concurrency)
        self.fired = 0

    def schedule(self, key: Hashable, when: datetime, action: Action) -> None:
        job = _Job(when, next(self._seq), action, 0, fencing.current())
        self._jobs[key] = job
        heapq.heappush(self._heap, (when, job.seq, key))
        if self._heap[0][1] == job.seq:
            self._wake.set()

    def soon(self, key: Hashable, action: Action) -> None:
        """Run ``action`` once a queue slot is free, after those queued before it. A key already waiting
        keeps its place (its action reads the object's latest state when it runs)."""
        if key not in self._queued:
            self._queued[key] = _Job(self._clock(), next(self._seq), action, 0, fencing.current())
            self._queue_wake.set()

    def queued(self) -> int:
        return len(self._queued)

    def cancel(self, key: Hashable) -> None:
        self._jobs.pop(key, None)  # its heap entry is skipped when it surfaces

    def drop_fenced(self) -> int:
        """Forget every job scheduled on behalf of the leader (leadership ended); returns how many."""
        keys = [key for key, job in self._jobs.items() if job.fenced]
        for key in keys:
            del self._jobs[key]
        queued = [key for key, job in self._queued.items() if job.fenced]
        for key in queued:
            del self._queued[key]
        for task in list(self._running):
            if getattr(task, "kubepam_fenced", False):
                task.cancel()
        return len(keys) + len(queued)

    def deadline(self, key: Hashable) -> datetime | None:
        job = self._jobs.get(key)
        return job.when if job else None

    def __len__(self) -> int:
        return len(self._jobs)

    def _next(self) -> datetime | None:
        while self._heap:
            when, seq, key = self._heap[0]
            job = self._jobs.get(key)
            if job is not None and job.seq == seq:
                return when
            heapq.heappop(self._heap)  # stale entry: cancelled or rescheduled
        return None

    async def run(self) -> None:
        """Fire deadlines as they come, and drain the queue, until cancelled."""
        draining = asyncio.create_task(self._drain(), name="kubepam queue")
        try:
            await self._deadlines()
        finally:
            draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await draining

    def _start(
        self, key: Hashable, job: _Job, run: Callable[[Hashable, _Job], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None]:
        context = contextvars.copy_context()  # the scheduler's own, plus the job's fence
        if job.fence is not None:
            context.run(fencing.bind, job.fence)
        task = asyncio.create_task(run(key, job), context=context)
        task.kubepam_fenced = job.fenced  # type: ignore[attr-defined]
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _drain(self) -> None:
        while True:
            if not self._queued:
                self._queue_wake.clear()
                await self._queue_wake.wait()
                continue
            await self._queue_slots.acquire()
            if not self._queued:  # dropped while waiting for the slot
                self._queue_slots.release()
                continue
            key = next(iter(self._queued))
            task = self._start(key, self._queued.pop(key), self._attempt)
            # released when the task ends, even if it is cancelled before it starts (leadership lost)
            task.add_done_callback(lambda _: self._queue_slots.release())

    async def _deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            when = self._next()
            if when is None:
                await self._wake.wait()
                continue
            delay = (when - self._clock()).total_seconds()
            if delay > 0:
                handle = loop.call_later(delay, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    handle.cancel()
                continue
            _, seq, key = heapq.heappop(self._heap)
            job = self._jobs.get(key)
            if job is None or job.seq != seq:
                continue
            del self._jobs[key]
            metrics.record_deadline_started(job.when, self._clock())
            self._start(key, job, self._fire)

    async def _fire(self, key: Hashable, job: _Job) -> None:
        async with self._limit:
            await self._attempt(key, job)

    async def _attempt(self, key: Hashable, job: _Job) -> None:
        """Run a job; one that raises is retried as a deadline with backoff (unless rescheduled)."""
        try:
            await job.action()
            self.fired += 1
        except asyncio.CancelledError:
            raise
        except fencing.Fenced:
            log.info("scheduled action %s dropped: this replica no longer leads", key)
        except Exception:
            delay = self._backoff[min(job.attempts, len(self._backoff) - 1)]
            log.exception(
                "scheduled action %s failed (attempt %d); retrying in %ss", key, job.attempts + 1, delay
            )
            if key not in self._jobs:  # not rescheduled meanwhile
                retry = _Job(
                    self._clock() + timedelta(seconds=delay),
                    next(self._seq),
                    job.action,
                    job.attempts + 1,
                    job.fence,
                )
                self._jobs[key] = retry
                heapq.heappush(self._heap, (retry.when, retry.seq, key))
                self._wake.set()

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await task
