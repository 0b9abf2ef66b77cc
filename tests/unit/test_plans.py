"""Plans for connections and roles: the status each state of the world leads to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubepam.domain.conditions import Health
from kubepam.domain.plans import KeysObserved, plan_connection, plan_role, status_patch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
URL_SPEC: dict[str, Any] = {
    "provider": "generic",
    "issuer": "https://ci",
    "jwksUrl": "https://ci/jwks",
    "audiences": ["a"],
    "algorithms": ["RS256"],
}


def test_new_connection_is_draft_and_fetches_keys() -> None:
    plan = plan_connection(URL_SPEC, None, None)
    assert plan.health is Health.RECONCILING
    assert plan.status["phase"] == "Draft"
    assert [a.verb for a in plan.actions] == ["set", "fetch"]


def test_keys_fetched_makes_it_ready_and_active_is_kept() -> None:
    keys = KeysObserved(2, T0, "")
    plan = plan_connection(URL_SPEC, {"phase": "Active"}, keys)
    assert plan.health is Health.READY and plan.reason == "Active"
    assert "phase" not in plan.status  # the operator never writes a phase that is already set
    assert plan.status["keyCount"] == 2 and plan.status["lastRefreshTime"] == "2026-01-01T00:00:00Z"


def test_unreachable_issuer_without_keys_is_reconciling_with_the_error() -> None:
    plan = plan_connection(
        URL_SPEC, {"phase": "Draft"}, KeysObserved(0, None, "GET https://ci/jwks: HTTP 503")
    )
    assert plan.health is Health.RECONCILING and "503" in plan.message


def test_stale_keys_stay_ready_and_show_the_error() -> None:
    plan = plan_connection(URL_SPEC, {"phase": "Draft"}, KeysObserved(1, T0, "timeout"))
    assert plan.health is Health.READY and plan.status["lastRefreshError"] == "timeout"


def test_invalid_connection_is_stalled() -> None:
    plan = plan_connection({"provider": "github", "audiences": ["a"]}, None, None)
    assert plan.health is Health.STALLED and "multi-tenant" in plan.message


def test_role_plan_reports_username() -> None:
    plan = plan_role("ns", "deployer", {"match": [{"conditions": [{"claim": "a", "operator": "exists"}]}]})
    assert plan.status == {"username": "wl_deployer", "blockCount": 1}


def test_status_patch_is_none_when_nothing_changes() -> None:
    plan = plan_role("ns", "deployer", {"match": [{"conditions": [{"claim": "a", "operator": "exists"}]}]})
    first = status_patch(plan, None, 1, T0)
    assert first is not None and first["observedGeneration"] == 1
    assert status_patch(plan, first, 1, T0) is None
    assert status_patch(plan, first, 2, T0) is not None  # a new generation is always acknowledged


def test_references_are_waited_for_only_during_the_grace() -> None:
    from datetime import timedelta

    from kubepam.domain.plans import REFERENCE_GRACE, settling

    meta = {"creationTimestamp": "2026-01-01T00:00:00Z"}
    assert settling(meta, T0 + timedelta(seconds=59))
    assert not settling(meta, T0 + REFERENCE_GRACE)
    assert not settling({}, T0)
