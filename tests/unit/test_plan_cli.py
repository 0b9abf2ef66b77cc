"""`kubepam plan` without a cluster: files overlaid on given live objects as `kubectl apply` would,
pruning, the three outputs, and terraform-style exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from kubepam import plan
from kubepam.cli import main
from tests.unit.test_access_diff import base, named, shorten


def write(tmp: Path, objs: list[dict[str, Any]]) -> Path:
    (tmp / "objects.yaml").write_text(yaml.safe_dump_all(objs))
    return tmp


def test_the_same_files_as_live_change_nothing_and_exit_0() -> None:
    result = plan.plan(base(), base())
    assert result.changes == [] and result.created == [] and result.deleted == []
    assert result.code(fail_on_widening=True) == plan.NO_CHANGE


def test_a_narrowing_change_exits_2_even_with_fail_on_widening() -> None:
    after = copy.deepcopy(base())
    shorten(after)
    result = plan.plan(after, base())
    assert [c.sign for c in result.changes] == ["~"]
    assert result.code(fail_on_widening=True) == plan.CHANGES


def test_live_status_is_kept_a_file_cannot_promote_a_connection() -> None:
    live = base()
    files = copy.deepcopy(live)
    named(files, "WorkloadConnection", "github")["status"] = {"phase": "Active"}  # ignored: status is live
    assert plan.plan(files, live).changes == []
    named(live, "WorkloadConnection", "github")["status"] = {"phase": "Active"}  # promoted by an admin
    assert [c.line() for c in plan.plan(files, live).changes] == []
    assert [c.sign for c in plan.plan(files, base()).changes] == []


def test_prune_deletes_what_the_files_lack_in_their_namespaces() -> None:
    live = base()
    files = [o for o in copy.deepcopy(live) if o["kind"] != "AccessPolicy"]
    kept = plan.plan(files, live)
    assert kept.changes == [] and kept.deleted == []
    pruned = plan.plan(files, live, prune=True)
    assert pruned.deleted == [("AccessPolicy", "team-a", "sre")]
    assert {c.sign for c in pruned.changes} == {"-"}


def test_the_cli_offline_exit_codes_and_outputs(tmp_path: Path, capsys: Any) -> None:
    files = write(tmp_path, base())
    assert main(["plan", "-f", str(files), "--no-live"]) == plan.CHANGES
    assert "+ group sre -> ssh team-a/web-1 (as ubuntu, ttl 3m)   (widening)" in capsys.readouterr().out
    assert main(["plan", "-f", str(files), "--no-live", "--fail-on-widening"]) == plan.WIDENING
    capsys.readouterr()
    assert main(["plan", "-f", str(files), "--no-live", "-o", "json"]) == plan.CHANGES
    report = json.loads(capsys.readouterr().out)
    assert report["live"] is False and all(c["widening"] for c in report["access"])
    assert main(["plan", "-f", str(files), "--no-live", "-o", "markdown"]) == plan.CHANGES
    assert capsys.readouterr().out.startswith("### kubepam plan offline")
