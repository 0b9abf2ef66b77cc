"""The Argo CD health checks (charts/kubepam/health/kubepam.io/<Kind>/health.lua) run in a real Lua 5.1
interpreter (lupa's, the language version of Argo CD's gopher-lua) on every case of their
health_test.yaml, as Argo CD's own resource_customizations tests do; and argocd-cm.yaml is what
hack/gen_health.py makes of them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from kubepam.offline import check, load_crds

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "charts" / "kubepam" / "health"
CHECKS = HEALTH / "kubepam.io"
KINDS = {
    "AccessPolicy",
    "Checkout",
    "CheckoutPolicy",
    "JitAccount",
    "Project",
    "Server",
    "SSHCertificateRequest",
    "WorkloadConnection",
    "WorkloadRole",
    "X509CertificateRequest",
}
STATUSES = {"Healthy", "Progressing", "Suspended", "Degraded"}
_spec = importlib.util.spec_from_file_location("gen_health", ROOT / "hack" / "gen_health.py")
assert _spec is not None and _spec.loader is not None
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)
# Library tables Argo CD's sandbox does not open: a script that used them would fail there.
UNSAFE = ("os", "io", "debug", "package", "require", "dofile", "loadfile", "load", "loadstring", "module")


def cases() -> list[tuple[str, str, dict[str, str]]]:
    """(kind, inputPath, healthStatus) for every case of every health_test.yaml."""
    found = []
    for test_file in sorted(CHECKS.glob("*/health_test.yaml")):
        for item in yaml.safe_load(test_file.read_text())["tests"]:
            found.append((test_file.parent.name, item["inputPath"], item["healthStatus"]))
    return found


CASES = cases()


@cache
def runtime() -> LuaRuntime:
    lua = LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    assert lua.lua_version == (5, 1)
    for name in UNSAFE:
        lua.globals()[name] = None
    return lua


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    """JSON-shaped data as Lua values: objects and arrays become tables (arrays 1-based), as Argo CD
    hands the object to the script."""
    if isinstance(value, dict):
        return lua.table_from({key: to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, item) for item in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    lua = runtime()
    script = GEN.script_path(kind).read_text()
    lua.globals().obj = to_lua(lua, obj)
    try:
        result = lua.execute(script)
    finally:
        lua.globals().obj = None
    return {"status": result["status"], "message": result["message"]}


def test_every_kind_has_a_health_check_with_cases() -> None:
    crd_kinds = {
        yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (ROOT / "crds").glob("*.yaml")
    }
    assert crd_kinds >= KINDS
    assert {p.parent.name for p in CHECKS.glob("*/health_test.yaml")} == KINDS
    # the kinds without a script of their own share kstatus.lua (their health is their conditions)
    assert {k for k in KINDS if GEN.script_path(k) == HEALTH / "kstatus.lua"} == {
        "AccessPolicy",
        "CheckoutPolicy",
        "Project",
        "Server",
        "WorkloadRole",
    }
    per_kind = {kind: [c for c in CASES if c[0] == kind] for kind in KINDS}
    assert all(len(found) >= 3 for found in per_kind.values()), {k: len(v) for k, v in per_kind.items()}
    assert {expected["status"] for _, _, expected in CASES} == STATUSES


def test_every_testdata_file_is_a_case_and_names_its_kind() -> None:
    listed = {(kind, path) for kind, path, _ in CASES}
    on_disk = {(p.parents[1].name, f"testdata/{p.name}") for p in CHECKS.glob("*/testdata/*.yaml")}
    assert listed == on_disk
    for kind, path, _ in CASES:
        obj = yaml.safe_load((CHECKS / kind / path).read_text())
        assert (obj["apiVersion"], obj["kind"]) == ("kubepam.io/v1alpha1", kind), path


def test_testdata_objects_are_valid_kubepam_objects() -> None:
    """The specs pass the CRDs' schemas and rules, so the cases show objects the API server accepts."""
    findings = check(sorted(CHECKS.glob("*/testdata/*.yaml")), load_crds(ROOT / "crds"))
    assert len(findings) == len(CASES)
    assert [(f.source, f.errors) for f in findings if f.errors] == []


@pytest.mark.parametrize(("kind", "path", "expected"), CASES, ids=[f"{k}/{p}" for k, p, _ in CASES])
def test_health_lua(kind: str, path: str, expected: dict[str, str]) -> None:
    obj = yaml.safe_load((CHECKS / kind / path).read_text())
    assert health(kind, obj) == {"status": expected["status"], "message": expected.get("message", "")}


def test_the_end_of_a_lifecycle_is_never_degraded() -> None:
    """An expired, checked-in, cancelled or denied checkout, a disabled JIT account and an issued
    certificate past its validBefore are what they should be: never Degraded."""
    finished = {
        "Checkout": ("CheckedIn", "Expired", "Cancelled", "Denied"),
        "JitAccount": ("Disabled",),
        "SSHCertificateRequest": ("Issued", "Denied"),
        "X509CertificateRequest": ("Issued", "Denied"),
    }
    seen = set()
    for kind, path, expected in CASES:
        obj = yaml.safe_load((CHECKS / kind / path).read_text())
        phase = (obj.get("status") or {}).get("phase")
        if phase in finished.get(kind, ()):
            seen.add((kind, phase))
            assert expected["status"] in {"Healthy", "Suspended", "Progressing"}, path
            assert health(kind, obj)["status"] != "Degraded", path
    assert seen == {(kind, phase) for kind, phases in finished.items() for phase in phases}


def test_a_script_that_fails_fails_the_test() -> None:
    """The harness itself: a Lua error surfaces (Argo CD shows such a resource as Unknown)."""
    from lupa.lua51 import LuaError

    with pytest.raises(LuaError):
        runtime().execute("return obj.status.phase")


def test_argocd_cm_is_generated_from_the_scripts() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_health.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cm = yaml.safe_load((HEALTH / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {
        f"resource.customizations.health.kubepam.io_{kind}": GEN.script_path(kind).read_text()
        for kind in sorted(KINDS)
    }
