"""Claim conditions: the rules a verified token's claims must meet, with a trace of every decision.

Used by WorkloadConnection ``claims`` (every condition must hold) and WorkloadRole ``match`` blocks
(blocks OR, conditions inside a block AND).

A condition names a claim either literally (``repository``, ``oidc.circleci.com/project-id``: a name
may contain ``/`` and ``.``) or, when it starts with ``/``, by RFC 6901 JSON pointer into nested
claims (``/google/compute_engine/project_id``).

Values are compared as text, with one defined rendering per JSON type: strings as they are, integers
in decimal (``123``), booleans as ``true``/``false``. Floats, objects and null never compare equal to
anything. A list claim matches when any of its elements matches (``notIn``: when none is in the set).
A missing claim fails every operator, ``notIn`` included: conditions fail closed. The one way to
require that a claim is absent is ``operator: exists`` with ``exists: false`` (a null claim counts as
absent, the complement of ``exists``).

JSON pointers follow RFC 6901; a reference token made only of digits (any script's) must be an array
index in its grammar, ``0`` or ``[1-9][0-9]*`` in ASCII, so ``/groups/01`` and ``/groups/²`` are refused
when the condition is parsed instead of meaning something surprising when a token arrives.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepam.domain.errors import SpecError
from kubepam.domain.patterns import MAX_SUBJECT_LENGTH, PatternError, compile_glob, compile_regex
from kubepam.domain.text import clip, quoted


class Op(enum.StrEnum):
    EQUALS = "equals"
    STARTS_WITH = "startsWith"
    GLOB = "glob"
    IN = "in"
    NOT_IN = "notIn"
    EXISTS = "exists"
    REGEX = "regex"


SINGLE_VALUE_OPS = frozenset({Op.EQUALS, Op.STARTS_WITH, Op.GLOB, Op.REGEX})
SET_OPS = frozenset({Op.IN, Op.NOT_IN})
_MISSING = object()
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")  # RFC 6901 section 4, ASCII digits only


@dataclass(frozen=True)
class ClaimCondition:
    claim: str
    op: Op
    value: str | None = None
    values: frozenset[str] = field(default_factory=frozenset)
    present: bool = True  # operator exists: True asks for the claim, False for its absence

    def expected(self) -> str:
        if self.op in SET_OPS:
            return "[" + ", ".join(sorted(self.values)) + "]"
        if self.op is Op.EXISTS:
            return "" if self.present else "false"
        return "" if self.value is None else self.value

    def describe(self) -> str:
        return f"{self.claim} {self.op.value} {self.expected()}".rstrip()


@dataclass(frozen=True)
class ConditionResult:
    """One line of a trace: what was asked, what the token had, and the verdict."""

    claim: str
    operator: str
    expected: str
    actual: str
    matched: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "operator": self.operator,
            "expected": self.expected,
            "actual": self.actual,
            "matched": self.matched,
            "reason": self.reason,
        }


def parse_condition(raw: Mapping[str, Any], path: str) -> ClaimCondition:
    """Build a condition from its spec form; raises SpecError naming ``path`` on any problem."""
    problems: list[str] = []
    claim = raw.get("claim")
    if not isinstance(claim, str) or not claim:
        problems.append(f"{path}.claim: required, a claim name or a JSON pointer starting with /")
        claim = ""
    try:
        op = Op(str(raw.get("operator")))
    except ValueError:
        allowed = ", ".join(o.value for o in Op)
        raise SpecError([*problems, f"{path}.operator: must be one of {allowed}"]) from None
    value = raw.get("value")
    values = raw.get("values")
    if op in SINGLE_VALUE_OPS:
        if not isinstance(value, str):
            problems.append(f"{path}.value: required (a string) for operator {op.value}")
        elif op is Op.REGEX:
            try:
                compile_regex(value)
            except PatternError as exc:
                problems.append(f"{path}.value: {exc}")
        elif op is Op.GLOB:
            try:
                compile_glob(value)
            except PatternError as exc:
                problems.append(f"{path}.value: {exc}")
        if values:
            problems.append(f"{path}.values: not used by operator {op.value}; use value")
    elif op in SET_OPS:
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            problems.append(f"{path}.values: a non-empty list of strings is required for operator {op.value}")
        if value is not None:
            problems.append(f"{path}.value: not used by operator {op.value}; use values")
    elif value is not None or values:
        problems.append(f"{path}: operator exists takes no value")
    present = raw.get("exists", True)
    if not isinstance(present, bool):
        problems.append(f"{path}.exists: must be true or false")
        present = True
    elif "exists" in raw and op is not Op.EXISTS:
        problems.append(f"{path}.exists: used only with operator exists")
    if claim.startswith("/"):
        try:
            _split_pointer(claim)
        except ValueError as exc:
            problems.append(f"{path}.claim: {exc}")
    if problems:
        raise SpecError(problems)
    return ClaimCondition(
        claim=claim,
        op=op,
        value=value if op in SINGLE_VALUE_OPS else None,
        values=frozenset(values) if op in SET_OPS and isinstance(values, list) else frozenset(),
        present=present if op is Op.EXISTS else True,
    )


def parse_conditions(raw: Sequence[Mapping[str, Any]] | None, path: str) -> tuple[ClaimCondition, ...]:
    problems: list[str] = []
    out: list[ClaimCondition] = []
    for i, item in enumerate(raw or ()):
        try:
            out.append(parse_condition(item, f"{path}[{i}]"))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return tuple(out)


def _numeric(part: str) -> bool:
    return bool(part) and all(unicodedata.category(ch)[0] == "N" for ch in part)


def _split_pointer(pointer: str) -> list[str]:
    """RFC 6901 reference tokens; ValueError for an escape other than ~0/~1, or a token of digits that is
    not an array index (``01``, ``²``, ``٣``): such a pointer would only ever surprise its author."""
    if pointer == "/":
        raise ValueError("JSON pointer names no claim")
    parts = pointer[1:].split("/")
    for part in parts:
        if "~" in part.replace("~0", "").replace("~1", ""):
            raise ValueError(f"invalid escape in JSON pointer {quoted(pointer)} (use ~0 for ~ and ~1 for /)")
        if _numeric(part) and not _ARRAY_INDEX.fullmatch(part):
            raise ValueError(
                f"{quoted(part)} in JSON pointer {quoted(pointer)} is not an array index "
                "(RFC 6901: 0 or a number without leading zeros, ASCII digits)"
            )
    return [p.replace("~1", "/").replace("~0", "~") for p in parts]


def _pointer_parts(pointer: str) -> list[str] | None:
    try:
        return _split_pointer(pointer)
    except ValueError:
        return None  # refused when the condition was parsed; never matches anything


def lookup_claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim's value, or the module's missing marker. ``/a/b`` walks nested objects and lists."""
    if not name.startswith("/"):
        return claims.get(name, _MISSING)
    parts = _pointer_parts(name)
    if parts is None:
        return _MISSING
    node: Any = claims
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and _ARRAY_INDEX.fullmatch(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def claim_present(claims: Mapping[str, Any], name: str) -> bool:
    return lookup_claim(claims, name) is not _MISSING


def as_text(value: Any) -> str | None:
    """The one textual rendering used for comparisons; None for values that never compare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def _texts(value: Any) -> list[str | None]:
    if isinstance(value, list):
        return [as_text(v) for v in value]
    return [as_text(value)]


def render_actual(value: Any) -> str:
    """A short, safe rendering of a claim value for traces (never the whole token)."""
    if value is _MISSING:
        return "<missing>"
    if value is None:
        return "null"
    if isinstance(value, list):
        inner = ", ".join(clip(as_text(v) or type(v).__name__) for v in value[:10])
        more = ", ..." if len(value) > 10 else ""
        return f"[{inner}{more}]"
    if isinstance(value, dict):
        return "<object>"
    text = as_text(value)
    if text is None:
        return f"<{type(value).__name__}>"
    return clip(text)


def _match_one(cond: ClaimCondition, text: str) -> bool:
    if cond.op is Op.EQUALS:
        return text == cond.value
    if cond.op is Op.STARTS_WITH:
        return cond.value is not None and text.startswith(cond.value)
    try:
        if cond.op is Op.GLOB:
            return cond.value is not None and compile_glob(cond.value).fullmatch(text) is not None
        if cond.op is Op.REGEX:
            return cond.value is not None and compile_regex(cond.value).fullmatch(text) is not None
    except UnicodeError:  # a lone surrogate RE2 cannot encode (the token verifier refuses those first)
        return False
    if cond.op is Op.IN:
        return text in cond.values
    return False


def _decide(cond: ClaimCondition, actual: Any) -> tuple[bool, str]:
    if cond.op is Op.EXISTS and not cond.present:
        if actual is _MISSING:
            return True, "claim is absent"
        return (True, "claim is null") if actual is None else (False, "claim is present")
    if actual is _MISSING:
        return False, "claim is missing"
    if cond.op is Op.EQUALS and type(actual) is str and len(actual) <= MAX_SUBJECT_LENGTH:
        return (True, "matches") if actual == cond.value else (False, "does not match")  # the common case
    if cond.op is Op.EXISTS:
        return (True, "claim is present") if actual is not None else (False, "claim is null")
    texts = [t for t in _texts(actual) if t is not None]
    if not texts:
        return False, "claim has no value that can be compared as text"
    if any(len(t) > MAX_SUBJECT_LENGTH for t in texts):
        return False, f"claim value longer than {MAX_SUBJECT_LENGTH} characters"
    if cond.op is Op.NOT_IN:
        hit = [t for t in texts if t in cond.values]
        return (False, f"{quoted(hit[0])} is in the set") if hit else (True, "no value is in the set")
    for text in texts:
        if _match_one(cond, text):
            return True, f"{quoted(text)} matches" if len(texts) > 1 else "matches"
    return False, "no element matches" if isinstance(actual, list) else "does not match"


def holds(cond: ClaimCondition, claims: Mapping[str, Any]) -> bool:
    """Decide one condition without building a trace (the token-exchange hot path)."""
    return _decide(cond, lookup_claim(claims, cond.claim))[0]


def evaluate(cond: ClaimCondition, claims: Mapping[str, Any]) -> ConditionResult:
    """Decide one condition against verified claims, with the line of trace that explains it."""
    actual = lookup_claim(claims, cond.claim)
    matched, reason = _decide(cond, actual)
    return ConditionResult(cond.claim, cond.op.value, cond.expected(), render_actual(actual), matched, reason)


def evaluate_all(
    conditions: Sequence[ClaimCondition], claims: Mapping[str, Any]
) -> tuple[bool, list[ConditionResult]]:
    """AND of conditions; the full trace is returned (no short-circuit) so people see every reason."""
    trace = [evaluate(c, claims) for c in conditions]
    return all(r.matched for r in trace), trace


def all_hold(conditions: Sequence[ClaimCondition], claims: Mapping[str, Any]) -> bool:
    """AND of conditions, short-circuiting: the hot path of token exchange (no trace)."""
    return all(holds(c, claims) for c in conditions)
