"""The conditions helper: kstatus-consistent Ready/Reconciling/Stalled, stable transition times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubepam.domain.conditions import Health, condition_status, health_conditions, same_conditions

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def by_type(conds: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(c["type"]): c for c in conds}


def test_each_health_sets_all_three_conditions_consistently() -> None:
    for health, expected in [
        (Health.READY, ("True", "False", "False")),
        (Health.RECONCILING, ("False", "True", "False")),
        (Health.STALLED, ("False", "False", "True")),
    ]:
        conds = by_type(health_conditions(None, health, "R", "m", 3, T0))
        assert (
            conds["Ready"]["status"],
            conds["Reconciling"]["status"],
            conds["Stalled"]["status"],
        ) == expected
        assert all(c["observedGeneration"] == 3 for c in conds.values())


def test_transition_time_kept_while_status_unchanged() -> None:
    first = health_conditions(None, Health.READY, "A", "m", 1, T0)
    again = health_conditions(first, Health.READY, "B", "other message", 2, T0 + timedelta(hours=1))
    assert by_type(again)["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = health_conditions(again, Health.STALLED, "Bad", "m", 3, T0 + timedelta(hours=2))
    assert by_type(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T02:00:00Z"
    assert condition_status(flipped, "Ready") == "False"


def test_other_condition_types_are_kept() -> None:
    conds = health_conditions([{"type": "KeysFetched", "status": "True"}], Health.READY, "A", "m", 1, T0)
    assert "KeysFetched" in by_type(conds)


def test_same_conditions_ignores_times_only() -> None:
    a = health_conditions(None, Health.READY, "A", "m", 1, T0)
    b = health_conditions(None, Health.READY, "A", "m", 1, T0 + timedelta(days=1))
    assert same_conditions(a, b)
    assert not same_conditions(a, health_conditions(None, Health.READY, "A", "changed", 1, T0))
