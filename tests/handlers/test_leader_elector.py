"""The leader elector against an in-memory Lease with the API server's optimistic concurrency: one
leader among racing replicas, take-over only after the lease duration, leading lapses by itself when
renewals fail, a clean step-down frees the Lease; and the scheduler drops the leader's deadlines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kubepam.adapters import fencing
from kubepam.domain.leadership import Record, Timing
from kubepam.services.leadership import LeaderElector
from kubepam.services.scheduler import Scheduler

T = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


class FakeLease:
    def __init__(self) -> None:
        self.record: Record | None = None
        self.version = 0
        self.down = False

    async def read(self) -> Record | None:
        if self.down:
            raise RuntimeError("API server unreachable")
        return self.record

    async def write(self, me: str, seen: Record | None, duration: float) -> bool:
        if self.down:
            raise RuntimeError("API server unreachable")
        if (self.record.version if self.record else None) != (seen.version if seen else None):
            return False  # 409: someone wrote first
        self.version += 1
        transitions = (seen.transitions if seen else 0) + (0 if seen is None or seen.holder == me else 1)
        self.record = Record(me, str(self.version), transitions)
        return True

    async def release(self, me: str, seen: Record) -> None:
        if self.record is not None and self.record.holder == me:
            self.version += 1
            self.record = Record("", str(self.version), seen.transitions)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_leader_and_take_over_only_after_the_lease_duration() -> None:
    lease, clock = FakeLease(), Clock()
    a, b = LeaderElector(lease, "a", T, clock), LeaderElector(lease, "b", T, clock)
    await asyncio.gather(a.step(), b.step())
    assert [a.leading(), b.leading()].count(True) == 1
    leader, other = (a, b) if a.leading() else (b, a)
    # the leader dies (no more renewals); the other waits a whole lease duration of an unchanged record
    for _ in range(7):
        clock.now += 2
        await other.step()
    assert not other.leading() and not leader.leading()  # 14 s: the old leader already stopped acting
    clock.now += 2
    await other.step()
    assert other.leading() and lease.record is not None and lease.record.transitions == 1


async def test_leading_lapses_at_the_renew_deadline_when_renewals_fail() -> None:
    lease, clock = FakeLease(), Clock()
    a = LeaderElector(lease, "a", T, clock)
    await a.step()
    assert a.leading()
    lease.down = True
    clock.now += 9.9
    await a.step()
    assert a.leading()
    clock.now += 0.2
    await a.step()
    assert not a.leading() and a.changed.is_set()


async def test_a_clean_step_down_frees_the_lease_at_once() -> None:
    lease, clock = FakeLease(), Clock()
    a, b = LeaderElector(lease, "a", T, clock), LeaderElector(lease, "b", T, clock)
    await a.step()
    await b.step()
    await a.step_down()
    await b.step()
    assert b.leading() and not a.leading()


async def test_deadlines_scheduled_for_the_leader_are_dropped_and_fenced() -> None:
    scheduler = Scheduler(lambda: datetime.now(UTC))
    leading = True
    ran: list[str] = []

    async def job() -> None:
        fencing.check()
        ran.append("leader")

    async def keys() -> None:
        ran.append("keys")

    token = fencing.bind(lambda: leading)
    try:
        scheduler.schedule("expiry", datetime.now(UTC) + timedelta(hours=1), job)
    finally:
        fencing.unbind(token)
    scheduler.schedule("signing-keys", datetime.now(UTC) + timedelta(hours=1), keys)
    assert scheduler.drop_fenced() == 1 and len(scheduler) == 1
    token = fencing.bind(lambda: leading)
    try:
        scheduler.schedule("expiry", datetime.now(UTC), job)
    finally:
        fencing.unbind(token)
    leading = False  # lost before it fired: the job runs fenced and writes nothing
    runner = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.05)
    runner.cancel()
    await scheduler.close()
    assert ran == [] and "expiry" not in [k for k in ("expiry",) if scheduler.deadline(k)]
