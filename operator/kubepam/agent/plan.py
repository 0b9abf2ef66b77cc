"""The agent's account decisions, PURE (no I/O, no clock): from the broker's desired accounts, the
agent's record of the accounts it created, the local users and groups, the name prefix, the UID range
and now, which actions bring the server to the desired state.

The one rule above all: the agent acts only on accounts it created. A desired name that already exists
locally (as a user or a group) and is not in the managed record is refused with a reason, never adopted;
an account in the record whose local UID no longer matches the record is no longer the agent's and is
left alone. Removal is two steps: at once the principals file and sudoers drop-in go and the sessions
end (nobody can log in any more); the account and its home are deleted only after the grace period.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

# POSIX portable user names as useradd accepts them by default, at most 32 characters (the protocol's
# bound on a user in events); no dots, so the name is also a valid sudoers.d file name.
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PRINCIPAL = re.compile(r"^[^\s,]{1,256}$")  # one per line in an AuthorizedPrincipalsFile, no options
MAX_PRINCIPALS = 64


@dataclass(frozen=True)
class Desired:
    """One account the broker wants on this server (its `accounts[]` entry)."""

    name: str
    principals: tuple[str, ...]
    sudo: bool = False


@dataclass(frozen=True)
class Managed:
    """An account the agent created, as its record keeps it."""

    uid: int
    principals: tuple[str, ...] = ()
    sudo: bool = False
    removed_at: datetime | None = None  # when it left the desired state (None while desired)
    synced: bool = True  # False after a failed write: the next plan writes its files again


@dataclass(frozen=True)
class Local:
    """The server's users and groups, name -> id (pwd and grp)."""

    users: Mapping[str, int] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)


# The actions, in the order the system executes them.
@dataclass(frozen=True)
class RemovePrincipals:
    name: str


@dataclass(frozen=True)
class RemoveSudoers:
    name: str


@dataclass(frozen=True)
class EndSessions:
    name: str


@dataclass(frozen=True)
class DeleteAccount:
    name: str
    uid: int


@dataclass(frozen=True)
class CreateAccount:
    name: str
    uid: int
    with_group: bool = True  # False when the agent's group (same ID) survived and only the user is missing


@dataclass(frozen=True)
class WritePrincipals:
    name: str
    principals: tuple[str, ...]


@dataclass(frozen=True)
class WriteSudoers:
    name: str


Action = (
    RemovePrincipals
    | RemoveSudoers
    | EndSessions
    | DeleteAccount
    | CreateAccount
    | WritePrincipals
    | WriteSudoers
)


@dataclass(frozen=True)
class Refusal:
    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    refused: tuple[Refusal, ...]
    record: dict[str, Managed]  # the record once the actions are done


def desired_from_json(accounts: Iterable[Any]) -> tuple[list[Desired], list[Refusal]]:
    """The access answer's `accounts` as Desired entries; malformed entries are refused, not guessed."""
    out: list[Desired] = []
    refused: list[Refusal] = []
    for raw in accounts:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            refused.append(Refusal(str(raw)[:64], "malformed account entry"))
            continue
        principals = raw.get("principals", [])
        if not isinstance(principals, list) or not all(isinstance(p, str) for p in principals):
            refused.append(Refusal(raw["name"][:64], "principals must be a list of strings"))
            continue
        out.append(Desired(raw["name"], tuple(principals), raw.get("sudo") is True))
    return out, refused


def plan(
    desired: Iterable[Desired],
    record: Mapping[str, Managed],
    local: Local,
    *,
    prefix: str,
    uid_range: tuple[int, int],
    now: datetime,
    grace: timedelta,
) -> Plan:
    removals: list[Action] = []
    changes: list[Action] = []
    refused: list[Refusal] = []
    new: dict[str, Managed] = dict(record)
    wanted: dict[str, Desired] = {}
    taken = set(local.users.values()) | set(local.groups.values()) | {m.uid for m in record.values()}

    for want in desired:
        name = prefix + want.name
        problem = _check(name, want)
        if problem:
            refused.append(Refusal(name, problem))
            continue
        if name in wanted:
            refused.append(Refusal(name, "listed twice"))
            continue
        wanted[name] = want
        principals = tuple(sorted(set(want.principals)))
        mine = record.get(name)
        if mine is None:
            if name in local.users or name in local.groups:
                refused.append(
                    Refusal(name, "exists locally and was not created by kubepam-agent: not adopted")
                )
                continue
            uid = next((u for u in range(uid_range[0], uid_range[1] + 1) if u not in taken), None)
            if uid is None:
                refused.append(Refusal(name, f"no free UID in {uid_range[0]}-{uid_range[1]}"))
                continue
            taken.add(uid)
            changes += [CreateAccount(name, uid), WritePrincipals(name, principals)]
            if want.sudo:
                changes.append(WriteSudoers(name))
            new[name] = Managed(uid, principals, want.sudo)
            continue
        if not _still_mine(name, mine, local):
            refused.append(Refusal(name, _not_mine_reason(name, mine, local)))
            continue
        recreate = name not in local.users
        if recreate:
            changes.append(CreateAccount(name, mine.uid, with_group=name not in local.groups))
        force = recreate or not mine.synced or mine.removed_at is not None
        if force or principals != mine.principals:
            changes.append(WritePrincipals(name, principals))
        if want.sudo and (force or not mine.sudo):
            changes.append(WriteSudoers(name))
        elif not want.sudo and (mine.sudo or not mine.synced):
            changes.append(RemoveSudoers(name))
        new[name] = Managed(mine.uid, principals, want.sudo)

    for name, mine in sorted(record.items()):
        if name in wanted:
            continue
        if not _still_mine(name, mine, local):  # someone else's now: no action at all, and forgotten
            refused.append(Refusal(name, _not_mine_reason(name, mine, local) + "; forgotten, not touched"))
            del new[name]
            continue
        if mine.removed_at is None:
            removals.append(RemovePrincipals(name))
            if mine.sudo:
                removals.append(RemoveSudoers(name))
            if name in local.users:
                removals.append(EndSessions(name))
            new[name] = replace(mine, principals=(), sudo=False, removed_at=now)
            continue
        if now < mine.removed_at + grace:
            continue
        if name in local.users or local.groups.get(name) == mine.uid:
            removals.append(DeleteAccount(name, mine.uid))
        del new[name]
    return Plan(tuple(removals + changes), tuple(refused), new)


def _check(name: str, want: Desired) -> str:
    if not NAME.match(name):
        return "not a valid local user name (a-z, 0-9, _ and -, at most 32 characters)"
    if len(want.principals) > MAX_PRINCIPALS:
        return f"more than {MAX_PRINCIPALS} principals"
    bad = next((p for p in want.principals if not PRINCIPAL.match(p)), None)
    if bad is not None:
        return f"principal {bad[:40]!r} is empty, too long or holds whitespace or a comma"
    return ""


def _still_mine(name: str, mine: Managed, local: Local) -> bool:
    user_ok = local.users.get(name, mine.uid) == mine.uid
    group_ok = local.groups.get(name, mine.uid) == mine.uid
    # recreating it needs the UID free of anyone else
    uid_free = name in local.users or mine.uid not in {u for n, u in local.users.items() if n != name}
    return user_ok and group_ok and uid_free


def _not_mine_reason(name: str, mine: Managed, local: Local) -> str:
    if name in local.users and local.users[name] != mine.uid:
        return f"local UID {local.users[name]} is not the {mine.uid} kubepam-agent created"
    if name in local.groups and local.groups[name] != mine.uid:
        return f"local group ID {local.groups[name]} is not the {mine.uid} kubepam-agent created"
    return f"UID {mine.uid} now belongs to another local user"
