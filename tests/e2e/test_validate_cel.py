"""`kubepam validate` offline and the API server agree: one table of good and bad objects, each judged
offline (cel-python: CRD rules, mutating and validating admission policies, the project's JIT
settings derived from the files) and by the real API server (`kubectl apply --dry-run=server` as the
same person). Same verdict on every case, and every offline message is the API server's own text."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam.cel import UserInfo
from kubepam.dev.cluster import ControlPlane
from kubepam.dev.identities import IDENTITIES
from kubepam.offline import check
from tests.e2e.harness import apply, team_namespace, wait_for

NS = "cel-table"
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def project(name: str, creators: list[str]) -> dict[str, Any]:
    jit = {"enabled": True, "allowedGroups": ["view"], "maxDuration": "2h", "namespaces": [f"{NS}-apps"]}
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"jit": {**jit, "creators": {"groups": creators}}},
    }


# "cel": people in kubepam:users create their own JIT accounts; "closed": only security admins do.
PROJECTS = [project("cel", ["kubepam:users"]), project("closed", [])]


def example(kind: str) -> dict[str, Any]:
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                doc = copy.deepcopy(doc)
                doc["metadata"]["namespace"] = NS
                if "project" in doc.get("spec", {}):
                    doc["spec"]["project"] = "cel"
                return doc
    raise LookupError(kind)


def edit(
    kind: str, name: str, spec: dict[str, Any] | None = None, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    doc = example(kind)
    doc["metadata"]["name"] = name
    doc["spec"].update(spec or {})
    for key in drop:
        doc["spec"].pop(key, None)
    return doc


JIT = {"owner": "alice", "groups": ["view"], "duration": "1h"}
CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("jit-good", "alice", edit("JitAccount", "j-good", JIT), True),
    ("jit-admin-for-bob", "sonia", edit("JitAccount", "j-bob", {**JIT, "owner": "bob"}), True),
    (
        "jit-name-21-chars",
        "admin",
        edit("JitAccount", "j-long", {**JIT, "owner": "averyveryverylongname"}),
        False,
    ),
    ("jit-owner-no-account-name", "admin", edit("JitAccount", "j-upper", {**JIT, "owner": "Alice"}), False),
    ("jit-duration-25h", "admin", edit("JitAccount", "j-25h", {**JIT, "duration": "25h"}), False),
    ("jit-over-project-max", "alice", edit("JitAccount", "j-3h", {**JIT, "duration": "3h"}), False),
    ("jit-group-not-allowed", "alice", edit("JitAccount", "j-edit", {**JIT, "groups": ["edit"]}), False),
    ("jit-for-someone-else", "alice", edit("JitAccount", "j-else", {**JIT, "owner": "bob"}), False),
    ("jit-chosen-name", "alice", edit("JitAccount", "j-named", {**JIT, "accountName": "root_jit"}), False),
    ("jit-not-a-creator", "alice", edit("JitAccount", "j-closed", {**JIT, "project": "closed"}), False),
    ("project-good", "admin", edit("Project", "p-good"), True),
    (
        "project-default-over-max",
        "admin",
        edit("Project", "p-ttl", {"certificates": {"defaultTTL": "2h", "maxTTL": "1h"}}),
        False,
    ),
    ("project-jit-without-groups", "admin", edit("Project", "p-jit", {"jit": {"enabled": True}}), False),
    (
        "project-postgresql-without-settings",
        "admin",
        edit("Project", "p-pg", {"sharedAccounts": [{"name": "db_admin", "backend": "postgresql"}]}),
        False,
    ),
    (
        "checkoutpolicy-include-nothing",
        "admin",
        edit("CheckoutPolicy", "cp-inc", {"scope": "Include"}),
        False,
    ),
    ("checkout-good", "alice", edit("Checkout", "co-good"), True),
    ("checkout-requester-stamped", "alice", edit("Checkout", "co-bob", {"requester": "bob"}), True),
    ("checkout-without-requester", "alice", edit("Checkout", "co-none", drop=("requester",)), True),
    ("checkout-forced-on-create", "alice", edit("Checkout", "co-force", {"checkin": {"force": True}}), False),
    ("checkout-duration-5s", "alice", edit("Checkout", "co-5s", {"duration": "5s"}), False),
    (
        "ssh-private-key",
        "alice",
        edit("SSHCertificateRequest", "ssh-priv", {"publicKey": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
        False,
    ),
    ("ssh-ttl-10s", "alice", edit("SSHCertificateRequest", "ssh-10s", {"ttl": "10s"}), False),
    ("ssh-good", "alice", edit("SSHCertificateRequest", "ssh-good", {"ttl": "5m"}), True),
    (
        "connection-plain-http-jwks",
        "devops",
        edit("WorkloadConnection", "wc-http", {"jwksUrl": "http://example.com/jwks"}, drop=("jwks",)),
        False,
    ),
    (
        "connection-jwks-url-and-keys",
        "devops",
        edit("WorkloadConnection", "wc-both", {"jwksUrl": "https://example.com/jwks"}),
        False,
    ),
    (
        "connection-generic-no-issuer",
        "devops",
        edit("WorkloadConnection", "wc-gen", {"provider": "generic"}),
        False,
    ),
    ("connection-name-64", "devops", edit("WorkloadConnection", "w" * 64), False),
    ("connection-good", "devops", edit("WorkloadConnection", "wc-good"), True),
    ("role-name-30", "devops", edit("WorkloadRole", "r" * 30), False),
    (
        "role-in-without-values",
        "devops",
        edit("WorkloadRole", "r-in", {"match": [{"conditions": [{"claim": "ref", "operator": "in"}]}]}),
        False,
    ),
    (
        "role-bad-pointer-escape",
        "devops",
        edit(
            "WorkloadRole", "r-ptr", {"match": [{"conditions": [{"claim": "/a~2b", "operator": "exists"}]}]}
        ),
        False,
    ),
    ("role-good", "devops", edit("WorkloadRole", "r-good"), True),
    ("policy-no-principals", "admin", edit("AccessPolicy", "ap-none", {"principals": {}}), False),
    (
        "policy-ssh-ttl-10s",
        "admin",
        edit(
            "AccessPolicy",
            "ap-10s",
            {"rules": [{"name": "r", "projects": ["cel"], "servers": {}, "sshCertificate": {"ttl": "10s"}}]},
        ),
        False,
    ),
    ("policy-good", "admin", edit("AccessPolicy", "ap-good"), True),
]


@pytest.fixture(scope="module")
def cel_project(plane: ControlPlane, operator: Any) -> Iterator[None]:
    """The projects whose JIT settings the operator publishes as the admission policy's parameter."""
    team_namespace(plane, NS)
    apply(plane, "admin", *PROJECTS)
    for name in ("cel", "closed"):
        published = wait_for(plane, "admin", f"configmap/{name}-jit", "jsonpath={.data.maxDuration}=2h", NS)
        assert published.returncode == 0, published.stderr
    yield


def offline(identity: str, doc: dict[str, Any], directory: Path) -> tuple[str, ...]:
    person = next(i for i in IDENTITIES if i.name == identity)
    (directory / "projects.yaml").write_text(yaml.safe_dump_all(PROJECTS))
    (directory / "case.yaml").write_text(json.dumps(doc))
    findings = check([directory], user=UserInfo(person.username, person.groups))
    (mine,) = [f for f in findings if f.name == f"{NS}/{doc['metadata']['name']}"]
    return mine.errors


@pytest.mark.e2e
@pytest.mark.parametrize(("identity", "doc", "good"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_offline_validate_says_what_the_api_server_says(
    plane: ControlPlane, cel_project: None, tmp_path: Path, identity: str, doc: dict[str, Any], good: bool
) -> None:
    server = plane.kubectl(
        identity, "apply", "--dry-run=server", "-f", "-", input_text=json.dumps(doc), check=False
    )
    errors = offline(identity, doc, tmp_path)
    assert (server.returncode == 0) is good, server.stderr
    assert (not errors) is good, errors
    for error in errors:
        assert error in server.stderr, f"offline said {error!r}; the API server said {server.stderr!r}"


@pytest.mark.e2e
def test_validate_server_flag_asks_the_api_server(
    plane: ControlPlane, cel_project: None, tmp_path: Path
) -> None:
    """`kubepam validate --server --as`: the API server's verdict per object, through the CLI."""
    good = edit("JitAccount", "j-cli-good", JIT)
    bad = edit("JitAccount", "j-cli-bad", {**JIT, "duration": "3h"})
    (tmp_path / "jit.yaml").write_text(yaml.safe_dump_all([good, bad]))
    code = "import sys; from kubepam.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["validate", "-f", str(tmp_path), "--server", "--as", "alice", "--as-group", "kubepam:users"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv, "--kubeconfig", str(plane.kubeconfig("admin"))],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"JitAccount {NS}/j-cli-good: valid" in done.stdout
    assert f"JitAccount {NS}/j-cli-bad: INVALID" in done.stdout
    assert "spec.duration 3h exceeds the maximum of project cel (2h)" in done.stdout
