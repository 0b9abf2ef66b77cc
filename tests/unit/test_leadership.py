"""Leader election decisions, table-driven: who may take the Lease, and how long a leader acts."""

from __future__ import annotations

import pytest

from kubepam.domain.leadership import Observation, Record, Timing, may_take, observe, still_leading

T = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
HELD_BY_B = Record("b", "7", 0)


@pytest.mark.parametrize(
    ("record", "seen_at", "now", "expected"),
    [
        (None, 0, 0, True),  # nobody ever held it
        (Record("", "3", 2), 0, 0, True),  # released on a clean exit
        (Record("a", "3", 0), 0, 0, True),  # mine: renew
        (HELD_BY_B, 100, 100, False),  # someone else's, just seen
        (HELD_BY_B, 100, 114.9, False),  # not yet a whole lease duration unchanged
        (HELD_BY_B, 100, 115, True),  # unchanged for the lease duration: the holder is gone
    ],
)
def test_who_may_take_the_lease(record: Record | None, seen_at: float, now: float, expected: bool) -> None:
    assert may_take(Observation(record, seen_at), "a", T, now) is expected


def test_a_renewal_restarts_the_wait_measured_on_our_own_clock() -> None:
    first = observe(None, HELD_BY_B, 100)
    same = observe(first, HELD_BY_B, 110)
    assert same.seen_at == 100  # nothing changed: keep counting from when we first saw it
    renewed = observe(same, Record("b", "8", 0), 112)
    assert renewed.seen_at == 112 and not may_take(renewed, "a", T, 120)


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [(None, 0, False), (100, 100, True), (100, 109.9, True), (100, 110, False)],
)
def test_a_leader_acts_only_until_its_renew_deadline(last: float | None, now: float, expected: bool) -> None:
    assert still_leading(last, T, now) is expected


def test_the_leader_stops_before_anyone_may_take_over() -> None:
    assert Timing().problems() == []
    assert Timing(lease_duration=10, renew_deadline=10, retry_period=2).problems()
    assert Timing(lease_duration=15, renew_deadline=10, retry_period=10).problems()
