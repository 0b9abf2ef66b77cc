"""Per-kind semantic checks, table-driven: each bad spec is refused with a message naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from kubepam.domain.validation import VALIDATORS, jit_account_name

GOOD: dict[str, dict[str, Any]] = {
    "AccessPolicy": {"principals": {"groups": ["g"]}, "rules": [{"name": "r", "projects": ["p"]}]},
    "Project": {"certificates": {"defaultTTL": "3m", "maxTTL": "1h"}},
    "Server": {"project": "p", "hostname": "h"},
    "CheckoutPolicy": {"project": "p", "maxDuration": "30m"},
    "Checkout": {"project": "p", "account": "a", "requester": "alice", "reason": "why", "duration": "10m"},
    "JitAccount": {"project": "p", "owner": "alice", "groups": ["view"], "reason": "CHG-1", "duration": "1h"},
    "SSHCertificateRequest": {"project": "p", "requester": "alice", "publicKey": "ssh-ed25519 AAAA x"},
}

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("AccessPolicy", {"principals": {}, "rules": [{"name": "r", "projects": ["p"]}]}, "spec.principals"),
    ("AccessPolicy", {"principals": {"users": ["u"]}, "rules": []}, "spec.rules"),
    (
        "AccessPolicy",
        {"principals": {"users": ["u"]}, "rules": [{"name": "r"}, {"name": "r"}]},
        "spec.rules[1].name: duplicate",
    ),
    (
        "AccessPolicy",
        {"principals": {"users": ["u"]}, "rules": [{"name": "r", "sshCertificate": {"ttl": "2d"}}]},
        "spec.rules[0].sshCertificate.ttl",
    ),
    (
        "AccessPolicy",
        {"principals": {"users": ["u"]}, "rules": [{"name": "r", "checkoutDuration": "30s"}]},
        "spec.rules[0].checkoutDuration: must be between 1m and 24h",
    ),
    ("Project", {"certificates": {"defaultTTL": "2h", "maxTTL": "1h"}}, "defaultTTL: must not exceed maxTTL"),
    ("Project", {"certificates": {"defaultTTL": "10s"}}, "spec.certificates.defaultTTL: must be between"),
    ("Project", {"sharedAccounts": [{"name": "a"}, {"name": "a"}]}, "spec.sharedAccounts[1].name: duplicate"),
    ("Project", {"jit": {"enabled": True}}, "spec.jit.allowedGroups"),
    (
        "Project",
        {"jit": {"enabled": True, "allowedGroups": ["x"], "backend": "postgresql"}},
        "spec.jit.postgresql",
    ),
    ("Server", {"project": "p"}, "spec.hostname"),
    ("CheckoutPolicy", {"project": "p", "maxDuration": "48h"}, "spec.maxDuration"),
    ("CheckoutPolicy", {"project": "p", "scope": "Include"}, "spec.accounts"),
    ("Checkout", {"project": "p", "account": "a", "reason": " "}, "spec.reason"),
    ("Checkout", {"project": "p", "account": "a", "reason": "r", "duration": "forever"}, "spec.duration"),
    ("JitAccount", {**GOOD["JitAccount"], "owner": "alexandrina_longe"}, "is 21 characters; at most 20"),
    ("JitAccount", {**GOOD["JitAccount"], "accountName": "admin"}, "must end with _jit"),
    ("JitAccount", {**GOOD["JitAccount"], "reason": ""}, "spec.reason"),
    ("JitAccount", {**GOOD["JitAccount"], "groups": []}, "spec.groups"),
    ("JitAccount", {**GOOD["JitAccount"], "duration": "25h"}, "spec.duration"),
    ("SSHCertificateRequest", {"publicKey": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "spec.publicKey"),
    ("SSHCertificateRequest", {"publicKey": "ssh-ed25519 AAAA", "ttl": "1s"}, "spec.ttl"),
]


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_specs_pass(kind: str) -> None:
    assert VALIDATORS[kind]("ns", "name", GOOD[kind]) == []


@pytest.mark.parametrize(("kind", "spec", "message"), BAD, ids=[f"{k}-{m[:30]}" for k, _, m in BAD])
def test_bad_specs_name_their_field(kind: str, spec: dict[str, Any], message: str) -> None:
    problems = VALIDATORS[kind]("ns", "name", spec)
    assert any(message in p for p in problems), problems


def test_jit_name_defaults_to_owner() -> None:
    assert jit_account_name({"owner": "alice"}) == "alice_jit"
    assert jit_account_name({"owner": "alice", "accountName": "ops_jit"}) == "ops_jit"
