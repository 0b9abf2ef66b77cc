"""/metrics on the real control plane: a checkout that expires (and rotates), a JIT account whose window
ends and an SSH certificate each move their series on the operator's own scrape; no label carries a
person's or an object's name. And the chart's ServiceMonitor and dashboard render only when asked."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from kubepam.adapters import metrics
from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubepam_object,
    team_namespace,
    wait_for,
    wait_status,
)
from tests.unit.test_metrics_names import FORBIDDEN_LABELS, FREE_BUT_LITERAL, LABEL_VALUES

ROOT = Path(__file__).resolve().parents[2]
NS = "metrics"
TARGET = "metrics-target"  # where the JIT account's group applies (never NS)
ACCOUNT = "ops_metrics"

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> Series:
    with urllib.request.urlopen(f"{operator.url}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, NS)


@pytest.fixture(scope="module")
def env(plane: ControlPlane, operator: OperatorProcess) -> Iterator[None]:
    for ns in (NS, TARGET):
        team_namespace(plane, ns)
    apply(
        plane,
        "devops",
        obj(
            "Project",
            "ops",
            {
                "sharedAccounts": [{"name": ACCOUNT, "backend": "kubernetes"}],
                "jit": {
                    "enabled": True,
                    "backend": "kubernetes",
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "1h",
                    "namespaces": [TARGET],
                },
            },
        ),
        obj("CheckoutPolicy", "ops", {"project": "ops", "maxDuration": "30m"}),
        obj("Server", "web-1", {"project": "ops", "hostname": "web-1.metrics.test"}),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "all", "projects": ["ops"], "accounts": ["*"], "servers": {}}],
            },
        ),
    )
    assert wait_for(plane, "devops", "project/ops", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "devops", "checkoutpolicy/ops", "condition=Ready", NS).returncode == 0
    deadline = time.monotonic() + 20  # the project's JIT settings become the admission parameter
    while time.monotonic() < deadline:
        if plane.kubectl("admin", "get", "configmap", "ops-jit", "-n", NS, check=False).returncode == 0:
            break
        time.sleep(0.2)
    time.sleep(1)
    yield


def ssh_public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_a_checkout_a_rotation_a_jit_expiry_and_a_certificate_move_their_series(
    plane: ControlPlane, operator: OperatorProcess, env: None
) -> None:
    before = scrape(operator)
    assert value(before, "kubepam_leader") == 1  # a single replica leads
    # the JIT window is the slowest (1m at least): start it first, the rest runs meanwhile
    apply(
        plane,
        "alice",
        obj(
            "JitAccount",
            "alice",
            {
                "project": "ops",
                "owner": "alice",
                "groups": ["view"],
                "reason": "CHG-7 look at the metrics",
                "duration": "1m",
            },
        ),
    )
    jit = wait_status(plane, "jitaccount", "alice", NS, lambda s: s.get("phase") == "Active")
    active = scrape(operator)
    assert (
        value(active, "kubepam_jit_accounts", state="Active")
        >= value(before, "kubepam_jit_accounts", state="Active") + 1
    )

    apply(
        plane,
        "alice",
        obj(
            "Checkout",
            "alice-1",
            {
                "project": "ops",
                "account": ACCOUNT,
                "requester": "alice",
                "reason": "metrics test",
                "duration": "10s",
            },
        ),
    )
    apply(
        plane,
        "alice",
        obj(
            "SSHCertificateRequest",
            "alice-ssh",
            {"project": "ops", "server": "web-1", "publicKey": ssh_public_key(), "requester": "alice"},
        ),
    )
    cert = wait_status(plane, "sshcertificaterequest", "alice-ssh", NS, lambda s: s.get("phase"))
    assert cert["phase"] == "Issued", cert
    held = wait_status(plane, "checkout", "alice-1", NS, lambda s: s.get("phase") == "Active")
    assert held["holder"] == "alice"
    during = scrape(operator)
    assert value(during, "kubepam_checkouts", phase="Active") >= 1

    done = wait_status(plane, "checkout", "alice-1", NS, lambda s: s.get("phase") == "Expired", timeout=40)
    assert done["rotation"]["completedAt"]
    wait_status(plane, "jitaccount", "alice", NS, lambda s: s.get("phase") == "Disabled", timeout=90)
    time.sleep(0.5)  # the index sees the status the operator just wrote
    after = scrape(operator)

    def moved(name: str, by: float = 1, **labels: str) -> None:
        was, now = value(before, name, **labels), value(after, name, **labels)
        assert now >= was + by, f"{name}{labels}: {was} -> {now}"

    moved("kubepam_certificates_total", kind="ssh", source="request", outcome="issued")
    moved("kubepam_password_rotations_total", backend="kubernetes", outcome="success")
    moved("kubepam_checkout_expiry_lateness_seconds_count")
    moved("kubepam_checkouts", phase="Expired")
    moved("kubepam_jit_disables_total", cause="expired")
    moved("kubepam_jit_disable_lateness_seconds_count", backend="kubernetes")
    moved("kubepam_jit_accounts", state="Disabled")
    moved("kubepam_scheduler_lateness_seconds_count", by=2)  # the checkout's and the JIT's deadlines
    assert value(after, "kubepam_leader") == 1
    # the deadlines fire on time: well under the scheduler's first retry
    late = value(after, "kubepam_checkout_expiry_lateness_seconds_sum") - value(
        before, "kubepam_checkout_expiry_lateness_seconds_sum"
    )
    assert 0 <= late < 10, late
    assert jit["expiresAt"]


def test_no_series_carries_a_person_or_an_object_name(operator: OperatorProcess, env: None) -> None:
    series = scrape(operator)
    names = {"alice", "ops", NS, TARGET, ACCOUNT, "web-1", "alice-1", "alice-ssh", "alice_jit"}
    declared = {family for family, _ in LABEL_VALUES}
    for name, labels in series:
        if not name.startswith("kubepam_"):
            continue
        stripped = [name.removesuffix(s) for s in ("_total", "_bucket", "_sum", "_count", "_created")]
        base = next((f for f in stripped if f in declared), name)
        for label, val in labels:
            assert label not in FORBIDDEN_LABELS, (name, label)
            assert val not in names, (name, label, val)
            if label == "le" or (base, label) in FREE_BUT_LITERAL:
                continue
            allowed = LABEL_VALUES.get((base, label))
            assert allowed is not None, (name, label)
            assert val in allowed | {metrics.OTHER}, (name, label, val)


def render(plane: ControlPlane, *values: str) -> list[dict[str, Any]]:
    sets = [arg for v in values for arg in ("--set", v)]
    out = subprocess.run(
        [
            str(plane.bin_dir / "helm"),
            "template",
            "kubepam",
            str(ROOT / "charts" / "kubepam"),
            "-n",
            "kubepam-system",
            "--kube-version",
            "1.36.3",
            *sets,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_chart_renders_a_service_monitor_and_the_dashboard_only_when_asked(plane: ControlPlane) -> None:
    plain = render(plane)
    assert not [d for d in plain if d["kind"] == "ServiceMonitor"]
    assert not [d for d in plain if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    docs = render(
        plane,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.serviceMonitor.interval=15s",
        "metrics.dashboard.enabled=true",
    )
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "broker", "path": "/metrics", "interval": "15s", "scheme": "http"}
    # it selects the broker Service, whose port "broker" reaches every operator pod
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "kubepam-broker"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert any(p["name"] == "broker" for p in service["spec"]["ports"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kubepam-system"]}
    (dashboard,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kubepam-dashboard"
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "charts" / "kubepam" / "dashboards" / "kubepam.json").read_text())
    assert json.loads(dashboard["data"]["kubepam.json"]) == shipped
    tls = render(plane, "metrics.serviceMonitor.enabled=true", "broker.tls.secretName=broker-tls")
    (monitor,) = [d for d in tls if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    bad = subprocess.run(
        [
            str(plane.bin_dir / "helm"),
            "template",
            "x",
            str(ROOT / "charts" / "kubepam"),
            "--set",
            "metrics.serviceMonitor.interval=often",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "interval" in bad.stderr
