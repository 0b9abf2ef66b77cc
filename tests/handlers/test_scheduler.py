"""The one deadline scheduler: wakes at each deadline (no polling), replaces rescheduled keys,
cancels, and retries failed actions with backoff until they succeed."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from datetime import UTC, datetime, timedelta

from kubepam.adapters import fencing
from kubepam.services.scheduler import Scheduler


def now() -> datetime:
    return datetime.now(UTC)


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await scheduler.close()


async def test_actions_fire_in_deadline_order_close_to_their_deadline() -> None:
    scheduler = Scheduler(now)
    fired: list[tuple[str, float]] = []
    start = now()

    def action(name: str) -> object:
        async def run() -> None:
            fired.append((name, (now() - start).total_seconds()))

        return run

    scheduler.schedule("b", start + timedelta(milliseconds=120), action("b"))  # type: ignore[arg-type]
    scheduler.schedule("a", start + timedelta(milliseconds=60), action("a"))  # type: ignore[arg-type]
    await run_for(scheduler, 0.3)
    assert [n for n, _ in fired] == ["a", "b"]
    assert 0.055 <= fired[0][1] < 0.25 and 0.115 <= fired[1][1] < 0.3  # never early; late only by load


async def test_reschedule_replaces_and_cancel_removes() -> None:
    scheduler = Scheduler(now)
    fired: list[str] = []

    async def mark() -> None:
        fired.append("x")

    scheduler.schedule("k", now() + timedelta(milliseconds=30), mark)
    scheduler.schedule("k", now() + timedelta(milliseconds=80), mark)  # moved later: fires once
    scheduler.schedule("gone", now() + timedelta(milliseconds=20), mark)
    scheduler.cancel("gone")
    await run_for(scheduler, 0.05)
    assert fired == []
    await run_for(scheduler, 0.1)
    assert fired == ["x"] and len(scheduler) == 0


async def test_an_earlier_deadline_added_later_wakes_the_loop() -> None:
    scheduler = Scheduler(now)
    fired: list[str] = []

    async def mark() -> None:
        fired.append("early")

    task = asyncio.create_task(scheduler.run())
    scheduler.schedule("late", now() + timedelta(hours=1), mark)
    await asyncio.sleep(0.01)
    scheduler.schedule("early", now() + timedelta(milliseconds=20), mark)
    await asyncio.sleep(0.1)
    task.cancel()
    assert fired == ["early"]


async def test_failed_actions_are_retried_until_they_succeed() -> None:
    scheduler = Scheduler(now, backoff=(0.02, 0.04))
    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("backend down")

    scheduler.schedule("rotate", now(), flaky)
    await run_for(scheduler, 0.3)
    assert len(attempts) == 3 and scheduler.fired == 1 and len(scheduler) == 0


async def test_a_waiting_deadline_holds_the_fence_of_its_context_and_nothing_else() -> None:
    """Scheduled from a kopf handler, a job must not keep the handler's context alive (kopf's cause in a
    context variable holds the whole object): only the fence goes with it, and is in force when it runs."""
    handler_cause: contextvars.ContextVar[object] = contextvars.ContextVar("handler_cause")
    scheduler = Scheduler(now)
    seen: list[tuple[bool, object]] = []

    class Body:  # stands for kopf's cause and the object body it holds
        pass

    async def step() -> None:
        seen.append((fencing.is_fenced(), handler_cause.get(None)))

    def in_handler() -> weakref.ref[Body]:
        body = Body()
        handler_cause.set(body)
        token = fencing.bind(lambda: True)
        try:
            scheduler.schedule("expiry", now() + timedelta(milliseconds=30), step)
        finally:
            fencing.unbind(token)
        return weakref.ref(body)

    body = contextvars.copy_context().run(in_handler)
    gc.collect()
    assert body() is None  # the handler is done: nothing of its context is kept by the waiting job
    await run_for(scheduler, 0.2)
    assert seen == [(True, None)]


async def test_the_queue_runs_first_in_first_out_a_bounded_number_at_once() -> None:
    scheduler = Scheduler(now, queue_concurrency=2)
    running, most, order = 0, 0, []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            order.append(name)
            await asyncio.sleep(0.02)
            running -= 1

        return run

    for name in ("a", "b", "c", "d", "e"):
        scheduler.soon(name, job(name))
    scheduler.soon("a", job("a again"))  # already waiting: keeps its place, runs once
    assert scheduler.queued() == 5
    await run_for(scheduler, 0.3)
    assert order == ["a", "b", "c", "d", "e"] and most == 2 and scheduler.queued() == 0


async def test_a_deadline_never_waits_behind_a_full_queue() -> None:
    scheduler = Scheduler(now, queue_concurrency=1)
    release = asyncio.Event()
    fired_at: list[float] = []

    async def slow() -> None:
        await release.wait()

    async def expiry() -> None:
        fired_at.append((now() - start).total_seconds())

    start = now()
    for i in range(100):
        scheduler.soon(i, slow)
    scheduler.schedule("expiry", start + timedelta(milliseconds=50), expiry)
    await run_for(scheduler, 0.2)
    assert len(fired_at) == 1 and fired_at[0] < 0.15 and scheduler.queued() == 99


async def test_a_queued_job_that_fails_is_retried_and_a_fenced_one_dropped_with_leadership() -> None:
    scheduler = Scheduler(now, queue_concurrency=1, backoff=(0.02,))
    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 2:
            raise RuntimeError("API down")

    async def never() -> None:
        raise AssertionError("ran after leadership ended")

    scheduler.soon("flaky", flaky)
    token = fencing.bind(lambda: True)
    try:
        scheduler.soon("fenced", never)
        scheduler.soon("flaky", never)  # the same key is already waiting: not queued twice
    finally:
        fencing.unbind(token)
    assert scheduler.drop_fenced() == 1 and scheduler.queued() == 1
    await run_for(scheduler, 0.2)
    assert len(attempts) == 2 and scheduler.fired == 1


async def test_queue_slots_come_back_when_queued_work_is_cancelled_before_it_starts() -> None:
    scheduler = Scheduler(now, queue_concurrency=1)
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)

    token = fencing.bind(lambda: True)
    try:
        scheduler.soon("fenced", lambda: work("fenced"))
    finally:
        fencing.unbind(token)
    runner = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0)  # the drain starts the fenced job's task ...
    await asyncio.sleep(0)
    scheduler.drop_fenced()  # ... and leadership ends before it runs
    scheduler.soon("next", lambda: work("next"))
    await asyncio.sleep(0.05)
    runner.cancel()
    await scheduler.close()
    assert ran[-1:] == ["next"]  # the one slot was given back
