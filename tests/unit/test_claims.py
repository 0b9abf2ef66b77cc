"""Claim operators, table-driven: every operator, with the awkward cases (globs on tags, lists, ints,
bools, missing and null claims, nested claims by JSON pointer, names containing / and .)."""

from __future__ import annotations

from typing import Any

import pytest

from kubepam.domain.claims import (
    Op,
    claim_present,
    evaluate,
    evaluate_all,
    holds,
    lookup_claim,
    parse_condition,
)
from kubepam.domain.errors import SpecError

CLAIMS: dict[str, Any] = {
    "sub": "repo:acme/payments:ref:refs/heads/main",
    "repository": "acme/payments",
    "ref": "refs/heads/main",
    "tag": "refs/tags/v1-rc",
    "nested_tag": "refs/tags/v1/rc",
    "run_number": 42,
    "ref_protected": True,
    "draft": False,
    "ratio": 0.5,
    "groups": ["dev", "ops"],
    "empty_list": [],
    "nothing": None,
    "object": {"a": 1},
    "oidc.circleci.com/project-id": "c3f1b3a2-1111-2222-3333-444455556666",
    "google": {"compute_engine": {"project_id": "acme-prod", "project_number": 1234}},
    "a/b": "slash-name",
    "tilde~key": "tilde",
}

# (claim, operator, value or values, expected)
CASES: list[tuple[str, str, Any, bool]] = [
    # equals
    ("repository", "equals", "acme/payments", True),
    ("repository", "equals", "acme/Payments", False),
    ("repository", "equals", "acme/payments ", False),
    ("run_number", "equals", "42", True),  # ints compare as decimal text
    ("run_number", "equals", "42.0", False),
    ("ref_protected", "equals", "true", True),  # bools compare as true/false
    ("ref_protected", "equals", "True", False),
    ("draft", "equals", "false", True),
    ("ratio", "equals", "0.5", False),  # floats never compare
    ("groups", "equals", "ops", True),  # any element of a list
    ("groups", "equals", "dev,ops", False),
    ("empty_list", "equals", "", False),
    ("missing", "equals", "x", False),
    ("nothing", "equals", "None", False),
    ("object", "equals", "{'a': 1}", False),
    # startsWith
    ("sub", "startsWith", "repo:acme/payments:", True),
    ("sub", "startsWith", "repo:acme/pay", True),
    ("sub", "startsWith", "repo:evil/", False),
    ("run_number", "startsWith", "4", True),
    ("missing", "startsWith", "", False),
    # glob: * stays inside a segment, ** crosses /, ? is one character, [ ] are literal
    ("tag", "glob", "refs/tags/v*", True),
    ("tag", "glob", "refs/tags/v1-*", True),
    ("tag", "glob", "refs/tags/v?-rc", True),
    ("tag", "glob", "refs/tags/v1", False),  # full match, not prefix
    ("nested_tag", "glob", "refs/tags/v*", False),  # * does not cross /
    ("nested_tag", "glob", "refs/tags/**", True),
    ("tag", "glob", "refs/tags/v[0-9]*", False),  # brackets are literal
    ("tag", "glob", "*", False),  # one segment only
    ("tag", "glob", "**", True),
    ("ref", "glob", "refs/heads/*", True),
    ("repository", "glob", "acme/*", True),
    ("repository", "glob", "acme.*", False),  # dot is literal
    ("groups", "glob", "o*", True),
    ("missing", "glob", "**", False),
    # in / notIn
    ("repository", "in", ["acme/payments", "acme/web"], True),
    ("repository", "in", ["acme/web"], False),
    ("run_number", "in", ["41", "42"], True),
    ("groups", "in", ["ops", "admin"], True),
    ("groups", "in", ["admin"], False),
    ("repository", "notIn", ["evil/repo"], True),
    ("repository", "notIn", ["acme/payments"], False),
    ("groups", "notIn", ["admin"], True),
    ("groups", "notIn", ["dev"], False),  # any element in the set fails notIn
    ("missing", "notIn", ["x"], False),  # missing fails closed
    ("nothing", "notIn", ["x"], False),
    ("empty_list", "notIn", ["x"], False),
    # exists
    ("repository", "exists", None, True),
    ("draft", "exists", None, True),  # false is present
    ("empty_list", "exists", None, True),
    ("nothing", "exists", None, False),  # null is not present
    ("missing", "exists", None, False),
    # regex: RE2, full match
    ("ref", "regex", "refs/heads/(main|release-.*)", True),
    ("ref", "regex", "refs/heads/ma", False),  # full match, not search
    ("ref", "regex", "heads", False),
    ("run_number", "regex", "[0-9]+", True),
    ("groups", "regex", "o.s", True),
    # names with / and ., nested claims by JSON pointer
    ("oidc.circleci.com/project-id", "equals", "c3f1b3a2-1111-2222-3333-444455556666", True),
    ("/google/compute_engine/project_id", "equals", "acme-prod", True),
    ("/google/compute_engine/project_number", "in", ["1234"], True),
    ("/google/compute_engine/zone", "exists", None, False),
    ("/a~1b", "equals", "slash-name", True),  # ~1 is /
    ("/tilde~0key", "equals", "tilde", True),  # ~0 is ~
    ("/groups/1", "equals", "ops", True),  # pointer into a list
    ("/groups/9", "exists", None, False),
]


def _cond(claim: str, op: str, arg: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"claim": claim, "operator": op}
    if isinstance(arg, list):
        raw["values"] = arg
    elif arg is not None:
        raw["value"] = arg
    return raw


@pytest.mark.parametrize(
    ("claim", "op", "arg", "expected"), CASES, ids=[f"{c}-{o}-{a}" for c, o, a, _ in CASES]
)
def test_operator(claim: str, op: str, arg: Any, expected: bool) -> None:
    cond = parse_condition(_cond(claim, op, arg), "c")
    result = evaluate(cond, CLAIMS)
    assert result.matched is expected, result.reason
    assert holds(cond, CLAIMS) is expected  # the hot path agrees with the traced path


def test_every_operator_is_covered_by_the_table() -> None:
    assert {op for _, op, _, _ in CASES} == {o.value for o in Op}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"claim": "x", "operator": "equals"}, "c.value: required"),
        ({"claim": "x", "operator": "in", "values": []}, "c.values: a non-empty list"),
        ({"claim": "x", "operator": "in", "value": "a", "values": ["a"]}, "c.value: not used by operator in"),
        ({"claim": "x", "operator": "exists", "value": "a"}, "takes no value"),
        ({"claim": "x", "operator": "matches", "value": "a"}, "c.operator: must be one of"),
        ({"claim": "", "operator": "exists"}, "c.claim: required"),
        (
            {"claim": "x", "operator": "regex", "value": "(a)\\1"},
            "not a valid RE2 expression",
        ),  # backreference
        ({"claim": "x", "operator": "regex", "value": "(?=a)"}, "not a valid RE2 expression"),  # lookahead
        ({"claim": "x", "operator": "regex", "value": "a" * 600}, "longer than 512"),
        ({"claim": "/a~2", "operator": "exists"}, "invalid escape"),
    ],
)
def test_bad_conditions_are_refused_with_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_condition(raw, "c")
    assert message in str(err.value)


def test_regex_cost_is_linear_on_hostile_input() -> None:
    """A classic catastrophic-backtracking pattern is harmless under RE2."""
    cond = parse_condition({"claim": "x", "operator": "regex", "value": "(a+)+$"}, "c")
    assert not holds(cond, {"x": "a" * 4000 + "!"})


def test_overlong_claim_values_never_match() -> None:
    cond = parse_condition({"claim": "x", "operator": "glob", "value": "**"}, "c")
    result = evaluate(cond, {"x": "a" * 5000})
    assert not result.matched and "longer than" in result.reason


def test_trace_keeps_every_condition_and_renders_values_safely() -> None:
    conds = [
        parse_condition(_cond(c, o, a), "c")
        for c, o, a in [
            ("repository", "equals", "acme/payments"),
            ("missing", "exists", None),
            ("object", "exists", None),
        ]
    ]
    ok, trace = evaluate_all(conds, CLAIMS)
    assert not ok
    assert [r.matched for r in trace] == [True, False, True]
    assert trace[1].actual == "<missing>"
    assert trace[2].actual == "<object>"


def test_lookup_distinguishes_literal_names_from_pointers() -> None:
    assert lookup_claim({"a/b": 1, "a": {"b": 2}}, "a/b") == 1
    assert lookup_claim({"a/b": 1, "a": {"b": 2}}, "/a/b") == 2


@pytest.mark.parametrize(
    ("claim", "matched", "reason"),
    [
        ("missing", True, "claim is absent"),
        ("nothing", True, "claim is null"),  # null counts as absent, the complement of exists
        ("repository", False, "claim is present"),
        ("draft", False, "claim is present"),  # false is a value
        ("empty_list", False, "claim is present"),
        ("/google/compute_engine/zone", True, "claim is absent"),
        ("/google/compute_engine/project_id", False, "claim is present"),
    ],
)
def test_exists_false_requires_the_claim_to_be_absent(claim: str, matched: bool, reason: str) -> None:
    cond = parse_condition({"claim": claim, "operator": "exists", "exists": False}, "c")
    result = evaluate(cond, CLAIMS)
    assert (result.matched, result.reason) == (matched, reason)
    assert holds(cond, CLAIMS) is matched
    assert cond.describe() == f"{claim} exists false" and result.expected == "false"


def test_exists_true_is_the_default_and_exists_is_only_for_operator_exists() -> None:
    assert parse_condition({"claim": "x", "operator": "exists", "exists": True}, "c") == parse_condition(
        {"claim": "x", "operator": "exists"}, "c"
    )
    with pytest.raises(SpecError, match=r"c\.exists: used only with operator exists"):
        parse_condition({"claim": "x", "operator": "equals", "value": "a", "exists": False}, "c")
    with pytest.raises(SpecError, match=r"c\.exists: must be true or false"):
        parse_condition({"claim": "x", "operator": "exists", "exists": "false"}, "c")


@pytest.mark.parametrize(
    "claim", ["/groups/01", "/groups/00", "/groups/²", "/groups/٣", "/groups/\uff11", "/a/0/07/b"]
)
def test_pointer_parts_of_digits_must_be_rfc6901_array_indexes(claim: str) -> None:
    with pytest.raises(SpecError, match=r"c\.claim: .* is not an array index \(RFC 6901"):
        parse_condition({"claim": claim, "operator": "glob", "value": "o*"}, "c")


def test_pointer_indexes_use_the_ascii_grammar_when_claims_are_read() -> None:
    claims = {"groups": ["dev", "ops"], "m": {"01": "member", "²": "sup"}}
    assert lookup_claim(claims, "/groups/0") == "dev" and lookup_claim(claims, "/groups/1") == "ops"
    assert not claim_present(claims, "/groups/01")  # never resolves, not even if parsing let it through
    assert not claim_present(claims, "/groups/²")
    assert not claim_present(claims, "/groups/2")
    assert not claim_present(claims, "/groups/-")


def test_matching_never_raises_on_a_lone_surrogate() -> None:
    cond = parse_condition({"claim": "x", "operator": "regex", "value": ".*"}, "c")
    assert not holds(cond, {"x": "a\ud800"})  # the verifier refuses such tokens first; matching fails closed


def test_trace_values_and_reasons_are_cut_to_64_characters() -> None:
    value = "v" * 1000
    cond = parse_condition({"claim": "x", "operator": "notIn", "values": [value]}, "c")
    result = evaluate(cond, {"x": [value]})
    assert not result.matched and len(result.reason) < 90 and result.reason.endswith("... is in the set")
    assert len(result.actual) < 80
