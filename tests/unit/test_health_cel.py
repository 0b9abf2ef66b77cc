"""The Flux health checks (charts/kubepam/health/flux-health-checks.yaml) evaluated with cel-python the
way kustomize-controller evaluates spec.healthCheckExprs, on the Argo CD scripts' test objects: they
agree with the Lua (Healthy = Current, Progressing and Suspended = InProgress, Degraded = Failed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from celpy.evaluation import CELEvalError

from kubepam.cel import evaluate, to_cel
from tests.unit.test_health_lua import CASES, CHECKS, HEALTH, KINDS

FLUX = yaml.safe_load((HEALTH / "flux-health-checks.yaml").read_text())
EXPRS = {item["kind"]: item for item in FLUX["spec"]["healthCheckExprs"]}
EXPECTED = {
    "Healthy": "Current",
    "Progressing": "InProgress",
    "Suspended": "InProgress",
    "Degraded": "Failed",
}
# Flux compares observedGeneration before any expression: a finished Checkout edited afterwards (the
# operator never reconciles it again) stays InProgress there, where the Argo CD script reads its phase first.
FLUX_GENERATION_GATE = {("Checkout", "testdata/healthy_expired_edited_later.yaml")}


def flux_status(kind: str, obj: dict[str, Any]) -> str:
    """kustomize-controller's order: the observedGeneration gate, then inProgress, failed, current; none
    holding is InProgress. The object's top-level fields are the variables; an evaluation error (a field
    that is not there) is "Error", on which Flux keeps polling until its timeout."""
    check = EXPRS[kind]
    status, meta = obj.get("status") or {}, obj.get("metadata") or {}
    gate = "observedGeneration" in status and "generation" in meta
    if gate and status["observedGeneration"] != meta["generation"]:
        return "InProgress"
    activation = {key: to_cel(value) for key, value in obj.items()}
    for key, outcome in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if not check.get(key):
            continue
        value = evaluate(check[key], activation)
        if isinstance(value, CELEvalError):
            return "Error"
        if bool(value):
            return outcome
    return "InProgress"


def test_one_check_per_kind_for_the_kubepam_api() -> None:
    assert FLUX["kind"] == "Kustomization"
    assert set(EXPRS) == KINDS
    assert len(EXPRS) == len(FLUX["spec"]["healthCheckExprs"])
    for item in EXPRS.values():
        assert item["apiVersion"] == "kubepam.io/v1alpha1"
        assert set(item) == {"apiVersion", "kind", "inProgress", "failed", "current"}


@pytest.mark.parametrize(("kind", "path", "expected"), CASES, ids=[f"{k}/{p}" for k, p, _ in CASES])
def test_flux_agrees_with_argo(kind: str, path: str, expected: dict[str, str]) -> None:
    obj = yaml.safe_load((CHECKS / kind / path).read_text())
    got = flux_status(kind, obj)
    if "status" not in obj:
        # No status yet: `status` is not a variable. cel-go (Flux) fails the evaluation and keeps polling;
        # cel-python's has() reads the unbound variable as absent, so inProgress holds. Waiting, both.
        assert expected["status"] == "Progressing"
        assert got in {"Error", "InProgress"}
    elif (kind, path) in FLUX_GENERATION_GATE:
        assert expected["status"] == "Healthy"
        assert got == "InProgress"
    else:
        assert got == EXPECTED[expected["status"]]


def test_every_expression_is_exercised() -> None:
    """Each kind reaches every outcome its Lua reaches, so no expression goes untested."""
    reached: dict[str, set[str]] = {}
    for kind, path, _ in CASES:
        obj = yaml.safe_load((CHECKS / kind / path).read_text())
        reached.setdefault(kind, set()).add(flux_status(kind, obj))
    for kind, outcomes in reached.items():
        assert {"Current", "InProgress"} <= outcomes, kind
    assert all(
        "Failed" in reached[k]
        for k in KINDS - {"Checkout", "SSHCertificateRequest", "X509CertificateRequest"}
    )


def test_a_denial_reads_current_although_the_operator_marks_it_stalled() -> None:
    """kstatus alone would call a Denied Checkout or certificate request Failed (its Stalled condition);
    the expressions read the phase first."""
    for kind in ("Checkout", "SSHCertificateRequest", "X509CertificateRequest"):
        obj = yaml.safe_load((CHECKS / kind / "testdata" / "healthy_denied.yaml").read_text())
        stalled = [c for c in obj["status"]["conditions"] if c["type"] == "Stalled"]
        assert stalled[0]["status"] == "True"
        assert flux_status(kind, obj) == "Current"


def test_expressions_use_only_what_flux_offers() -> None:
    """No optional syntax (?.): cel-python parses none, and Flux's examples guard fields with has()."""
    text = Path(HEALTH / "flux-health-checks.yaml").read_text()
    assert ".?" not in text and "orValue" not in text
