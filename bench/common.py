"""Shared by the benchmarks: percentiles, and the real control plane with kubepam installed and the
operator running under its own identity (the same harness as the e2e tests)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT), str(ROOT / "operator")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from kubepam.dev.cluster import ControlPlane, ensure_binaries  # noqa: E402
from kubepam.dev.install import install  # noqa: E402
from tests.e2e.harness import OperatorProcess  # noqa: E402


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
