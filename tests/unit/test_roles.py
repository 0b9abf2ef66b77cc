"""WorkloadRole rules: OR of blocks, AND inside a block, connection scoping, SSH usernames."""

from __future__ import annotations

from typing import Any

import pytest

from kubepam.domain.errors import SpecError
from kubepam.domain.roles import matching_roles, parse_role, trace_role, workload_username

DEPLOYER: dict[str, Any] = {
    "connections": ["github"],
    "match": [
        {
            "conditions": [
                {"claim": "ref", "operator": "equals", "value": "refs/heads/main"},
                {"claim": "environment", "operator": "equals", "value": "production"},
            ]
        },
        {"conditions": [{"claim": "ref", "operator": "glob", "value": "refs/tags/v*"}]},
    ],
}


@pytest.mark.parametrize(
    ("claims", "matched"),
    [
        ({"ref": "refs/heads/main", "environment": "production"}, True),  # block 0: both conditions
        ({"ref": "refs/heads/main", "environment": "staging"}, False),  # block 0 fails one condition
        ({"ref": "refs/heads/main"}, False),
        ({"ref": "refs/tags/v2.0.0"}, True),  # block 1
        ({"ref": "refs/tags/release"}, False),
        ({}, False),
    ],
)
def test_blocks_or_conditions_and(claims: dict[str, Any], matched: bool) -> None:
    role = parse_role("team-a", "deployer", DEPLOYER)
    assert role.matches(claims) is matched


def test_roles_only_match_their_namespace_and_connections() -> None:
    role = parse_role("team-a", "deployer", DEPLOYER)
    claims = {"ref": "refs/tags/v1"}
    assert matching_roles([role], "team-a", "github", claims) == [role]
    assert matching_roles([role], "team-a", "gitlab", claims) == []
    assert matching_roles([role], "team-b", "github", claims) == []
    any_conn = parse_role("team-a", "any", {"match": DEPLOYER["match"]})
    assert matching_roles([any_conn], "team-a", "gitlab", claims) == [any_conn]


def test_trace_explains_draft_and_blocks() -> None:
    role = parse_role("team-a", "deployer", DEPLOYER)
    trace = trace_role(role, "team-a", "github", active=False, claims={"ref": "refs/tags/v1"})
    assert not trace.matched and trace.matched_block == 1 and "Draft" in trace.reason
    assert [r.matched for r in trace.blocks[0]] == [False, False]
    active = trace_role(role, "team-a", "github", active=True, claims={"ref": "refs/tags/v1"})
    assert active.matched and active.reason == "block 1 matches"


@pytest.mark.parametrize(
    ("name", "username"),
    [
        ("deployer", "wl_deployer"),
        ("ci.deploy", "wl_ci_deploy"),
        ("a-b", "wl_a-b"),
        ("1abc", "wl_1abc"),
        ("x" * 29, "wl_" + "x" * 29),
    ],
)
def test_usernames_are_valid_linux_names(name: str, username: str) -> None:
    assert workload_username(name) == username
    assert len(username) <= 32


@pytest.mark.parametrize("name", ["x" * 30, "Deployer", "a b"])
def test_names_that_cannot_be_linux_users_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="Linux user"):
        workload_username(name)


def test_empty_match_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.match"):
        parse_role("ns", "r", {"match": []})
    with pytest.raises(SpecError, match=r"spec\.match\[0\]\.conditions"):
        parse_role("ns", "r", {"match": [{"conditions": []}]})
