"""README's demo command, run exactly as a new user would (`./hack/demo.sh`, from an empty state
directory, ignoring any KUBECONFIG): every example object becomes Ready on the first try, and stopping
it (SIGTERM, as Ctrl-C would) leaves none of the processes it started running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kubepam.dev.cluster import free_port, repo_root
from kubepam.domain.kinds import PLURALS

pytestmark = pytest.mark.e2e

KINDS = tuple(PLURALS.values())  # every kubepam kind has examples


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def test_the_demo_brings_every_example_to_ready_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    log = (tmp_path / "demo.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBEPAM_BROKER_PORT"] = str(free_port())  # beside the session's own operator
    demo = subprocess.Popen(
        [str(repo_root() / "hack" / "demo.sh"), "--local", "--state-dir", str(state)],
        cwd=repo_root(),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    kubeconfig = state / "kubeconfigs" / "admin.kubeconfig"
    try:
        deadline = time.monotonic() + 240  # a cold venv or control-plane build is not counted here
        while not (state / "state.json").exists() or "starting the operator" not in _text(tmp_path):
            assert demo.poll() is None, f"demo exited {demo.returncode}:\n{_text(tmp_path)[-4000:]}"
            assert time.monotonic() < deadline, _text(tmp_path)[-4000:]
            time.sleep(0.5)
        kubectl = [str(_kubectl(state)), "--kubeconfig", str(kubeconfig)]
        for kind in KINDS:
            ready = subprocess.run(
                [*kubectl, "wait", "--for=condition=Ready", "--timeout=90s", kind, "--all", "-A"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ready.returncode == 0, f"{kind}: {ready.stderr}\n{_text(tmp_path)[-3000:]}"
            assert "condition met" in ready.stdout, (kind, ready.stdout)
        # the shipped layout: the example JIT account's groups apply in team-a-apps, never in team-a,
        # where the CA keys, the admin Secrets and the shared-account passwords live
        jit_sa = "--as=system:serviceaccount:team-a:alice-jit"
        for verb, resource, namespace, answer in (
            ("list", "pods", "team-a-apps", "yes"),
            ("get", "secrets", "team-a", "no"),
            ("list", "secrets", "team-a", "no"),
        ):
            can = subprocess.run(
                [*kubectl, "auth", "can-i", verb, resource, "-n", namespace, jit_sa],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert can.stdout.strip() == answer, (verb, resource, namespace, can.stdout, can.stderr)
        pids = list(json.loads((state / "state.json").read_text())["pids"].values())
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
        log.close()
    assert demo.returncode == 0, _text(tmp_path)[-3000:]
    assert "stopped the control plane" in _text(tmp_path)
    left = [pid for pid in pids if _alive(pid)]
    assert left == [], f"processes left running: {left}"
    group = subprocess.run(["pgrep", "-g", str(demo.pid)], capture_output=True, text=True)
    assert group.stdout.strip() == "", f"the demo's process group is not empty: {group.stdout}"


def _text(tmp_path: Path) -> str:
    return (tmp_path / "demo.log").read_text(errors="replace")


def _kubectl(state: Path) -> Path:
    bin_dir = Path(json.loads((state / "state.json").read_text())["bin_dir"])
    return bin_dir / "kubectl"
