"""Every metric follows Prometheus conventions and has a closed label set; the dashboard in the chart
asks only for metrics that exist."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from kubepam.adapters import metrics
from kubepam.handlers import observed

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "kubepam" / "dashboards" / "kubepam.json"
PACKAGE = ROOT / "operator" / "kubepam"

# Labels that would name a person, an object or an endpoint: never a label (unbounded series).
FORBIDDEN_LABELS = {
    "user",
    "username",
    "person",
    "name",
    "requester",
    "owner",
    "holder",
    "approver",
    "server",
    "account",
    "namespace",
    "project",
    "connection",
    "role",
    "issuer",
    "url",
    "subject",
    "uid",
    "key_id",
    "object",
}
UNITS = ("_seconds", "_bytes", "_total", "_ratio", "_length", "_depth")

# The value set of every label of every metric (metrics.OTHER aside).
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("kubepam_token_request_seconds", "endpoint"): {"token", "validate"},
    ("kubepam_token_requests", "endpoint"): {"token", "validate"},
    ("kubepam_jwks_fetches", "result"): {"ok", "error"},
    ("kubepam_password_rotations", "backend"): set(metrics.BACKENDS),
    ("kubepam_password_rotations", "outcome"): set(metrics.ROTATION_OUTCOMES),
    ("kubepam_password_rotation_retries", "backend"): set(metrics.BACKENDS),
    ("kubepam_jit_disables", "cause"): set(metrics.JIT_DISABLE_CAUSES),
    ("kubepam_jit_disable_lateness_seconds", "backend"): set(metrics.BACKENDS),
    ("kubepam_certificates", "kind"): set(metrics.CERTIFICATE_KINDS),
    ("kubepam_certificates", "source"): set(metrics.CERTIFICATE_SOURCES),
    ("kubepam_certificates", "outcome"): set(metrics.CERTIFICATE_OUTCOMES),
    ("kubepam_reconcile_errors", "kind"): set(metrics.RECONCILED_KINDS),
    ("kubepam_reconcile_errors", "error"): set(metrics.RECONCILE_ERROR_CLASSES),
    ("kubepam_checkouts", "phase"): set(metrics.CHECKOUT_PHASES),
    ("kubepam_jit_accounts", "state"): set(metrics.JIT_STATES),
    ("kubepam_jwks_cache_entries", "state"): set(metrics.JWKS_STATES),
}
# kubepam_token_requests{outcome}: literals of the code, checked by test_token_outcomes_are_literals.
FREE_BUT_LITERAL = {("kubepam_token_requests", "outcome")}


@pytest.fixture
def state() -> Iterator[metrics.State]:
    """Readers that report values outside every set, restored afterwards."""
    saved = metrics.State(**vars(metrics.STATE))
    s = metrics.STATE
    s.checkout_phases = lambda: {"Active": 2, "Queued": 1, "SomethingNew": 4}
    s.checkout_queue_length = lambda: 1
    s.approvals = lambda: metrics.Approvals(3, 42.0)
    s.jit_states = lambda: {"Active": 1, "Disabled": 5}
    s.scheduler = lambda: metrics.SchedulerDepth(7, 2)
    s.jwks = lambda: {"fresh": 1, "stale": 0, "expired": 0, "unavailable": 1}
    s.leader = lambda: True
    yield s
    for key, value in vars(saved).items():
        setattr(s, key, value)


def families() -> list[Metric]:
    return list(metrics.REGISTRY.collect())


def sample_names(family: Metric) -> set[str]:
    """The names a query can use for a family, from its type (not from samples seen so far)."""
    if family.type == "counter":
        return {f"{family.name}_total"}
    if family.type == "histogram":
        return {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {family.name}


def test_names_follow_prometheus_conventions(state: metrics.State) -> None:
    seen = families()
    assert {f.name for f in seen} >= {
        "kubepam_checkouts",
        "kubepam_checkout_queue_length",
        "kubepam_password_rotations",
        "kubepam_password_rotation_retries",
        "kubepam_checkout_expiry_lateness_seconds",
        "kubepam_jit_accounts",
        "kubepam_jit_disable_lateness_seconds",
        "kubepam_certificates",
        "kubepam_approvals_pending",
        "kubepam_approval_oldest_pending_age_seconds",
        "kubepam_reconcile_errors",
        "kubepam_scheduler_queue_depth",
        "kubepam_scheduler_lateness_seconds",
        "kubepam_jwks_cache_entries",
        "kubepam_leader",
    }
    for family in seen:
        assert re.fullmatch(r"kubepam_[a-z][a-z0-9_]*", family.name), family.name
        assert family.documentation.strip(), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client adds it in the exposition
            assert all(s.name.startswith(family.name + "_") for s in family.samples)
        elif family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: a histogram names its unit"
        else:
            assert family.type == "gauge", family.name
            assert not family.name.endswith("_total"), family.name
        if "time" in family.name or "age" in family.name or "latency" in family.name:
            assert family.name.endswith("_seconds"), family.name


def test_no_label_names_a_person_or_an_object(state: metrics.State) -> None:
    for family in families():
        for sample in family.samples:
            assert not set(sample.labels) & FORBIDDEN_LABELS, (family.name, sample.labels)


def exercise_with_hostile_values() -> None:
    metrics.record_token_outcome("token", "Not A Literal / alice")
    metrics.record_rotation("mysql", ok=False, resumed=True)
    metrics.record_rotation("postgresql", ok=True, resumed=False)
    metrics.record_certificate("pgp", "somebody", issued=True)
    metrics.record_certificate("x509", "request", issued=False)
    metrics.record_reconcile_error("servers", ValueError("boom"))
    metrics.record_reconcile_error("checkouts", RuntimeError("boom"))
    now = datetime.now(UTC)
    metrics.record_jit_disabled("ldap", early=False, deadline=now - timedelta(seconds=1), done=now)
    metrics.record_checkout_expired(now - timedelta(seconds=2), now)
    metrics.record_deadline_started(now, now + timedelta(seconds=0.1))


def test_every_label_value_comes_from_a_closed_set(state: metrics.State) -> None:
    exercise_with_hostile_values()
    checked = 0
    for family in families():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label == "le" or (family.name, label) in FREE_BUT_LITERAL:
                    continue
                allowed = LABEL_VALUES.get((family.name, label))
                assert allowed is not None, f"{family.name}{{{label}}}: no value set declared here"
                assert value in allowed | {metrics.OTHER}, (family.name, label, value)
                checked += 1
    assert checked > 50
    token = {
        s.labels["outcome"]
        for f in families()
        if f.name == "kubepam_token_requests"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert "other" in token and not any(" " in v or "/" in v for v in token)


def test_token_outcomes_are_literals_of_the_code() -> None:
    """The token outcome label takes the refusal reason: every one is a string literal in the code."""
    makers = {
        "invalid_request",
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "access_denied",
        "invalid_token",
        "temporarily_unavailable",
        "not_found",
    }
    literal_outcomes = 0
    # the modules a token request passes through (the agent API has its own errors, not counted here)
    token_path = [
        *(PACKAGE / "domain").glob("*.py"),
        PACKAGE / "adapters" / "jwks.py",
        PACKAGE / "adapters" / "jwt_verifier.py",
        PACKAGE / "services" / "workload_identity.py",
    ]
    for path in token_path:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in makers:
                continue
            outcome = node.args[1] if len(node.args) > 1 else None
            for kw in node.keywords:
                if kw.arg == "outcome":
                    outcome = kw.value
            if outcome is None:
                continue
            if path.name == "oauth.py" and isinstance(outcome, ast.Name) and outcome.id == "outcome":
                continue  # the makers themselves pass theirs on
            if isinstance(outcome, ast.Attribute) and outcome.attr == "outcome":
                continue  # passes on the outcome of an error already made
            if isinstance(outcome, ast.JoinedStr) and ast.unparse(outcome) == "f'missing_{exc.claim}'":
                continue  # one of the claims the verifier requires (a list in the code)
            assert isinstance(outcome, ast.Constant) and isinstance(outcome.value, str), (
                f"{path.relative_to(ROOT)}:{node.lineno}: outcome must be a literal"
            )
            literal_outcomes += 1
    assert literal_outcomes > 10


def test_state_gauges_fold_unknown_values_and_report_every_known_one(state: metrics.State) -> None:
    by_name = {f.name: f for f in families()}
    phases = {s.labels["phase"]: s.value for s in by_name["kubepam_checkouts"].samples}
    assert set(phases) == set(metrics.CHECKOUT_PHASES) | {metrics.OTHER}
    assert phases["Active"] == 2 and phases["Queued"] == 1 and phases[metrics.OTHER] == 4
    assert phases["Expired"] == 0
    assert by_name["kubepam_leader"].samples[0].value == 1
    assert by_name["kubepam_scheduler_queue_depth"].samples[0].value == 2
    assert by_name["kubepam_approval_oldest_pending_age_seconds"].samples[0].value == 42.0


def test_state_gauges_without_readers_report_nothing() -> None:
    idle = metrics.StateCollector(metrics.State())
    assert all(not family.samples for family in idle.collect())
    assert {f.name for f in idle.describe()} == {f.name for f in idle.collect()}


def test_the_dashboard_queries_only_metrics_that_exist(state: metrics.State) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = {name for family in families() for name in sample_names(family)}
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if panel["type"] != "row"
    ]
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in re.findall(r"\bkubepam_[a-z0-9_]+", expr)}
    assert used and used <= known, sorted(used - known)
    # and it shows every flow the issue names
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    missing = {f.name for f in families()} - bases
    assert not missing, f"metrics no panel shows: {sorted(missing)}"
    labels = {m for expr in exprs for m in re.findall(r"by \(([^)]*)\)", expr)}
    for group in labels:
        for label in (part.strip() for part in group.split(",")):
            assert label not in FORBIDDEN_LABELS, label


def test_the_observed_indexes_count_without_scanning() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    pending = {
        "phase": "Pending",
        "approvalRequest": {"state": "Pending", "requestedAt": "2026-01-01T00:00:00Z"},
    }
    assert observed.checkout_metrics_index(status=pending) == {
        ("phase", "Pending"): True,
        observed.APPROVAL: created,
    }
    assert observed.WAITING in observed.checkout_metrics_index(status={"phase": "Queued"})
    assert observed.checkout_metrics_index(status={}) == {("phase", "Pending"): True}
    assert observed.jit_metrics_index(status={"phase": "Active"}) == {("phase", "Active"): True}
    index = {
        ("phase", "Active"): ["a", "b"],
        ("phase", "Queued"): ["c"],
        observed.WAITING: ["c"],
        observed.APPROVAL: [created, created + timedelta(seconds=30), None],
    }
    assert observed.phase_counts(index) == {"Active": 2, "Queued": 1}
    ages = observed.approvals(index, created + timedelta(seconds=90))
    assert ages == metrics.Approvals(3, 90.0)
    assert observed.approvals({}, created) == metrics.Approvals(0, 0.0)
