"""AccessPolicy decisions, table-driven: every rule kind with an allowed and a denied case and the
denial reason people see."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kubepam.domain.errors import SpecError
from kubepam.domain.policy import Capability, Limits, Request, ServerView, Subject, evaluate, parse_policy

NS = "team-a"
WEB1 = ServerView("web-1", "payments", {"role": "web", "env": "prod"})
DB1 = ServerView("db-1", "payments", {"role": "db", "env": "prod"})
STAGING = ServerView("web-9", "payments", {"role": "web", "env": "staging"})
OTHER = ServerView("x-1", "other", {"role": "web"})

POLICIES = [
    parse_policy(
        NS,
        "a-sre",
        {
            "principals": {"groups": ["sre"], "users": ["carol"]},
            "rules": [
                {
                    "name": "web",
                    "projects": ["payments"],
                    "servers": {
                        "matchLabels": {"role": "web"},
                        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
                    },
                    "principals": ["root", "deploy"],
                    "sshCertificate": {"ttl": "10m"},
                    "x509Certificate": {"enabled": False},
                },
                {
                    "name": "accounts",
                    "projects": ["payments"],
                    "accounts": ["payments_admin"],
                    "checkoutDuration": "20m",
                },  # no servers: grants checkouts only
            ],
        },
    ),
    parse_policy(
        NS,
        "b-workloads",
        {
            "principals": {"workloadRoles": ["deployer"]},
            "rules": [
                {
                    "name": "deploy",
                    "projects": ["*"],
                    "servers": {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["db"]}]},
                    "principals": ["root"],
                }
            ],
        },
    ),
    parse_policy(
        NS,
        "c-everyone",
        {
            "principals": {"groups": ["kubepam:users"]},
            "rules": [
                {
                    "name": "staging",
                    "projects": ["payments"],
                    "servers": {
                        "matchExpressions": [
                            {"key": "env", "operator": "Exists"},
                            {"key": "quarantine", "operator": "DoesNotExist"},
                        ]
                    },
                    "sshCertificate": {"ttl": "2h"},
                }
            ],
        },
    ),
    parse_policy(
        NS,
        "d-ops",
        {
            "principals": {"groups": ["ops"]},
            "rules": [{"name": "all-servers", "projects": ["payments"], "servers": {}}],
        },
    ),
    parse_policy(
        "team-b",
        "elsewhere",
        {"principals": {"users": ["mallory"]}, "rules": [{"name": "all", "projects": ["*"]}]},
    ),
]

SRE = Subject("alice", frozenset({"sre"}))
CAROL = Subject("carol")
USER = Subject("bob", frozenset({"kubepam:users"}))
MALLORY = Subject("mallory")
DEPLOYER = Subject("wl_deployer", role="deployer")
LIMITS = Limits(timedelta(minutes=3), timedelta(hours=1))


def ssh(server: ServerView | None, **kw: Any) -> Request:
    return Request(NS, kw.pop("project", "payments"), Capability.SSH, server, **kw)


# (case, subject, request, allowed, expected principals or reason fragment, expected ttl)
CASES: list[tuple[str, Subject, Request, bool, Any, timedelta | None]] = [
    # principals: users, groups, workload roles
    ("group member", SRE, ssh(WEB1), True, ("root", "deploy"), timedelta(minutes=10)),
    ("named user", CAROL, ssh(WEB1), True, ("root", "deploy"), timedelta(minutes=10)),
    (
        "not named",
        Subject("eve", frozenset({"guests"})),
        ssh(WEB1),
        False,
        "no AccessPolicy in namespace team-a names user eve (groups guests)",
        None,
    ),
    (
        "other namespace's policy",
        MALLORY,
        ssh(WEB1),
        False,
        "no AccessPolicy in namespace team-a names user mallory",
        None,
    ),
    ("workload role", DEPLOYER, ssh(WEB1), True, ("wl_deployer",), timedelta(minutes=3)),
    ("workload role not named", Subject("wl_x", role="x"), ssh(WEB1), False, "names workload role x", None),
    # projects
    ("project listed", SRE, ssh(WEB1), True, ("root", "deploy"), timedelta(minutes=10)),
    ("project not listed", SRE, ssh(OTHER, project="other"), False, "project other is not listed", None),
    ("project wildcard", DEPLOYER, ssh(OTHER, project="other"), True, ("wl_deployer",), timedelta(minutes=3)),
    ("server of another project", SRE, ssh(OTHER), False, "belongs to project other, not payments", None),
    # server selectors: matchLabels, In, NotIn, Exists, DoesNotExist, no server named
    ("matchLabels + In", SRE, ssh(WEB1), True, ("root", "deploy"), timedelta(minutes=10)),
    (
        "matchLabels fails",
        SRE,
        ssh(DB1),
        False,
        "server db-1 is not selected by role=web, env In (prod)",
        None,
    ),
    ("In fails", SRE, ssh(STAGING), False, "server web-9 is not selected by role=web, env In (prod)", None),
    ("NotIn", DEPLOYER, ssh(DB1), False, "server db-1 is not selected by role NotIn (db)", None),
    ("Exists", USER, ssh(STAGING), True, ("bob",), timedelta(hours=1)),
    (
        "DoesNotExist",
        USER,
        ssh(ServerView("q", "payments", {"env": "x", "quarantine": "y"})),
        False,
        "quarantine DoesNotExist",
        None,
    ),
    ("selector needs a server", SRE, ssh(None), False, "name the server", None),
    ("rule without servers grants none", CAROL, ssh(DB1), False, "server db-1 is not selected", None),
    (
        "servers {} grants all, even unnamed",
        Subject("dave", frozenset({"ops"})),
        ssh(None),
        True,
        ("dave",),
        timedelta(minutes=3),
    ),
    # capability
    (
        "x509 disabled by rule",
        SRE,
        Request(NS, "payments", Capability.X509, WEB1),
        False,
        "x509 certificates are disabled by the rule",
        None,
    ),
    (
        "x509 enabled by default",
        USER,
        Request(NS, "payments", Capability.X509, STAGING),
        True,
        ("bob",),
        timedelta(minutes=3),
    ),
    # requested principals
    (
        "asks allowed principal",
        SRE,
        ssh(WEB1, principals=("deploy",)),
        True,
        ("deploy",),
        timedelta(minutes=10),
    ),
    (
        "asks other principal",
        SRE,
        ssh(WEB1, principals=("postgres",)),
        False,
        "principals postgres are not allowed (allowed: root, deploy)",
        None,
    ),
    (
        "workload cannot choose",
        DEPLOYER,
        ssh(WEB1, principals=("root",)),
        False,
        "principals root are not allowed (allowed: wl_deployer)",
        None,
    ),
    ("person defaults to own name", USER, ssh(STAGING), True, ("bob",), timedelta(hours=1)),
    # ttl: request, rule, project default, project maximum
    (
        "request shorter ttl",
        SRE,
        ssh(WEB1, ttl=timedelta(seconds=30)),
        True,
        ("root", "deploy"),
        timedelta(seconds=30),
    ),
    ("rule ttl capped by project max", USER, ssh(STAGING), True, ("bob",), timedelta(hours=1)),
    (
        "request over max is capped",
        SRE,
        ssh(WEB1, ttl=timedelta(hours=5)),
        True,
        ("root", "deploy"),
        timedelta(hours=1),
    ),
    # checkout accounts
    (
        "account listed",
        SRE,
        Request(NS, "payments", Capability.CHECKOUT, account="payments_admin"),
        True,
        (),
        None,
    ),
    (
        "account not listed",
        SRE,
        Request(NS, "payments", Capability.CHECKOUT, account="root"),
        False,
        "account root is not listed",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "subject", "request_", "allowed", "expect", "ttl"), CASES, ids=[c[0] for c in CASES]
)
def test_policy_table(
    case: str, subject: Subject, request_: Request, allowed: bool, expect: Any, ttl: timedelta | None
) -> None:
    decision = evaluate(POLICIES, subject, request_, LIMITS)
    assert decision.allowed is allowed, decision.reason
    if allowed:
        assert decision.principals == expect
        assert decision.ttl == ttl
        assert decision.checks and all(c.ok for c in decision.checks)
    else:
        assert expect in decision.reason


def test_checkout_duration_override_comes_from_the_rule() -> None:
    decision = evaluate(POLICIES, SRE, Request(NS, "payments", Capability.CHECKOUT, account="payments_admin"))
    assert decision.checkout_duration == timedelta(minutes=20) and decision.source == "a-sre/accounts"


def test_denial_names_the_closest_rule() -> None:
    decision = evaluate(POLICIES, SRE, ssh(DB1))
    assert decision.reason.startswith("denied: closest rule a-sre/web: server db-1")
    assert [c.name for c in decision.checks] == ["project", "servers", "server-project", "server"]


def test_bad_selectors_and_durations_are_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.rules\[0\]\.servers\.matchExpressions\[0\]\.values"):
        parse_policy(
            NS,
            "p",
            {
                "principals": {"users": ["a"]},
                "rules": [
                    {
                        "name": "r",
                        "projects": ["p"],
                        "servers": {"matchExpressions": [{"key": "k", "operator": "In"}]},
                    }
                ],
            },
        )
    with pytest.raises(SpecError, match=r"spec\.rules\[0\]\.sshCertificate\.ttl"):
        parse_policy(
            NS,
            "p",
            {
                "principals": {"users": ["a"]},
                "rules": [{"name": "r", "projects": ["p"], "sshCertificate": {"ttl": "soon"}}],
            },
        )
