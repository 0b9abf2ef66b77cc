"""Shared by the benchmarks: percentiles, and the real control plane with kubepam installed and the
operator running under its own identity (the same harness as the e2e tests)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT), str(ROOT / "operator")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from kubepam.dev.cluster import ControlPlane, ensure_binaries  # noqa: E402
from kubepam.dev.install import install  # noqa: E402
from tests.e2e.harness import OperatorProcess  # noqa: E402


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """A process's resident memory (or, with VmHWM, its peak) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jit_project(namespace: str, apps: str, max_duration: str) -> dict[str, Any]:
    """The Project whose Kubernetes JIT accounts the benchmarks create (bound in ``apps``, never in
    ``namespace``, which holds the keys)."""
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "jit", "namespace": namespace},
        "spec": {
            "jit": {
                "enabled": True,
                "allowedGroups": ["view"],
                "maxDuration": max_duration,
                "creators": {"groups": ["kubepam:users"]},
                "namespaces": [apps],
            }
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextmanager
def operator_on_control_plane(prefix: str) -> Iterator[tuple[ControlPlane, OperatorProcess, Path]]:
    work = Path(tempfile.mkdtemp(prefix=f"kubepam-bench-{prefix}-"))
    plane = ControlPlane(state_dir=work / "cp", bin_dir=ensure_binaries())
    plane.start()
    operator = OperatorProcess(plane, work / "operator.log")
    try:
        install(lambda *a, **kw: plane.kubectl("admin", *a, **kw))
        operator.start()
        yield plane, operator, work
    finally:
        operator.stop()
        plane.stop()
