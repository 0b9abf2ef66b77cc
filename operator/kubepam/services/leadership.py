"""The leader elector: one loop per replica that tries to take or renew the leader Lease every retry
period, says when this replica starts and stops leading, and answers `leading()` for the fence.

Leading ends when a renewal has not succeeded for the renew deadline (a failed API call, a lost race,
a stalled process): the loop then reports the loss, and the control plane of this replica stops, before
the lease duration after which another replica may take over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from kubepam.domain.leadership import Observation, Record, Timing, may_take, observe, still_leading

log = logging.getLogger("kubepam.leader")


class LeaseStore(Protocol):
    async def read(self) -> Record | None: ...
    async def write(self, me: str, seen: Record | None, duration: float) -> bool: ...
    async def release(self, me: str, seen: Record) -> None: ...


class LeaderElector:
    def __init__(
        self,
        lease: LeaseStore,
        identity: str,
        timing: Timing,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lease = lease
        self.identity = identity
        self._timing = timing
        self._clock = clock
        self._observed: Observation | None = None
        self._renewed_at: float | None = None
        self.changed = asyncio.Event()  # set whenever leading() may have flipped
        self.holder = ""
        self.became_leader_at: float | None = None

    def leading(self) -> bool:
        return still_leading(self._renewed_at, self._timing, self._clock())

    async def step(self) -> None:
        """One attempt: read, and take or renew if allowed."""
        was = self.leading()
        try:
            record = await self._lease.read()
            now = self._clock()
            self._observed = observe(self._observed, record, now)
            self.holder = record.holder if record else ""
            if may_take(self._observed, self.identity, self._timing, now):
                started = self._clock()
                if await self._lease.write(self.identity, record, self._timing.lease_duration):
                    self._renewed_at = started  # counted from before the write: conservative
                    self.holder = self.identity
                    if not was:
                        self.became_leader_at = started
                        log.info("%s is now the leader", self.identity)
        except Exception as exc:  # an API outage must not kill the loop; leading lapses by itself
            log.warning("leader election: %s", exc)
        if self.leading() != was:
            if was:
                log.warning(
                    "%s stopped leading (no renewal for %.0fs)", self.identity, self._timing.renew_deadline
                )
            self.changed.set()

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self._wait())

    def _wait(self) -> float:
        if self._renewed_at is not None and self.leading():
            # wake up in time to notice a lapse right at the renew deadline
            lapse = self._renewed_at + self._timing.renew_deadline - self._clock()
            return max(0.05, min(self._timing.retry_period, lapse))
        return self._timing.retry_period

    async def step_down(self) -> None:
        """On a clean exit, free the Lease so another replica takes over without waiting."""
        if not self.leading():
            return
        self._renewed_at = None
        try:
            record = await self._lease.read()
            if record is not None:
                await self._lease.release(self.identity, record)
        except Exception as exc:
            log.warning("leader election: could not release the lease: %s", exc)
        self.changed.set()
