"""e2e fixtures: one real control plane per session (etcd, kube-apiserver, kube-controller-manager
built from Go modules), kubepam installed from manifests/, and the operator running as `operator`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubepam.dev.cluster import ControlPlane, ensure_binaries
from kubepam.dev.install import install
from tests.e2e.harness import OperatorProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(state_dir=tmp_path_factory.mktemp("control-plane"), bin_dir=ensure_binaries())
    cp.start()
    try:
        install(lambda *args, **kw: cp.kubectl("admin", *args, **kw))
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def operator(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(plane, Path(tmp_path_factory.mktemp("operator")) / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
