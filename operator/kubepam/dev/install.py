"""Install kubepam into a cluster with kubectl: the CRDs and manifests/ (namespace, RBAC, personas,
admission policies, Deployment), waiting until the CRDs are served; optionally the examples."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubepam.dev.cluster import repo_root
from kubepam.domain.kinds import GROUP, PLURALS, RECORD_PLURALS

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


# What the API server answers while a new CRD is Established but not yet served by discovery (or by
# the handler that stores its objects): worth a retry, and nothing else is.
NOT_SERVED_YET = (
    "There can be a delay between when CustomResourceDefinitions are created and when they are available",
    "no matches for kind",
    "the server could not find the requested resource",
    "ensure CRDs are installed first",
)


class InstallError(RuntimeError):
    """A kubectl step failed; the message is the API server's, safe and useful to print."""


def run(kubectl: Kubectl, *args: str, retry_for: float = 0, **kw: Any) -> subprocess.CompletedProcess[str]:
    """One kubectl call; retried for ``retry_for`` seconds only while the API server says a kind is not
    served yet; any other failure raises :class:`InstallError` with kubectl's own message."""
    deadline = time.monotonic() + retry_for
    while True:
        result = kubectl(*args, check=False, **kw)
        if result.returncode == 0:
            return result
        message = (result.stderr or result.stdout).strip()
        if time.monotonic() < deadline and any(text in message for text in NOT_SERVED_YET):
            time.sleep(0.5)
            continue
        raise InstallError(f"kubectl {' '.join(args[:2])} failed: {message}")


def wait_until_served(kubectl: Kubectl, timeout: float = 60) -> None:
    """Established is not enough: wait until discovery lists every kubepam kind."""
    want = {f"{plural}.{GROUP}" for plural in (*PLURALS.values(), *RECORD_PLURALS.values())}
    deadline = time.monotonic() + timeout
    while True:
        result = kubectl("api-resources", f"--api-group={GROUP}", "-o", "name", check=False)
        served = set(result.stdout.split()) if result.returncode == 0 else set()
        if want <= served:
            return
        if time.monotonic() > deadline:
            raise InstallError(
                f"kubepam kinds not served after {timeout:.0f}s: missing {sorted(want - served)}"
            )
        time.sleep(0.3)


def install(kubectl: Kubectl, *, examples: bool = False, requester: Kubectl | None = None) -> None:
    """Apply manifests/ (and the examples: objects as ``kubectl``, people's requests as ``requester``)."""
    root = repo_root()
    run(kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(root / "manifests"), retry_for=60)
    run(
        kubectl,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/name=kubepam",
    )
    wait_until_served(kubectl)
    if examples:
        apply_examples(kubectl, root / "manifests" / "examples", requester or kubectl)


def apply_examples(kubectl: Kubectl, directory: Path, requester: Kubectl) -> None:
    """examples/ as an admin; examples/requests/ (certificate requests, checkouts) as the person asking,
    because the API server stamps the requester from whoever creates them. The examples are the demo's
    own: a re-run takes them back from an earlier hand edit (--force-conflicts), rather than failing."""
    run(kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(directory), retry_for=60)
    wait_for_admission_policies(kubectl)
    run(requester, "apply", "--server-side", "-f", str(directory / "requests"), retry_for=60)


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
            raise InstallError(
                "kubepam's admission policies did not take effect: " + (result.stderr or result.stdout)
            )
        time.sleep(0.3)
