"""Install kubepam into a cluster with kubectl: the CRDs and manifests/ (namespace, RBAC, personas,
admission policies, Deployment), waiting until the CRDs are served; optionally the examples."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from kubepam.dev.cluster import repo_root

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def install(kubectl: Kubectl, *, examples: bool = False, requester: Kubectl | None = None) -> None:
    """Apply manifests/ (and the examples: objects as ``kubectl``, people's requests as ``requester``)."""
    root = repo_root()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "manifests"))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/name=kubepam"
    )
    if examples:
        apply_examples(kubectl, root / "manifests" / "examples", requester or kubectl)


def apply_examples(kubectl: Kubectl, directory: Path, requester: Kubectl) -> None:
    """examples/ as an admin; examples/requests/ (certificate requests, checkouts) as the person asking,
    because the API server stamps the requester from whoever creates them."""
    kubectl("apply", "--server-side", "-f", str(directory))
    requester("apply", "--server-side", "-f", str(directory / "requests"))


def wait_for_admission_policies(kubectl: Kubectl, timeout: float = 30) -> None:
    """New admission policies take a moment to reach the API server's admission chain; probe with a
    server-side dry run until the requester is stamped from the caller (nothing is stored)."""
    probe = yaml.safe_dump(
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "SSHCertificateRequest",
            "metadata": {"name": "kubepam-install-probe", "namespace": "default"},
            "spec": {
                "project": "probe",
                "requester": "kubepam-install-probe",
                "publicKey": "ssh-ed25519 AAAA probe",
            },
        }
    )
    deadline = time.monotonic() + timeout
    while True:
        result = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input_text=probe, check=False)
        if (
            result.returncode == 0
            and json.loads(result.stdout)["spec"]["requester"] != "kubepam-install-probe"
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                "kubepam's admission policies did not take effect: " + (result.stderr or result.stdout)
            )
        time.sleep(0.3)
