"""WorkloadRole rules: attribute-matching blocks over verified claims, and the role's SSH username.

Blocks OR, conditions inside a block AND. A role only ever matches tokens that came through an
Active connection in its own namespace (and, when ``spec.connections`` is given, one of those).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepam.domain.claims import ClaimCondition, ConditionResult, evaluate_all, holds, parse_conditions
from kubepam.domain.errors import SpecError

MAX_LINUX_USERNAME = 32
USERNAME_PREFIX = "wl_"
_LINUX_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


def workload_username(role_name: str) -> str:
    """``wl_<role>`` as a valid Linux user name (``.`` becomes ``_``), at most 32 characters."""
    name = USERNAME_PREFIX + role_name.replace(".", "_")
    if len(name) > MAX_LINUX_USERNAME or not _LINUX_NAME.match(name):
        raise SpecError(
            [
                f"metadata.name: {role_name!r} gives SSH user {name!r}, which must be a Linux user "
                f"name of at most {MAX_LINUX_USERNAME} characters (role names at most 29)"
            ]
        )
    return name


@dataclass(frozen=True)
class Role:
    namespace: str
    name: str
    username: str
    connections: frozenset[str] | None  # None: any connection of the namespace
    blocks: tuple[tuple[ClaimCondition, ...], ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def accepts_connection(self, namespace: str, name: str) -> bool:
        return namespace == self.namespace and (self.connections is None or name in self.connections)

    def matches(self, claims: Mapping[str, Any]) -> bool:
        return any(all(holds(c, claims) for c in block) for block in self.blocks)


@dataclass(frozen=True)
class RoleTrace:
    role: str
    matched: bool
    matched_block: int | None
    blocks: list[list[ConditionResult]]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "matched": self.matched,
            "matchedBlock": self.matched_block,
            "reason": self.reason,
            "blocks": [[r.to_dict() for r in block] for block in self.blocks],
        }


def parse_role(namespace: str, name: str, spec: Mapping[str, Any]) -> Role:
    problems: list[str] = []
    username = ""
    try:
        username = workload_username(name)
    except SpecError as exc:
        problems.extend(exc.problems)
    raw_blocks = spec.get("match")
    blocks: list[tuple[ClaimCondition, ...]] = []
    if not isinstance(raw_blocks, list) or not raw_blocks:
        problems.append("spec.match: at least one block of conditions is required")
    else:
        for i, block in enumerate(raw_blocks):
            conditions = block.get("conditions") if isinstance(block, Mapping) else None
            if not isinstance(conditions, list) or not conditions:
                problems.append(f"spec.match[{i}].conditions: at least one condition is required")
                continue
            try:
                blocks.append(parse_conditions(conditions, f"spec.match[{i}].conditions"))
            except SpecError as exc:
                problems.extend(exc.problems)
    conns = spec.get("connections")
    if problems:
        raise SpecError(problems)
    return Role(
        namespace=namespace,
        name=name,
        username=username,
        connections=frozenset(conns) if isinstance(conns, list) and conns else None,
        blocks=tuple(blocks),
    )


def trace_role(
    role: Role, conn_namespace: str, conn_name: str, active: bool, claims: Mapping[str, Any]
) -> RoleTrace:
    """Explain whether ``role`` would match, block by block, for `kubepam workload explain`."""
    traces: list[list[ConditionResult]] = []
    first: int | None = None
    for i, block in enumerate(role.blocks):
        ok, trace = evaluate_all(block, claims)
        traces.append(trace)
        if ok and first is None:
            first = i
    if not role.accepts_connection(conn_namespace, conn_name):
        return RoleTrace(role.ref, False, None, traces, "role does not accept this connection")
    if first is None:
        return RoleTrace(role.ref, False, None, traces, "no block matches")
    if not active:
        return RoleTrace(
            role.ref, False, first, traces, f"block {first} matches, but the connection is Draft"
        )
    return RoleTrace(role.ref, True, first, traces, f"block {first} matches")


def matching_roles(
    roles: Sequence[Role], conn_namespace: str, conn_name: str, claims: Mapping[str, Any]
) -> list[Role]:
    return [r for r in roles if r.accepts_connection(conn_namespace, conn_name) and r.matches(claims)]
