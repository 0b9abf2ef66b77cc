"""Foundation on the real control plane: CRDs served and explained, schema and CEL rules enforced by
the API server, manifests and the Helm chart install, the operator's RBAC is least privilege, and
the operator sets Ready on every example."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam.dev.cluster import ControlPlane
from kubepam.dev.install import apply_examples
from kubepam.domain.kinds import PLURALS, RECORD_PLURALS
from tests.e2e.harness import OperatorProcess, apply, kubectl_json, team_namespace, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_control_plane_starts_from_the_cached_build_within_a_minute(plane: ControlPlane) -> None:
    assert 0 < plane.startup_seconds < 60
    version = plane.kubectl("admin", "version", "-o", "json").stdout
    assert '"gitVersion": "v1.36.3"' in version


def test_every_crd_is_established(plane: ControlPlane) -> None:
    crds = kubectl_json(plane, "admin", "get", "crd", "-l", "app.kubernetes.io/name=kubepam")
    established = {
        item["spec"]["names"]["kind"]
        for item in crds["items"]
        if any(c["type"] == "Established" and c["status"] == "True" for c in item["status"]["conditions"])
    }
    assert established == set(PLURALS) | set(RECORD_PLURALS)


def test_kubectl_explain_prints_field_descriptions(plane: ControlPlane) -> None:
    raw = plane.kubectl("admin", "explain", "workloadconnection.spec").stdout
    out = " ".join(raw.split())  # explain wraps lines
    assert "Accepted `aud` values" in out
    assert "provider <string> -required-" in out
    assert (
        "jwksUrl <string> Where the issuer publishes its signing keys. Defaults from the provider preset"
        in out
    )


def test_manifests_apply_again_without_change(plane: ControlPlane) -> None:
    out = plane.kubectl("admin", "apply", "--server-side", "-f", str(ROOT / "manifests")).stdout
    assert "deployment.apps/kubepam-operator serverside-applied" in out
    deployment = kubectl_json(plane, "admin", "get", "deployment", "-n", "kubepam-system", "kubepam-operator")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True and container["capabilities"]["drop"] == ["ALL"]


def _obj(kind: str, name: str, spec: dict[str, Any], namespace: str = "schema-checks") -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


GITHUB_BOUND = {
    "provider": "github",
    "audiences": ["a"],
    "claims": [{"claim": "repository", "operator": "equals", "value": "acme/x"}],
}

# (object, text the API server's refusal must contain: the field, and the rule)
REJECTED: list[tuple[dict[str, Any], str]] = [
    (
        _obj("Server", "bad-os", {"project": "p", "hostname": "h", "os": "plan9"}),
        'spec.os: Unsupported value: "plan9"',
    ),
    (_obj("Server", "no-host", {"project": "p"}), "spec.hostname: Required value"),
    (
        _obj("WorkloadConnection", "unbound", {"provider": "github", "audiences": ["a"]}),
        "spec.claims must bind a GitHub tenant",
    ),
    (
        _obj(
            "WorkloadConnection",
            "both-keys",
            {**GITHUB_BOUND, "jwksUrl": "https://x/jwks", "jwks": {"keys": [{"kty": "EC"}]}},
        ),
        "give either spec.jwksUrl or spec.jwks, not both",
    ),
    (
        _obj("WorkloadConnection", "long-ttl", {**GITHUB_BOUND, "accessTokenTTL": "13h"}),
        "spec.accessTokenTTL must be between 1m and 12h",
    ),
    (
        _obj(
            "WorkloadConnection",
            "private-jwk",
            {**GITHUB_BOUND, "jwks": {"keys": [{"kty": "EC", "d": "secret"}]}},
        ),
        "spec.jwks must contain public keys only",
    ),
    (
        _obj("WorkloadConnection", "plain-http", {**GITHUB_BOUND, "jwksUrl": "http://evil.example/jwks"}),
        "spec.jwksUrl must be https://",
    ),
    (
        _obj(
            "WorkloadConnection",
            "no-value",
            {**GITHUB_BOUND, "claims": [{"claim": "repository", "operator": "equals"}]},
        ),
        "value is required for operators equals",
    ),
    (
        _obj("WorkloadRole", "r" * 30, {"match": [{"conditions": [{"claim": "a", "operator": "exists"}]}]}),
        "metadata.name must be at most 29 characters",
    ),
    (
        _obj(
            "JitAccount",
            "long",
            {
                "project": "p",
                "owner": "alexandrina_longe",
                "groups": ["view"],
                "reason": "CHG-1",
                "duration": "1h",
            },
        ),
        "must be at most 20 characters",
    ),
    (
        _obj(
            "JitAccount",
            "short-reason",
            {"project": "p", "owner": "alice", "groups": ["view"], "reason": "x", "duration": "1h"},
        ),
        "spec.reason: Invalid value",
    ),
    (
        _obj("Project", "ttl", {"certificates": {"defaultTTL": "2h", "maxTTL": "1h"}}),
        "spec.certificates.defaultTTL must not exceed maxTTL",
    ),
    (
        _obj("CheckoutPolicy", "include", {"project": "p", "scope": "Include"}),
        "spec.accounts must list accounts when spec.scope is Include or Exclude",
    ),
    (
        _obj(
            "SSHCertificateRequest",
            "private",
            {"project": "p", "requester": "a", "publicKey": "-----BEGIN OPENSSH PRIVATE KEY-----"},
        ),
        "spec.publicKey must be a public key",
    ),
]


@pytest.mark.parametrize(("obj", "message"), REJECTED, ids=[o["metadata"]["name"] for o, _ in REJECTED])
def test_api_server_rejects_schema_and_cel_violations_naming_the_field(
    plane: ControlPlane, obj: dict[str, Any], message: str
) -> None:
    plane.kubectl("admin", "create", "namespace", "schema-checks", check=False)
    result = apply(plane, "admin", obj, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    missing = plane.kubectl(
        "admin", "get", obj["kind"].lower(), obj["metadata"]["name"], "-n", "schema-checks", check=False
    )
    assert missing.returncode != 0  # nothing was stored


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "secrets", "default", False),
        ("list", "secrets", "kube-system", False),
        ("get", "secrets/kubepam-signing-keys", "kubepam-system", True),
        ("get", "secrets/some-other-secret", "kubepam-system", False),
        ("list", "secrets", "kubepam-system", False),
        ("get", "secrets", "team-rbac", True),  # a team namespace that opted in
        ("patch", "workloadconnections.kubepam.io/status", "team-rbac", True),
        ("create", "workloadconnections.kubepam.io", "team-rbac", False),
        ("create", "checkouts.kubepam.io", "team-rbac", True),  # the broker's workload checkouts
        ("create", "checkouts.kubepam.io", "default", False),  # only where a namespace opted in
        ("delete", "projects.kubepam.io", "team-rbac", False),
        ("create", "clusterrolebindings", "", False),
        ("impersonate", "users", "", False),
        ("*", "*", "", False),
    ],
)
def test_operator_identity_has_least_privilege(
    plane: ControlPlane, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    team_namespace(plane, "team-rbac")
    args = ["auth", "can-i", verb, resource] + (["-n", namespace] if namespace else [])
    result = plane.kubectl("operator", *args, check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stdout + result.stderr


def test_operator_identity_cannot_actually_read_other_secrets(plane: ControlPlane) -> None:
    plane.kubectl(
        "admin",
        "create",
        "secret",
        "generic",
        "not-yours",
        "-n",
        "default",
        "--from-literal=k=v",
        check=False,
    )
    result = plane.kubectl("operator", "get", "secret", "not-yours", "-n", "default", check=False)
    assert result.returncode != 0 and "Forbidden" in result.stderr


def test_examples_apply_and_the_operator_sets_ready_on_each(
    plane: ControlPlane, operator: OperatorProcess
) -> None:
    examples = ROOT / "manifests" / "examples"
    apply_examples(
        lambda *a, **kw: plane.kubectl("admin", *a, **kw),
        examples,
        lambda *a, **kw: plane.kubectl("alice", *a, **kw),
    )
    objects = [
        doc
        for f in sorted(examples.rglob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc and doc["apiVersion"].startswith("kubepam.io/")
    ]
    assert {o["kind"] for o in objects} == set(PLURALS)
    for obj in objects:
        what = f"{PLURALS[obj['kind']]}.kubepam.io/{obj['metadata']['name']}"
        result = wait_for(plane, "admin", what, "condition=Ready", obj["metadata"]["namespace"])
        assert result.returncode == 0, f"{what}: {result.stderr}\n{operator.logs()[-2000:]}"
        live = kubectl_json(plane, "admin", "get", what, "-n", obj["metadata"]["namespace"])
        assert live["status"]["observedGeneration"] == live["metadata"]["generation"]


def test_helm_chart_lints_and_installs(plane: ControlPlane, tmp_path: Path) -> None:
    helm = str(plane.bin_dir / "helm")
    chart = str(ROOT / "charts" / "kubepam")
    env_args = ["--kubeconfig", str(plane.kubeconfig("admin"))]
    lint = subprocess.run([helm, "lint", "--strict", chart], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    bad_values = subprocess.run(
        [helm, "template", "x", chart, "--kube-version", "1.36.3", "--set", "replicas=0"],
        capture_output=True,
        text=True,
    )
    assert bad_values.returncode != 0 and "replicas" in bad_values.stderr
    plane.kubectl("admin", "create", "namespace", "chart-team", check=False)
    install = subprocess.run(
        [
            helm,
            "install",
            "chart-check",
            chart,
            "-n",
            "chart-check",
            "--create-namespace",
            "--wait=false",
            "--set",
            "teamNamespaces={chart-team}",
            # A second set of live admission policies would judge the session's operator as a stranger;
            # the chart's policies are checked by a server-side dry run below instead.
            "--set",
            "admissionPolicies.enabled=false",
            *env_args,
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    policies = subprocess.run(
        [
            helm,
            "template",
            "chart-check",
            chart,
            "-n",
            "chart-check",
            "--kube-version",
            "1.36.3",
            "--show-only",
            "templates/admission-policies.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dry_run = plane.kubectl("admin", "apply", "--dry-run=server", "-f", "-", input_text=policies)
    assert "chart-check-kubepam-workloadconnection-lock" in dry_run.stdout
    try:
        crb = kubectl_json(plane, "admin", "get", "clusterrole", "chart-check-kubepam-operator")
        assert any("workloadconnections/status" in r.get("resources", []) for r in crb["rules"])
        deployment = kubectl_json(
            plane, "admin", "get", "deployment", "-n", "chart-check", "chart-check-kubepam-operator"
        )
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    finally:
        subprocess.run(
            [helm, "uninstall", "chart-check", "-n", "chart-check", *env_args], capture_output=True
        )


def render_chart(plane: ControlPlane, *values: str) -> str:
    """`helm template` of the chart as release kubepam in kubepam-system, with --set values."""
    sets = [arg for value in values for arg in ("--set", value)]
    return subprocess.run(
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


def test_chart_grants_and_enforces_exactly_what_manifests_do(plane: ControlPlane) -> None:
    rendered = render_chart(plane)
    from_chart = {
        (d["kind"], d["metadata"]["name"]): d.get("rules")
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] in ("ClusterRole", "Role")
    }
    from_manifests = {
        (d["kind"], d["metadata"]["name"]): d.get("rules")
        for f in sorted((ROOT / "manifests").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and d["kind"] in ("ClusterRole", "Role")
    }
    assert from_chart == from_manifests


def test_chart_console_holds_no_authority(plane: ControlPlane) -> None:
    """console.enabled: its own Deployment with no ServiceAccount token mounted and no RBAC of its own (the
    cluster CA comes from kube-root-ca.crt); console.inOperator: the operator's pods serve it too; both
    share one session-key Secret."""
    rendered = render_chart(
        plane,
        "console.enabled=true",
        "console.inOperator=true",
        "console.oidc.issuer=https://idp.example.com",
        "console.oidc.clientID=kubepam-console",
        "console.oidc.redirectURL=https://pam.example.com/login/callback",
        "console.oidc.caConfigMap=idp-ca",
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    sa = by[("ServiceAccount", "kubepam-console")]
    assert sa["automountServiceAccountToken"] is False
    pod = by[("Deployment", "kubepam-console")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["args"] == ["console"]
    assert {"name": "kube-ca", "configMap": {"name": "kube-root-ca.crt"}} in pod["volumes"]
    assert {"name": "console-oidc-ca", "configMap": {"name": "idp-ca"}} in pod["volumes"]
    console_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert console_env["KUBEPAM_CONSOLE_OIDC_ISSUER"] == "https://idp.example.com"
    assert console_env["KUBEPAM_CONSOLE_OIDC_CA_FILE"] == "/etc/kubepam/console-oidc-ca/ca.crt"
    assert "KUBEPAM_CONSOLE_OIDC_CLIENT_SECRET_FILE" not in console_env  # a public client: PKCE alone
    bound = [
        s
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in d.get("subjects") or []
        if "console" in s.get("name", "")
    ]
    assert bound == [], "the console is granted nothing"
    assert by[("Secret", "kubepam-console-session")]["data"]["session-key"]
    operator = by[("Deployment", "kubepam-operator")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["KUBEPAM_CONSOLE"] == "true" and env["KUBEPAM_CONSOLE_SESSION_KEY_FILE"]
    assert any(p["name"] == "console" for p in operator["ports"])
