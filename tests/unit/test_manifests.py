"""crds/, manifests/ and the chart: in sync, documented, and the examples valid offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam.domain.kinds import RECORD_PLURALS
from kubepam.offline import check, load_crds

ROOT = Path(__file__).resolve().parents[2]
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
KINDS = {
    "WorkloadConnection",
    "WorkloadRole",
    "AccessPolicy",
    "Project",
    "Server",
    "CheckoutPolicy",
    "Checkout",
    "JitAccount",
    "SSHCertificateRequest",
    "X509CertificateRequest",
}


def test_copies_of_crds_are_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "sync_crds.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_one_crd_per_kind() -> None:
    kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in CRDS}
    assert kinds >= KINDS


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
            missing.append(here)
        missing += _walk(prop, here)
    if "items" in schema:
        missing += _walk(schema["items"], path + "[]")
    return missing


@pytest.mark.parametrize("path", CRDS, ids=[p.stem for p in CRDS])
def test_every_field_is_described_and_status_is_a_subresource(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["group"] == "kubepam.io"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    schema = version["schema"]["openAPIV3Schema"]
    assert schema.get("description")
    assert _walk(schema, crd["spec"]["names"]["kind"]) == []
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    if crd["spec"]["names"]["kind"] in RECORD_PLURALS:  # a fact written once, like an Event: no status
        assert "subresources" not in version and "status" not in schema["properties"]
        assert {"Age", "Outcome"} <= columns
        assert schema["properties"]["spec"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
        return
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert {"Age"} <= columns and ("Ready" in columns)
    status = schema["properties"]["status"]["properties"]
    assert {"conditions", "observedGeneration"} <= set(status)


def test_examples_cover_every_kind_and_validate_offline() -> None:
    findings = check([ROOT / "manifests" / "examples"], load_crds(ROOT / "crds"))
    assert {f.kind for f in findings} == KINDS
    assert [f for f in findings if f.errors] == []


def test_offline_validation_reports_unknown_fields_and_bad_enums(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "WorkloadConnection",
                    "metadata": {"name": "x"},
                    "spec": {"provider": "github", "audiences": ["a"], "audience": "typo"},
                },
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "Server",
                    "metadata": {"name": "s"},
                    "spec": {"project": "p", "hostname": "h", "os": "plan9"},
                },
            ]
        )
    )
    findings = check([bad], load_crds(ROOT / "crds"))
    errors = [e for f in findings for e in f.errors]
    assert any("spec: Additional properties are not allowed ('audience'" in e for e in errors), errors
    assert any(e.startswith("spec.os: 'plan9' is not one of") for e in errors), errors


def test_no_yaml_keys_that_go_reads_as_booleans() -> None:
    """kubectl's YAML (1.1) reads bare y, n, yes, no, on, off as booleans: a JWK's y would vanish."""
    import re

    pattern = re.compile(r"^\s*-?\s*(y|Y|n|N|yes|no|on|off)\s*:|[{,]\s*(y|n|yes|no|on|off)\s*:")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("crds", "manifests", "charts")
        for path in sorted((ROOT / folder).rglob("*.yaml"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_kustomization_lists_every_manifest_and_names_the_deployments_image() -> None:
    """`kubectl apply -k manifests/` installs what `kubectl apply -f manifests/` does, and its `images:`
    entry (repository, tag, digest) is the one the Deployment names."""
    kustomization = yaml.safe_load((ROOT / "manifests" / "Kustomization").read_text())
    assert kustomization["resources"] == sorted(p.name for p in (ROOT / "manifests").glob("*.yaml"))
    (deployment,) = [
        d
        for d in yaml.safe_load_all((ROOT / "manifests" / "50-deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    repository, tag = container["image"].rsplit(":", 1)
    (image,) = kustomization["images"]
    assert (image["name"], image["newName"], image["newTag"]) == (repository, repository, tag)
    chart = yaml.safe_load((ROOT / "charts" / "kubepam" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts" / "kubepam" / "values.yaml").read_text())
    assert tag == chart["appVersion"] and values["image"]["repository"] == repository
    assert values["image"]["digest"] == ""  # set it to run exactly the bytes hack/image.sh built
