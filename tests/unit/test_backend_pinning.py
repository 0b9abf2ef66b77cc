"""Backend pinning, the pure decision: which host:port an admin Secret's kubepam.io/allowed-hosts
annotation allows, and what the refusal says."""

from __future__ import annotations

import pytest

from kubepam.domain.backends import (
    ALLOWED_HOSTS_ANNOTATION,
    Endpoint,
    allowed_endpoints,
    endpoint,
    parse_entry,
    pinning_problem,
)

SECRET = "team/pg-admin"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1:5432", Endpoint("127.0.0.1", 5432)),
        ("db.example.com:6432", Endpoint("db.example.com", 6432)),
        ("DB.Example.COM.:6432", Endpoint("db.example.com", 6432)),
        ("db.example.com", Endpoint("db.example.com", 5432)),
        ("  db:5433  ", Endpoint("db", 5433)),
        ("[::1]:5433", Endpoint("::1", 5433)),
        ("[0:0::1]", Endpoint("::1", 5432)),
        ("::1", Endpoint("::1", 5432)),
        ("", None),
        ("db:", None),
        ("db:0", None),
        ("db:65536", None),
        ("db:54x", None),
        ("[::1", None),
        ("[::1]5432", None),
        ("user@db:5432", None),
        ("db/x:5432", None),
        (":5432", None),
    ],
)
def test_entries_are_parsed_and_normalised(entry: str, expected: Endpoint | None) -> None:
    assert parse_entry(entry) == expected


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 5432, Endpoint("127.0.0.1", 5432)),
        ("DB.example.com", None, Endpoint("db.example.com", 5432)),
        ("db.example.com.", "6432", Endpoint("db.example.com", 6432)),
        ("0:0::1", 5432, Endpoint("::1", 5432)),
    ],
)
def test_the_requested_endpoint_is_normalised_the_same_way(
    host: str, port: int | str | None, expected: Endpoint
) -> None:
    assert endpoint(host, port) == expected


def test_an_absent_annotation_is_told_apart_from_an_empty_one() -> None:
    assert allowed_endpoints({}) is None
    assert allowed_endpoints({ALLOWED_HOSTS_ANNOTATION: ""}) == frozenset()
    assert allowed_endpoints({ALLOWED_HOSTS_ANNOTATION: "a:1, b ,junk:x,,[::1]:2"}) == {
        Endpoint("a", 1),
        Endpoint("b", 5432),
        Endpoint("::1", 2),
    }


@pytest.mark.parametrize(
    ("annotation", "host", "port", "allowed"),
    [
        ("127.0.0.1:5432", "127.0.0.1", 5432, True),
        ("127.0.0.1:5432", "127.0.0.1", 5433, False),  # the port is part of the pin
        ("127.0.0.1", "127.0.0.1", 5432, True),  # a bare host means the default port
        ("127.0.0.1", "127.0.0.1", 6432, False),
        ("db.prod.svc:5432, db.stage.svc:5432", "DB.STAGE.SVC", 5432, True),
        ("db.prod.svc:5432", "db.prod.svc.", None, True),
        ("db.prod.svc:5432", "evil.example.com", 5432, False),
        ("db.prod.svc:5432", "db.prod.svc.evil.example.com", 5432, False),
        ("localhost:5432", "127.0.0.1", 5432, False),  # names are not resolved: list what the spec says
        ("[::1]:5432", "::1", 5432, True),
        ("", "127.0.0.1", 5432, False),
        ("*", "127.0.0.1", 5432, False),  # no wildcards
        ("127.0.0.1:5432,garbage:x", "127.0.0.1", 5432, True),  # a bad entry spoils only itself
    ],
)
def test_only_listed_endpoints_are_allowed(
    annotation: str, host: str, port: int | None, allowed: bool
) -> None:
    problem = pinning_problem(SECRET, {ALLOWED_HOSTS_ANNOTATION: annotation}, host, port)
    assert (problem == "") is allowed
    if not allowed:
        assert SECRET in problem and ALLOWED_HOSTS_ANNOTATION in problem and "is not allowed" in problem
        assert str(endpoint(host, port)) in problem


def test_a_secret_without_the_annotation_is_refused_naming_it() -> None:
    problem = pinning_problem(SECRET, {"other": "x"}, "127.0.0.1", 5432)
    assert problem.startswith(f"admin Secret {SECRET} has no annotation {ALLOWED_HOSTS_ANNOTATION}")
    assert "127.0.0.1:5432" in problem


def test_endpoints_print_as_host_port() -> None:
    assert str(Endpoint("db", 5432)) == "db:5432" and str(Endpoint("::1", 5432)) == "[::1]:5432"
