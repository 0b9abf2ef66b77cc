"""Install kubepam into a cluster with kubectl: the CRDs and manifests/ (namespace, RBAC, personas,
admission policies, Deployment), waiting until the CRDs are served; optionally the examples."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from kubepam.dev.cluster import repo_root

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def install(kubectl: Kubectl, *, examples: bool = False) -> None:
    root = repo_root()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "manifests"))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/name=kubepam"
    )
    if examples:
        apply_examples(kubectl, root / "manifests" / "examples")


def apply_examples(kubectl: Kubectl, directory: Path) -> None:
    kubectl("apply", "--server-side", "-f", str(directory))
