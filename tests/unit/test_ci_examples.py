"""The CI examples in deploy/ci/ are valid YAML and run validate and a widening-failing Markdown plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "deploy" / "ci"


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_each_ci_example_validates_plans_and_posts(name: str) -> None:
    text = (CI / name).read_text()
    assert isinstance(yaml.safe_load(text), dict)
    steps = (
        "KUBEPAM_REPO=",
        "kubepam validate -f",
        "kubepam plan -f",
        "-o markdown",
        "--fail-on-widening",
        "plan.md",
    )
    for step in steps:
        assert step in text
