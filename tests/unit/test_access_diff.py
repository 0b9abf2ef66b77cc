"""The access diff a reviewer reads: each policy change gives exactly the expected lines, computed with
the operator's own decision functions (so a plan cannot disagree with enforcement)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kubepam.domain.access import access_diff

NS = "team-a"
API = "kubepam.io/v1alpha1"


def obj(kind: str, name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, **extra},
        "spec": spec,
    }


def base() -> list[dict[str, Any]]:
    return [
        obj(
            "Project",
            "payments",
            {
                "sharedAccounts": [{"name": "payments_admin", "backend": "kubernetes"}],
                "jit": {
                    "enabled": True,
                    "allowedGroups": ["view"],
                    "maxDuration": "2h",
                    "creators": {"groups": ["sre"]},
                    "namespaces": ["apps"],
                },
            },
        ),
        obj("Server", "web-1", {"project": "payments", "hostname": "web-1"}, labels={"role": "web"}),
        obj("Server", "db-1", {"project": "payments", "hostname": "db-1"}, labels={"role": "db"}),
        obj("CheckoutPolicy", "payments", {"project": "payments", "maxDuration": "30m"}),
        obj(
            "AccessPolicy",
            "sre",
            {
                "principals": {"groups": ["sre"]},
                "rules": [
                    {
                        "name": "web",
                        "projects": ["payments"],
                        "servers": {"matchLabels": {"role": "web"}},
                        "principals": ["ubuntu"],
                        "sshCertificate": {"ttl": "3m"},
                        "accounts": ["payments_admin"],
                        "checkoutDuration": "20m",
                    }
                ],
            },
        ),
        obj(
            "WorkloadConnection",
            "github",
            {"provider": "github", "audience": "kubepam"},
            # status is what a security admin promotes: Draft here
        ),
        obj(
            "WorkloadRole",
            "deployer",
            {
                "connections": ["github"],
                "match": [
                    {"conditions": [{"claim": "ref", "operator": "equals", "value": "refs/heads/main"}]}
                ],
            },
        ),
    ]


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def add_rule(o: list[dict[str, Any]]) -> None:
    named(o, "AccessPolicy", "sre")["spec"]["rules"].append(
        {
            "name": "db",
            "projects": ["payments"],
            "servers": {"matchLabels": {"role": "db"}},
            "principals": ["postgres"],
        }
    )


def widen_selector(o: list[dict[str, Any]]) -> None:
    named(o, "AccessPolicy", "sre")["spec"]["rules"][0]["servers"] = {}


def add_group(o: list[dict[str, Any]]) -> None:
    named(o, "AccessPolicy", "sre")["spec"]["principals"]["groups"].append("oncall")


def promote(o: list[dict[str, Any]]) -> None:
    named(o, "WorkloadConnection", "github")["status"] = {"phase": "Active"}


def shorten(o: list[dict[str, Any]]) -> None:
    named(o, "AccessPolicy", "sre")["spec"]["rules"][0]["checkoutDuration"] = "10m"


def override_past_the_policy(o: list[dict[str, Any]]) -> None:
    """A rule's checkoutDuration overrides the CheckoutPolicy's maximum (as the CRD says and the operator
    grants), even when longer."""
    named(o, "AccessPolicy", "sre")["spec"]["rules"][0]["checkoutDuration"] = "2h"


def delete_policy(o: list[dict[str, Any]]) -> None:
    o.remove(named(o, "AccessPolicy", "sre"))


CASES: list[tuple[str, Callable[[list[dict[str, Any]]], None], list[str], list[bool]]] = [
    (
        "add a rule",
        add_rule,
        [
            "+ group sre -> ssh team-a/db-1 (as postgres, ttl 3m)",
            "+ group sre -> x509 team-a/db-1 (as postgres, ttl 3m)",
        ],
        [True, True],
    ),
    (
        "widen a selector",
        widen_selector,
        [
            "+ group sre -> ssh team-a/db-1 (as ubuntu, ttl 3m)",
            "+ group sre -> x509 team-a/db-1 (as ubuntu, ttl 3m)",
        ],
        [True, True],
    ),
    (
        "add a group",
        add_group,
        [
            "+ group oncall -> checkout team-a/payments/payments_admin (max 20m, elevation no)",
            "+ group oncall -> ssh team-a/web-1 (as ubuntu, ttl 3m)",
            "+ group oncall -> x509 team-a/web-1 (as ubuntu, ttl 3m)",
        ],
        [True, True, True],
    ),
    (
        "promote a connection",
        promote,
        ["+ workload role deployer -> tokens via connection team-a/github"],
        [True],
    ),
    (
        "shorten a duration",
        shorten,
        ["~ group sre -> checkout team-a/payments/payments_admin: max 20m -> 10m"],
        [False],
    ),
    (
        "override past the policy maximum",
        override_past_the_policy,
        ["~ group sre -> checkout team-a/payments/payments_admin: max 20m -> 2h"],
        [True],
    ),
    (
        "delete a policy",
        delete_policy,
        [
            "- group sre -> checkout team-a/payments/payments_admin (max 20m, elevation no)",
            "- group sre -> ssh team-a/web-1 (as ubuntu, ttl 3m)",
            "- group sre -> x509 team-a/web-1 (as ubuntu, ttl 3m)",
        ],
        [False, False, False],
    ),
]


@pytest.mark.parametrize(("change", "edit", "lines", "widening"), CASES, ids=[c[0] for c in CASES])
def test_each_policy_change_gives_exactly_its_access_lines(
    change: str, edit: Callable[[list[dict[str, Any]]], None], lines: list[str], widening: list[bool]
) -> None:
    before = base()
    after = copy.deepcopy(before)
    edit(after)
    changes = access_diff(before, after)
    assert [c.line() for c in changes] == lines
    assert [c.widening for c in changes] == widening


def test_no_change_no_lines_and_widening_sorts_first() -> None:
    assert access_diff(base(), base()) == []
    after = copy.deepcopy(base())
    shorten(after)
    add_rule(after)
    assert [c.widening for c in access_diff(base(), after)] == [True, True, False]


def test_a_jit_creator_group_and_its_limit() -> None:
    after = copy.deepcopy(base())
    named(after, "Project", "payments")["spec"]["jit"]["maxDuration"] = "4h"
    assert [c.line() for c in access_diff(base(), after)] == [
        "~ group sre -> jit in project team-a/payments: max 2h -> 4h"
    ]
    assert access_diff(base(), after)[0].widening
