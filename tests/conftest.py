"""Shared test configuration: put the repository's package on the path for tools run without install;
and the e2e session fixtures, shared by tests/e2e/ and tests/security/: one real control plane per
session (etcd, kube-apiserver, kube-controller-manager built from Go modules), kubepam installed from
manifests/, the operator running as `operator`, and a local OIDC provider the API server trusts. They
start only when an e2e test asks for them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "operator") not in sys.path:
    sys.path.insert(0, str(ROOT / "operator"))

from kubepam.dev.cluster import ControlPlane, OidcTrust, ensure_binaries  # noqa: E402
from kubepam.dev.install import install  # noqa: E402
from tests.e2e.harness import OperatorProcess  # noqa: E402
from tests.oidc_provider import OidcProvider  # noqa: E402


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """A local identity provider the session's API server trusts: its people sign in to the console with
    it (usernames oidc:<name>, groups from the provider)."""
    provider = OidcProvider(users={"carol": ["kubepam:approvers"], "dave": ["kubepam:users"]})
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory, oidc_provider: OidcProvider) -> Iterator[ControlPlane]:
    cp = ControlPlane(
        state_dir=tmp_path_factory.mktemp("control-plane"),
        bin_dir=ensure_binaries(),
        oidc=OidcTrust(**oidc_provider.trust()),
    )
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
