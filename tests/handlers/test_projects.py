"""Project CAs and enrollment tokens against an in-memory Secret store: created once, adopted by a new
process, rotated with an overlap, safe under concurrent writers; certificates issued from them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubepam.adapters.ca import decode_ring
from kubepam.adapters.kube import owner_reference
from kubepam.domain.ownership import ForeignObject
from kubepam.domain.policy import ServerView, Subject, parse_policy
from kubepam.domain.project import parse_project
from kubepam.services.certificates import CertificateIssuer, Denied, Issued, NotReady
from kubepam.services.projects import CAStore, EnrollmentTokens, ca_secret_name, enrollment_secret_name
from tests.handlers.fakes import Clock, FakeSecrets


def public_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


async def test_ca_is_created_once_and_adopted_by_a_restarted_operator() -> None:
    secrets, configmaps, clock = FakeSecrets(), FakeSecrets(), Clock()
    first = CAStore(secrets, configmaps, clock)
    outcome = await first.reconcile("ns", "web", "uid-1", parse_project({}))
    restarted = CAStore(secrets, configmaps, clock)
    again = await restarted.reconcile("ns", "web", "uid-1", parse_project({}))
    assert again.status["ssh"]["fingerprint"] == outcome.status["ssh"]["fingerprint"]
    assert secrets.writes == 1  # the second process wrote nothing
    cm = configmaps.items[("ns", "web-ca")].data
    assert cm["trusted-user-ca-keys"].decode().startswith("ssh-ed25519 ")
    assert b"BEGIN CERTIFICATE" in cm["ca.crt"]


async def test_two_replicas_racing_end_with_one_ca() -> None:
    secrets, clock = FakeSecrets(), Clock()
    a, b = CAStore(secrets, FakeSecrets(), clock), CAStore(secrets, FakeSecrets(), clock)
    ra, rb = await asyncio.gather(
        a.reconcile("ns", "web", "u", parse_project({})), b.reconcile("ns", "web", "u", parse_project({}))
    )
    assert ra.status["ssh"]["fingerprint"] == rb.status["ssh"]["fingerprint"]
    assert len(decode_ring(secrets.items[("ns", ca_secret_name("web", "u"))].data["ca.json"])) == 1


async def test_rotation_publishes_both_then_retires_the_old() -> None:
    secrets, configmaps, clock = FakeSecrets(), FakeSecrets(), Clock()
    store = CAStore(secrets, configmaps, clock)
    first = await store.reconcile("ns", "web", "u", parse_project({}))
    rotate = parse_project({"certificateAuthority": {"rotation": {"generation": 1, "overlap": "10m"}}})
    during = await store.reconcile("ns", "web", "u", rotate)
    assert during.status["generation"] == 1
    assert during.status["previous"]["sshFingerprint"] == first.status["ssh"]["fingerprint"]
    assert during.next_change == clock.now + timedelta(minutes=10)
    assert store.trusted_user_ca_keys("ns", "web").count("\n") == 2
    clock.advance(minutes=10)
    after = await store.reconcile("ns", "web", "u", rotate)
    assert after.status["previous"] is None and store.trusted_user_ca_keys("ns", "web").count("\n") == 1


async def test_enrollment_token_rotates_and_compares_in_constant_time() -> None:
    secrets = FakeSecrets()
    tokens = EnrollmentTokens(secrets)
    await tokens.reconcile("ns", "web", "u", parse_project({}))
    secret = enrollment_secret_name("web", "u")
    token = secrets.items[("ns", secret)].data["token"].decode()
    assert await tokens.valid("ns", "web", "u", token) and not await tokens.valid(
        "ns", "web", "u", token + "x"
    )
    assert not await tokens.valid("ns", "web", "another-uid", token)  # a recreated project: a new Secret
    await tokens.reconcile("ns", "web", "u", parse_project({"enrollment": {"tokenGeneration": 1}}))
    assert not await tokens.valid("ns", "web", "u", token)
    await tokens.reconcile("ns", "web", "u", parse_project({"enrollment": {"enabled": False}}))
    assert ("ns", secret) not in secrets.items


async def test_a_ca_secret_someone_else_put_under_the_derived_name_is_never_used() -> None:
    """A Secret that squats the derived name (no kubepam label and ownerReference to the Project's uid)
    is neither adopted as the CA ring, nor replaced, nor deleted."""
    secrets, configmaps, clock = FakeSecrets(), FakeSecrets(), Clock()
    name = ca_secret_name("web", "u")
    planted = {"ca.json": b"[]", "token": b"mallory"}
    await secrets.create("ns", name, planted)
    with pytest.raises(ForeignObject, match=f"refusing to adopt, replace or delete Secret ns/{name}"):
        await CAStore(secrets, configmaps, clock).reconcile("ns", "web", "u", parse_project({}))
    assert secrets.items[("ns", name)].data == planted
    other = owner_reference("kubepam.io/v1alpha1", "Project", "other", "other-uid")
    with pytest.raises(ForeignObject):
        await secrets.delete("ns", name, other)
    assert ("ns", name) in secrets.items


class Dir:
    def __init__(self) -> None:
        self.policy = parse_policy(
            "ns",
            "p",
            {
                "principals": {"groups": ["dev"], "workloadRoles": ["deployer"]},
                "rules": [{"name": "r", "projects": ["web"], "servers": {"matchLabels": {"role": "web"}}}],
            },
        )

    def policies(self, namespace: str) -> list[object]:
        return [self.policy]

    def server(self, namespace: str, name: str) -> ServerView | None:
        return {"web-1": ServerView("web-1", "web", {"role": "web"})}.get(name)

    def project(self, namespace: str, name: str) -> object:
        return parse_project({}) if name == "web" else None


async def test_issuer_signs_with_the_current_ca_or_denies_with_the_reason() -> None:
    clock = Clock()
    cas = CAStore(FakeSecrets(), FakeSecrets(), clock)
    issuer = CertificateIssuer(Dir(), cas, clock)  # type: ignore[arg-type]
    spec = {"project": "web", "server": "web-1", "publicKey": public_line()}
    with pytest.raises(NotReady):
        issuer.ssh("ns", "req", spec, Subject("alice", frozenset({"dev"})))
    await cas.reconcile("ns", "web", "u", parse_project({}))
    issued = issuer.ssh("ns", "req", spec, Subject("alice", frozenset({"dev"})))
    assert isinstance(issued, Issued) and issued.principals == ("alice",)
    assert issued.valid.before - issued.valid.after == timedelta(minutes=3, seconds=30)
    assert issued.certificate.startswith("ssh-ed25519-cert-v01@openssh.com ")
    denied = issuer.ssh("ns", "req2", spec, Subject("eve", frozenset({"guests"})))
    assert isinstance(denied, Denied) and "names user eve" in denied.reason
    bad_key = issuer.ssh(
        "ns", "req3", {**spec, "publicKey": "ssh-ed25519 AAAAnotakey"}, Subject("a", frozenset({"dev"}))
    )
    assert isinstance(bad_key, Denied) and "not a usable OpenSSH public key" in bad_key.reason
    workload = issuer.workload_ssh("ns", "deployer", spec, "jti-123")
    assert isinstance(workload, Issued) and workload.principals == ("wl_deployer",)
    missing = issuer.ssh("ns", "req4", {**spec, "project": "nope"}, Subject("alice", frozenset({"dev"})))
    assert (
        isinstance(missing, Denied) and "no Project ns/nope" in missing.reason and missing.missing_reference
    )
    no_server = issuer.ssh("ns", "req5", {**spec, "server": "gone"}, Subject("alice", frozenset({"dev"})))
    assert (
        isinstance(no_server, Denied)
        and no_server.missing_reference
        and "no Server ns/gone" in no_server.reason
    )
    assert not denied.missing_reference  # a policy denial is final at once
