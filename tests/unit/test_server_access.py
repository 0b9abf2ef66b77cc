"""The server agent's desired local accounts (domain/server_access.py), table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepam.domain.policy import parse_policy
from kubepam.domain.server_access import IssuedLogin, ServerFacts, access_document, desired_access

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SERVER = ServerFacts("team-a", "web-1", "web", {"role": "web", "env": "prod"})


def policy(name: str, principals: dict[str, Any], *rules: dict[str, Any], ns: str = "team-a") -> Any:
    return parse_policy(ns, name, {"principals": principals, "rules": list(rules)})


def rule(**kw: Any) -> dict[str, Any]:
    return {"name": "r", "projects": ["web"], "servers": {}, **kw}


def login(
    requester: str, groups: tuple[str, ...], principals: tuple[str, ...], minutes: int = 3
) -> IssuedLogin:
    return IssuedLogin(requester, frozenset(groups), principals, NOW + timedelta(minutes=minutes))


def accounts(policies: list[Any], logins: list[IssuedLogin] | None = None) -> list[tuple[str, bool]]:
    desired = desired_access(SERVER, policies, logins or [], NOW)
    return [(a.name, a.sudo) for a in desired.accounts]


CASES: list[tuple[str, list[Any], list[IssuedLogin], list[tuple[str, bool]]]] = [
    (
        "users log in as themselves",
        [policy("p", {"users": ["bob", "alice"]}, rule())],
        [],
        [("alice", False), ("bob", False)],
    ),
    (
        "a rule's principals are the login names",
        [policy("p", {"users": ["alice"], "groups": ["ops"]}, rule(principals=["root_ops", "deploy"]))],
        [],
        [("deploy", False), ("root_ops", False)],
    ),
    (
        "workload roles log in as wl_<role>, whatever the rule's principals",
        [policy("p", {"workloadRoles": ["deployer", "ci.bot"]}, rule(principals=["ignored"]))],
        [],
        [("wl_ci_bot", False), ("wl_deployer", False)],
    ),
    (
        "sudo from the rule",
        [policy("p", {"users": ["alice"]}, rule(sshCertificate={"sudo": True}))],
        [],
        [("alice", True)],
    ),
    (
        "sudo if any granting rule says so",
        [
            policy("a", {"users": ["alice"]}, rule()),
            policy("b", {"users": ["alice"]}, rule(sshCertificate={"sudo": True})),
        ],
        [],
        [("alice", True)],
    ),
    (
        "a selector not matching grants nothing",
        [policy("p", {"users": ["alice"]}, rule(servers={"matchLabels": {"role": "db"}}))],
        [],
        [],
    ),
    (
        "a rule without servers grants nothing",
        [policy("p", {"users": ["alice"]}, rule(servers=None))],
        [],
        [],
    ),
    ("another project grants nothing", [policy("p", {"users": ["alice"]}, rule(projects=["db"]))], [], []),
    (
        "the wildcard project",
        [policy("p", {"users": ["alice"]}, rule(projects=["*"]))],
        [],
        [("alice", False)],
    ),
    (
        "ssh disabled grants nothing",
        [policy("p", {"users": ["alice"]}, rule(sshCertificate={"enabled": False}))],
        [],
        [],
    ),
    (
        "another namespace's policy grants nothing",
        [policy("p", {"users": ["alice"]}, rule(), ns="team-b")],
        [],
        [],
    ),
    ("groups alone give no account", [policy("p", {"groups": ["ops"]}, rule())], [], []),
    (
        "a group member with a valid certificate gets an account",
        [policy("p", {"groups": ["ops"]}, rule())],
        [login("carol", ("ops",), ("carol",))],
        [("carol", False)],
    ),
    (
        "an expired certificate gives nothing",
        [policy("p", {"groups": ["ops"]}, rule())],
        [login("carol", ("ops",), ("carol",), minutes=-1)],
        [],
    ),
    (
        "a certificate of someone no policy names any more gives nothing",
        [policy("p", {"groups": ["ops"]}, rule())],
        [login("carol", ("dev",), ("carol",))],
        [],
    ),
    (
        "a certificate's principal the rule no longer allows gives nothing",
        [policy("p", {"groups": ["ops"]}, rule(sshCertificate={"sudo": True}))],
        [login("carol", ("ops",), ("root",))],
        [],
    ),
    (
        "a group member's certificate carries the rule's sudo",
        [policy("p", {"groups": ["ops"]}, rule(sshCertificate={"sudo": True}))],
        [login("carol", ("ops",), ("carol",))],
        [("carol", True)],
    ),
]


@pytest.mark.parametrize(
    ("policies", "logins", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_desired_accounts(
    policies: list[Any], logins: list[IssuedLogin], expected: list[tuple[str, bool]]
) -> None:
    assert accounts(policies, logins) == expected


def test_invalid_names_are_skipped_with_a_reason() -> None:
    policies = [
        policy("p", {"users": ["alice@example.com", "Bob", "x" * 33, "ok_user"]}, rule()),
        policy("q", {"workloadRoles": ["a" * 40]}, rule()),
    ]
    desired = desired_access(SERVER, policies, [], NOW)
    assert [a.name for a in desired.accounts] == ["ok_user"]
    assert [name for name, _ in desired.skipped] == sorted(
        ["Bob", "alice@example.com", "wl_" + "a" * 40, "x" * 33]
    )
    assert all(reason for _, reason in desired.skipped)


def test_accounts_name_their_sources_and_principals() -> None:
    policies = [
        policy("ops-access", {"users": ["alice"]}, rule(name="servers")),
        policy("more", {"users": ["alice"]}, rule(name="all")),
    ]
    (account,) = desired_access(SERVER, policies, [], NOW).accounts
    assert account.to_dict() == {
        "name": "alice",
        "principals": ["alice"],
        "sudo": False,
        "sources": ["team-a/more/all", "team-a/ops-access/servers"],
    }


def test_etag_follows_the_content_only() -> None:
    policies = [policy("p", {"users": ["alice"]}, rule())]
    body, etag = access_document(SERVER, "ssh-ed25519 AAAA ca\n", desired_access(SERVER, policies, [], NOW))
    assert body["server"] == "team-a/web-1" and body["project"] == "web" and "generatedAt" not in body
    _, same = access_document(SERVER, "ssh-ed25519 AAAA ca\n", desired_access(SERVER, policies, [], NOW))
    assert same == etag
    more = [*policies, policy("q", {"users": ["bob"]}, rule())]
    _, other = access_document(SERVER, "ssh-ed25519 AAAA ca\n", desired_access(SERVER, more, [], NOW))
    assert other != etag
    _, rotated = access_document(SERVER, "ssh-ed25519 BBBB ca\n", desired_access(SERVER, policies, [], NOW))
    assert rotated != etag
