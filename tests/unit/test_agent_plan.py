"""The agent's account rules (kubepam.agent.plan): pure, so every case is a table row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubepam.agent import state
from kubepam.agent.plan import (
    CreateAccount,
    DeleteAccount,
    Desired,
    EndSessions,
    Local,
    Managed,
    RemovePrincipals,
    RemoveSudoers,
    WritePrincipals,
    WriteSudoers,
    desired_from_json,
    plan,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
GRACE = timedelta(minutes=10)
RANGE = (60000, 60002)
SYSTEM = Local(users={"root": 0, "alice_local": 1000}, groups={"root": 0, "sudo": 27, "alice_local": 1000})


def run(desired, record, local=SYSTEM, prefix="", now=NOW, uid_range=RANGE):
    return plan(desired, record, local, prefix=prefix, uid_range=uid_range, now=now, grace=GRACE)


def mine(record: dict[str, Managed], extra_users=None) -> Local:
    """The local accounts once the record's accounts exist."""
    users = dict(SYSTEM.users) | {n: m.uid for n, m in record.items()} | (extra_users or {})
    groups = dict(SYSTEM.groups) | {n: m.uid for n, m in record.items()}
    return Local(users=users, groups=groups)


ALICE = Managed(60000, ("alice",), False)
ALICE_SUDO = Managed(60000, ("alice",), True)
GONE = Managed(60000, (), False, removed_at=NOW - timedelta(minutes=5))
GONE_LONG = Managed(60000, (), False, removed_at=NOW - timedelta(minutes=11))

CASES = [
    # (id, desired, record, local (None: the record's accounts exist), actions, record after, refused names)
    (
        "create",
        [Desired("alice", ("alice",))],
        {},
        SYSTEM,
        [CreateAccount("alice", 60000), WritePrincipals("alice", ("alice",))],
        {"alice": ALICE},
        [],
    ),
    (
        "create with sudo",
        [Desired("bob", ("bob", "ops"), sudo=True)],
        {},
        SYSTEM,
        [CreateAccount("bob", 60000), WritePrincipals("bob", ("bob", "ops")), WriteSudoers("bob")],
        {"bob": Managed(60000, ("bob", "ops"), True)},
        [],
    ),
    ("unchanged", [Desired("alice", ("alice",))], {"alice": ALICE}, None, [], {"alice": ALICE}, []),
    (
        "principals change",
        [Desired("alice", ("alice", "oncall"))],
        {"alice": ALICE},
        None,
        [WritePrincipals("alice", ("alice", "oncall"))],
        {"alice": Managed(60000, ("alice", "oncall"))},
        [],
    ),
    (
        "sudo on",
        [Desired("alice", ("alice",), sudo=True)],
        {"alice": ALICE},
        None,
        [WriteSudoers("alice")],
        {"alice": ALICE_SUDO},
        [],
    ),
    (
        "sudo off",
        [Desired("alice", ("alice",))],
        {"alice": ALICE_SUDO},
        None,
        [RemoveSudoers("alice")],
        {"alice": ALICE},
        [],
    ),
    (
        "removed: principals, sudo and sessions go at once, the account stays",
        [],
        {"alice": ALICE_SUDO},
        None,
        [RemovePrincipals("alice"), RemoveSudoers("alice"), EndSessions("alice")],
        {"alice": Managed(60000, (), False, removed_at=NOW)},
        [],
    ),
    ("removed, within the grace period: nothing", [], {"alice": GONE}, None, [], {"alice": GONE}, []),
    (
        "removed, grace period over: deleted and forgotten",
        [],
        {"alice": GONE_LONG},
        None,
        [DeleteAccount("alice", 60000)],
        {},
        [],
    ),
    (
        "back within the grace period: principals again, same UID",
        [Desired("alice", ("alice",))],
        {"alice": GONE},
        None,
        [WritePrincipals("alice", ("alice",))],
        {"alice": ALICE},
        [],
    ),
    (
        "a local account it did not create is refused, never adopted",
        [Desired("root", ("root",)), Desired("alice_local", ("alice",))],
        {},
        SYSTEM,
        [],
        {},
        ["root", "alice_local"],
    ),
    (
        "a local group of that name is refused too",
        [Desired("sudo", ("x",))],
        {},
        SYSTEM,
        [],
        {},
        ["sudo"],
    ),
    (
        "UID range exhausted",
        [Desired(n, (n,)) for n in ("a", "b", "c", "d")],
        {},
        SYSTEM,
        [
            CreateAccount("a", 60000),
            WritePrincipals("a", ("a",)),
            CreateAccount("b", 60001),
            WritePrincipals("b", ("b",)),
            CreateAccount("c", 60002),
            WritePrincipals("c", ("c",)),
        ],
        {"a": Managed(60000, ("a",)), "b": Managed(60001, ("b",)), "c": Managed(60002, ("c",))},
        ["d"],
    ),
    (
        "a UID taken by a foreign user or group is skipped",
        [Desired("alice", ("alice",))],
        {},
        Local(users={"x": 60000}, groups={"y": 60001}),
        [CreateAccount("alice", 60002), WritePrincipals("alice", ("alice",))],
        {"alice": Managed(60002, ("alice",))},
        [],
    ),
    (
        "invalid names and principals are refused",
        [
            Desired("Alice", ("a",)),
            Desired("x" * 33, ("a",)),
            Desired("ok", ("a b",)),
            Desired("ok2", ("a,b",)),
        ],
        {},
        SYSTEM,
        [],
        {},
        ["Alice", "x" * 33, "ok", "ok2"],
    ),
    (
        "a managed name whose local UID changed is no longer ours: left alone",
        [Desired("alice", ("alice", "more"))],
        {"alice": ALICE},
        Local(users={"alice": 1234}, groups={"alice": 1234}),
        [],
        {"alice": ALICE},
        ["alice"],
    ),
    (
        "a managed account deleted by hand is recreated with its UID",
        [Desired("alice", ("alice",))],
        {"alice": ALICE},
        Local(users={}, groups={"alice": 60000}),
        [CreateAccount("alice", 60000, with_group=False), WritePrincipals("alice", ("alice",))],
        {"alice": ALICE},
        [],
    ),
    (
        "grace over but the name now belongs to someone else: forgotten, never deleted",
        [],
        {"alice": GONE_LONG},
        Local(users={"alice": 1234}, groups={}),
        [],
        {},
        ["alice"],
    ),
    (
        "removed, but the name now belongs to someone else: no pkill, no file touched, forgotten",
        [],
        {"alice": ALICE_SUDO},
        Local(users={"alice": 1234}, groups={"alice": 60000}),
        [],
        {},
        ["alice"],
    ),
    (
        "a failed write (not synced): its files are written again",
        [Desired("alice", ("alice",))],
        {"alice": Managed(60000, ("alice",), False, synced=False)},
        None,
        [WritePrincipals("alice", ("alice",)), RemoveSudoers("alice")],
        {"alice": ALICE},
        [],
    ),
    (
        "a failed write with sudo: both written again",
        [Desired("alice", ("alice",), sudo=True)],
        {"alice": Managed(60000, ("alice",), True, synced=False)},
        None,
        [WritePrincipals("alice", ("alice",)), WriteSudoers("alice")],
        {"alice": ALICE_SUDO},
        [],
    ),
    (
        "removed and desired accounts together: removals first",
        [Desired("bob", ("bob",))],
        {"alice": ALICE},
        None,
        [
            RemovePrincipals("alice"),
            EndSessions("alice"),
            CreateAccount("bob", 60001),
            WritePrincipals("bob", ("bob",)),
        ],
        {"alice": Managed(60000, (), False, removed_at=NOW), "bob": Managed(60001, ("bob",))},
        [],
    ),
]


@pytest.mark.parametrize(
    ("desired", "record", "local", "actions", "after", "refused"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan(desired, record, local, actions, after, refused) -> None:
    result = run(desired, record, local if local is not None else mine(record))
    assert list(result.actions) == actions
    assert result.record == after
    assert [r.name for r in result.refused] == refused
    assert all(r.reason for r in result.refused)


def test_foreign_account_is_never_deleted_whatever_the_record_history() -> None:
    """A name refused once (it existed locally) never enters the record, so it can never be removed."""
    result = run([Desired("root", ("root",))], {})
    assert result.record == {}
    later = run([], result.record)
    assert later.actions == ()
    assert "not adopted" in result.refused[0].reason


def test_prefix_is_applied_and_checked() -> None:
    result = run([Desired("alice", ("alice",))], {}, prefix="kp_")
    assert result.actions[0] == CreateAccount("kp_alice", 60000)
    assert result.actions[1] == WritePrincipals("kp_alice", ("alice",))
    assert set(result.record) == {"kp_alice"}
    # the prefix counts towards the 32-character limit
    assert run([Desired("a" * 30, ("a",))], {}, prefix="kp_").refused[0].name == "kp_" + "a" * 30
    # with a prefix, a local 'alice' is not in the way
    assert run([Desired("alice_local", ("a",))], {}, prefix="kp_").refused == ()


def test_restart_keeps_the_record(tmp_path: Path) -> None:
    first = run([Desired("alice", ("alice",), sudo=True)], {})
    first.record["bob"] = Managed(60001, ("bob",), synced=False)
    path = tmp_path / "accounts.json"
    state.save_record(path, first.record)
    assert path.stat().st_mode & 0o777 == 0o600
    reloaded = state.load_record(path)
    assert reloaded == first.record
    del reloaded["bob"]
    assert run([Desired("alice", ("alice",), sudo=True)], reloaded, mine(reloaded)).actions == ()
    removed = run([], reloaded, mine(reloaded))
    state.save_record(path, removed.record)
    again = state.load_record(path)
    assert again["alice"].removed_at == NOW
    deleted = run([], again, mine(again), now=NOW + GRACE)
    assert deleted.actions == (DeleteAccount("alice", 60000),)


def test_unreadable_record_stops_rather_than_forgets(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text("{not json")
    with pytest.raises(state.StateError):
        state.load_record(path)
    path.write_text('{"version": 1, "accounts": {"a": {"principals": []}}}')
    with pytest.raises(state.StateError):
        state.load_record(path)
    assert state.load_record(tmp_path / "absent.json") == {}


def test_desired_from_json() -> None:
    wanted, refused = desired_from_json(
        [
            {"name": "alice", "principals": ["alice"], "sudo": False, "sources": ["x"]},
            {"name": "ops", "principals": ["ops"], "sudo": True},
            {"name": "bad", "principals": "ops"},
            "junk",
            {"name": "truthy", "principals": [], "sudo": "yes"},
        ]
    )
    assert wanted == [Desired("alice", ("alice",)), Desired("ops", ("ops",), True), Desired("truthy", ())]
    assert [r.name for r in refused] == ["bad", "junk"]


def test_duplicate_principals_are_sorted_once() -> None:
    result = run([Desired("alice", ("b", "a", "b"))], {})
    assert result.actions[1] == WritePrincipals("alice", ("a", "b"))
