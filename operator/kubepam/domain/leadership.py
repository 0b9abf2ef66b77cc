"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection decides it. Pure:
the caller passes its monotonic clock readings.

- A candidate may take the Lease when nobody holds it, when it holds it itself, or when the record it
  observes has not changed for a whole lease duration (measured on the candidate's own clock from the
  moment it first saw that record, never by comparing timestamps written by other machines).
- A leader acts only while its last successful renewal is younger than the renew deadline, which is
  shorter than the lease duration: it stops acting before anyone else may take over (fencing by time),
  and every write it makes after that is refused by the fence.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0  # others wait this long after the last change they saw
    renew_deadline: float = 10.0  # the leader stops acting when it has not renewed for this long
    retry_period: float = 2.0  # how often candidates try and the leader renews

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            out.append("leader election needs 0 < retry period < renew deadline < lease duration")
        return out


@dataclass(frozen=True)
class Record:
    """What the Lease says, as last read."""

    holder: str
    version: str  # resourceVersion: any change restarts the others' wait
    transitions: int


@dataclass(frozen=True)
class Observation:
    record: Record | None
    seen_at: float  # monotonic time this record version was first observed


def observe(previous: Observation | None, record: Record | None, now: float) -> Observation:
    """Remember when a record version was first seen (a renewal by the holder changes the version)."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def may_take(observation: Observation, me: str, timing: Timing, now: float) -> bool:
    record = observation.record
    if record is None or not record.holder or record.holder == me:
        return True
    return now >= observation.seen_at + timing.lease_duration


def still_leading(last_renewal: float | None, timing: Timing, now: float) -> bool:
    return last_renewal is not None and now < last_renewal + timing.renew_deadline
