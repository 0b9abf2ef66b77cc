"""The audit line (docs/audit.md): one JSON object per line with the v1 fields, keys sorted, time in
RFC 3339 UTC with milliseconds, a closed set of actions, and a guard that drops secrets (by field name,
JWTs, PEM blocks, private keys) with a warning, never raising."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubepam.adapters import audit
from kubepam.adapters.audit import AUDIT_SCHEMA, Action, Outcome, Target

JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ3b3JrbG9hZDp0ZWFtL2NpIiwianRpIjoiYWJjIn0."
    "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
)
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+Zk7+5\n-----END PRIVATE KEY-----\n"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
)
SSH_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ3Zm9vYmFyYmF6cXV4cXV1eHh5enp5eHd2dXRzcnFwb25t me@host"
ECDSA_LINE = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOrandomrandomrand"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler = Lines()
    logger = logging.getLogger(audit.LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def write(**overrides: Any) -> dict[str, Any] | None:
    fields: dict[str, Any] = {
        "actor": "alice",
        "groups": ["users", "sec"],
        "target": Target("Checkout", "team", "c1"),
        "reason": "incident 42",
        "correlation_id": "uid-1",
        "details": {"account": "admin"},
        "now": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    }
    fields.update(overrides)
    action = fields.pop("action", Action.CHECKOUT_GRANTED)
    return audit.record(action, fields.pop("outcome", Outcome.SUCCESS), **fields)


def test_one_line_of_sorted_json_with_every_v1_field(lines: list[str]) -> None:
    write()
    assert len(lines) == 1 and "\n" not in lines[0]
    parsed = json.loads(lines[0])
    assert list(parsed) == sorted(parsed)
    assert parsed == {
        "schema": AUDIT_SCHEMA,
        "time": "2026-01-02T03:04:05.678Z",
        "action": "checkout.granted",
        "outcome": "success",
        "actor": "alice",
        "groups": ["sec", "users"],
        "target": {"kind": "Checkout", "namespace": "team", "name": "c1"},
        "reason": "incident 42",
        "correlationId": "uid-1",
        "details": {"account": "admin"},
    }


def test_time_is_utc_with_milliseconds_by_default(lines: list[str]) -> None:
    write(now=None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", json.loads(lines[0])["time"])


def test_the_logger_does_not_propagate_and_writes_bare_json_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert logging.getLogger(audit.LOGGER).propagate is False
    write()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["schema"] == AUDIT_SCHEMA


def test_actions_are_a_closed_set() -> None:
    with pytest.raises(ValueError):
        audit.build("checkout.whatever", "success", actor="a", target=Target("X"))
    assert audit.record("checkout.whatever", "success", actor="a", target=Target("X")) is None  # never raises
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", a.value) for a in Action)


@pytest.mark.parametrize(
    ("details", "dropped"),
    [
        ({"password": "hunter2hunter2"}, "password"),
        ({"newPassword": "x"}, "newPassword"),
        ({"passwd": "x"}, "passwd"),
        ({"secret": "x"}, "secret"),
        ({"clientSecret": "x"}, "clientSecret"),
        ({"token": "x"}, "token"),
        ({"access_token": "x"}, "access_token"),
        ({"subjectToken": "x"}, "subjectToken"),
        ({"privateKey": "x"}, "privateKey"),
        ({"key": "x"}, "key"),
        ({"signing_key": "x"}, "signing_key"),
        ({"credential": "x"}, "credential"),
        ({"credentials": {"user": "u"}}, "credentials"),
        ({"note": JWT}, "a JWT"),
        ({"note": f"Bearer {JWT}"}, "a JWT"),
        ({"note": PEM_KEY}, "a PEM block"),
        ({"note": PEM_CERT}, "a PEM block"),
        ({"note": OPENSSH_KEY}, "a PEM block"),
        ({"note": SSH_LINE}, "key material"),
        ({"note": ECDSA_LINE}, "key material"),
        ({"nested": {"deeper": [JWT]}}, "a JWT"),
    ],
)
def test_the_guard_drops_secrets_and_says_which_field(
    lines: list[str], caplog: pytest.LogCaptureFixture, details: dict[str, Any], dropped: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="kubepam.audit_guard"):
        written = write(details={"account": "admin", **details})
    assert written is not None and len(lines) == 1
    text = lines[0]
    for value in ("hunter2", JWT, "PRIVATE KEY", "BEGIN", "AAAA"):
        assert value not in text
    parsed = json.loads(text)
    assert parsed["details"]["account"] == "admin"
    assert any(dropped in r for r in parsed["redacted"])
    assert any(dropped in r.getMessage() for r in caplog.records)
    for record in caplog.records:  # the warning names the field, never the value
        assert "hunter2" not in record.getMessage() and JWT not in record.getMessage()


@pytest.mark.parametrize("field", ["actor", "reason", "correlation_id"])
def test_the_guard_covers_every_text_field(lines: list[str], field: str) -> None:
    write(**{field: f"x {JWT}"})
    assert JWT not in lines[0] and json.loads(lines[0])["redacted"]


def test_identifiers_that_look_like_key_names_are_kept(lines: list[str]) -> None:
    write(details={"keyId": "team/alice/req-1", "serial": "1234", "account": "admin"})
    assert json.loads(lines[0])["details"] == {
        "keyId": "team/alice/req-1",
        "serial": "1234",
        "account": "admin",
    }
    assert "redacted" not in json.loads(lines[0])


def test_the_file_sink_rotates(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    audit.configure(str(path), max_bytes=2000, backups=2)
    try:
        for _ in range(40):
            write()
    finally:
        audit.configure("")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        for line in (path.parent / name).read_text().splitlines():
            assert json.loads(line)["schema"] == AUDIT_SCHEMA


def test_an_event_audit_mapping_becomes_one_v1_line(lines: list[str]) -> None:
    obj = {
        "kind": "Checkout",
        "metadata": {"namespace": "team", "name": "c1", "uid": "uid-c1"},
        "spec": {"requester": "alice", "groups": ["users"]},
    }
    audit.for_event(obj, "CheckedOut", {"actor": "alice", "account": "admin", "reason": "deploy"})
    parsed = json.loads(lines[0])
    assert (parsed["action"], parsed["outcome"], parsed["actor"], parsed["groups"]) == (
        "checkout.granted",
        "success",
        "alice",
        ["users"],
    )
    assert parsed["correlationId"] == "uid-c1" and parsed["reason"] == "deploy"
    assert parsed["details"] == {"account": "admin", "event": "CheckedOut"}


def test_an_event_without_an_action_writes_nothing(
    lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    audit.for_event({"kind": "Checkout", "metadata": {}}, "SomethingNew", {"actor": "a"})
    assert lines == [] and "no audit action" in caplog.text
