"""JIT account rules, table-driven: names, owners and creators, groups, reasons, durations,
re-enabling, bounded history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kubepam.domain import jit
from kubepam.domain.errors import SpecError
from kubepam.domain.jit import (
    HISTORY_MAX,
    account_name,
    check,
    needs_activation,
    parse_settings,
    same_reason_again,
    service_account_name,
    with_history,
)

SETTINGS = parse_settings(
    {
        "enabled": True,
        "allowedGroups": ["view", "edit"],
        "creators": {"groups": ["sre"]},
        "maxDuration": "4h",
        "namespaces": ["apps"],
    },
    "team",
)
GOOD = {"project": "p", "owner": "alice", "groups": ["view"], "reason": "CHG-1 deploy", "duration": "1h"}


@pytest.mark.parametrize(
    ("spec", "actor", "groups", "message"),
    [
        (
            {**GOOD, "owner": "alexandrina_longe"},
            "alexandrina_longe",
            ["sre"],
            "is 21 characters; at most 20",
        ),
        ({**GOOD, "accountName": "admin"}, "alice", ["sre"], "must look like <name>_jit"),
        (
            {**GOOD, "owner": "bob"},
            "alice",
            ["sre"],
            "alice may only create JIT accounts they own (owner is bob)",
        ),
        (GOOD, "alice", ["kubepam:users"], "alice may not create JIT accounts in project p (creators: sre)"),
        (
            {**GOOD, "groups": ["cluster-admin"]},
            "alice",
            ["sre"],
            "group cluster-admin is not in project p's allowed",
        ),
        ({**GOOD, "groups": []}, "alice", ["sre"], "spec.groups: at least one group is required"),
        ({**GOOD, "reason": ""}, "alice", ["sre"], "spec.reason: a reason is required"),
        ({**GOOD, "duration": "5h"}, "alice", ["sre"], "spec.duration 5h exceeds project p's maximum 4h"),
        (
            {**GOOD, "accountName": "bob_jit"},
            "alice",
            ["sre"],
            "only kubepam:security-admins choose spec.accountName (yours is alice_jit)",
        ),
    ],
)
def test_refusals_have_their_own_message(
    spec: dict[str, Any], actor: str, groups: list[str], message: str
) -> None:
    with pytest.raises(SpecError) as err:
        check(spec, SETTINGS, "p", actor, groups)
    assert any(message in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("actor", "groups"),
    [
        ("alice", ["sre"]),  # the owner, in a creators group
        ("secadmin", ["kubepam:security-admins"]),  # an admin, for someone else, in no creators group
        ("root", ["system:masters"]),
    ],
)
def test_allowed_creators(actor: str, groups: list[str]) -> None:
    request = check(GOOD, SETTINGS, "p", actor, groups)
    assert request.account == "alice_jit" and request.groups == ("view",)


def test_disabled_projects_refuse() -> None:
    with pytest.raises(SpecError, match="does not allow JIT accounts"):
        check(GOOD, parse_settings({}, "team"), "p", "alice", ["sre"])


def test_names() -> None:
    assert account_name({"owner": "bob"}) == "bob_jit"
    assert service_account_name("db_ops_jit") == "db-ops-jit"
    assert parse_settings({"namespaces": ["apps"]}, "team").namespaces == ("apps",)


@pytest.mark.parametrize(
    ("namespaces", "message"),
    [
        ([], "spec.jit.namespaces: name the namespaces where the privileged groups apply"),
        (["apps", "team"], "spec.jit.namespaces must not include team: it holds the project's CA keys"),
    ],
)
def test_jit_groups_never_apply_where_the_keys_are(namespaces: list[str], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_settings({"enabled": True, "allowedGroups": ["edit"], "namespaces": namespaces}, "team")
    assert message in err.value.problems[0]
    # the postgresql backend binds nothing in Kubernetes
    assert parse_settings({"enabled": True, "backend": "postgresql"}, "team").namespaces == ()


def test_a_security_admin_may_choose_another_account_name() -> None:
    spec = {**GOOD, "owner": "bob", "accountName": "ops_jit"}
    assert check(spec, SETTINGS, "p", "secadmin", ["kubepam:security-admins"]).account == "ops_jit"


@pytest.mark.parametrize(
    ("phase", "generation", "activated", "expected"),
    [
        (None, 1, None, True),
        ("Active", 1, 1, False),
        ("Active", 2, 1, True),
        ("Disabled", 2, 1, True),
        ("Disabled", 1, 1, False),
        ("Failed", 3, 2, True),
    ],
)
def test_activation(phase: str | None, generation: int, activated: int | None, expected: bool) -> None:
    assert needs_activation(phase, generation, activated) is expected


def test_reenabling_takes_a_new_reason_and_history_is_bounded() -> None:
    history = [{"reason": "CHG-1"}]
    assert same_reason_again(history, "CHG-1", "Disabled")
    assert not same_reason_again(history, "CHG-2", "Disabled")
    long = with_history([{"reason": str(i)} for i in range(HISTORY_MAX)], {"reason": "new"})
    assert len(long) == HISTORY_MAX and long[-1]["reason"] == "new" and long[0]["reason"] == "1"


K8S = jit.JitSettings(True, "kubernetes", ("view", "edit"), frozenset(), timedelta(hours=2), ("apps",), None)


@pytest.mark.parametrize(
    ("current", "grant", "namespaces", "groups"),
    [
        (K8S, None, ("apps",), ("view", "edit")),  # nothing recorded: the project's settings
        (None, None, None, None),  # neither: nothing says how
        (None, {"backend": "kubernetes", "namespaces": ["old"], "groups": ["view"]}, ("old",), ("view",)),
        (
            K8S,
            {"backend": "kubernetes", "namespaces": ["old"], "groups": ["admin"]},
            ("apps", "old"),
            ("view", "edit", "admin"),
        ),
        (None, {"backend": "postgresql", "namespaces": [], "groups": ["app_reader"]}, None, None),
    ],
    ids=["settings-only", "nothing", "project-gone", "settings-changed", "postgresql-project-gone"],
)
def test_what_is_taken_away_is_what_was_granted(
    current: jit.JitSettings | None,
    grant: dict[str, Any] | None,
    namespaces: tuple[str, ...] | None,
    groups: tuple[str, ...] | None,
) -> None:
    removal = jit.removal_settings(current, grant)
    assert (removal.namespaces if removal else None) == namespaces
    assert (removal.allowed_groups if removal else None) == groups


def test_the_grant_record_keeps_what_an_earlier_window_left() -> None:
    first = jit.grant_record(K8S, ["edit"])
    assert first == {"backend": "kubernetes", "namespaces": ["apps"], "groups": ["edit"]}
    moved = jit.JitSettings(True, "kubernetes", ("view",), frozenset(), timedelta(hours=2), ("new",), None)
    assert jit.grant_record(moved, ["view"], first) == {
        "backend": "kubernetes",
        "namespaces": ["new", "apps"],
        "groups": ["view", "edit"],
    }
