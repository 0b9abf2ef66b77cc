"""The whole broker in process with fakes: token exchange (a GitHub-shaped connection), kubepam access
tokens, workload SSH certificates from a project's CA, and server enrollment. Shared by the hostile-input
tests, the property tests and bench/fuzz_broker.py, which all need every endpoint to be reachable."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubepam.adapters.kube import KubeError
from kubepam.domain.policy import ServerView, parse_policy
from kubepam.domain.project import ProjectSpec, parse_project
from kubepam.handlers.broker import make_app
from kubepam.services.certificates import CertificateIssuer
from kubepam.services.enrollment import Enroller
from kubepam.services.projects import CAStore, EnrollmentTokens, enrollment_secret_name
from kubepam.services.workload_identity import AccessTokenVerifier
from tests.handlers.fakes import FakeObjects, FakeSecrets
from tests.handlers.test_token_exchange import World, form

NS = "team-a"
PROJECT = "web"
PROJECT_UID = "web-uid"


class PolicyDir:
    """One project with one server, and a policy letting the workload role `deployer` reach it."""

    def __init__(self) -> None:
        self._project = replace(parse_project({}), uid=PROJECT_UID)
        self._policy = parse_policy(
            NS,
            "workloads",
            {
                "principals": {"workloadRoles": ["deployer"]},
                "rules": [
                    {"name": "ssh", "projects": [PROJECT], "servers": {"matchLabels": {"role": "web"}}}
                ],
            },
        )

    def policies(self, namespace: str) -> list[Any]:
        return [self._policy] if namespace == NS else []

    def server(self, namespace: str, name: str) -> ServerView | None:
        return ServerView("web-1", PROJECT, {"role": "web"}) if (namespace, name) == (NS, "web-1") else None

    def project(self, namespace: str, name: str) -> ProjectSpec | None:
        return self._project if (namespace, name) == (NS, PROJECT) else None


class ServerObjects(FakeObjects):
    """Server objects as enrollment writes them (create, patch; a name taken is a 409)."""

    async def create(self, plural: str, namespace: str, body: Any) -> None:
        if (plural, namespace, body["metadata"]["name"]) in self.items:
            raise KubeError(409, "AlreadyExists", body["metadata"]["name"])
        self.add(plural, {**body, "metadata": dict(body["metadata"])})

    async def patch(self, plural: str, namespace: str, name: str, body: Any) -> None:
        obj = self.items[(plural, namespace, name)]
        obj["spec"] = {**obj.get("spec", {}), **body.get("spec", {})}


def public_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class BrokerWorld:
    """``world`` is the token-exchange World (github provider); after ``start()``: ``access_token`` (a
    kubepam access token for team-a/deployer), ``enrollment_token`` and ``app`` (the broker)."""

    def __init__(self) -> None:
        self.world = World("github")
        self.cas = CAStore(FakeSecrets(), FakeSecrets(), self.world.clock)
        self.enroll_secrets = FakeSecrets()
        self.tokens = EnrollmentTokens(self.enroll_secrets)
        self.objects = ServerObjects()
        self.access_token = ""
        self.enrollment_token = ""
        self.public_key = public_line()

    async def start(self) -> BrokerWorld:
        await self.world.start()
        project = replace(parse_project({}), uid=PROJECT_UID)
        await self.cas.reconcile(NS, PROJECT, PROJECT_UID, project)
        await self.tokens.reconcile(NS, PROJECT, PROJECT_UID, project)
        stored = self.enroll_secrets.items[(NS, enrollment_secret_name(PROJECT, PROJECT_UID))]
        self.enrollment_token = stored.data["token"].decode()
        result = await self.world.exchange.exchange(form(self.world.issuer.mint("github")))
        self.access_token = result.access_token
        return self

    def runtime(self) -> SimpleNamespace:
        w = self.world
        return SimpleNamespace(
            exchange=w.exchange,
            signing=w.signing,
            directory=w.directory,
            access=AccessTokenVerifier(
                w.signing, issuer="https://kubepam.test", audience="kubepam", directory=w.directory
            ),
            issuer=CertificateIssuer(PolicyDir(), self.cas, w.clock),  # type: ignore[arg-type]
            enroller=Enroller(
                self.tokens,
                self.cas,
                self.objects,
                lambda ns, name: PROJECT_UID if (ns, name) == (NS, PROJECT) else None,
                w.clock,
            ),
        )

    def app(self) -> web.Application:
        return make_app(self.runtime())  # type: ignore[arg-type]

    def ssh_body(self, **overrides: Any) -> dict[str, Any]:
        return {
            "role": "deployer",
            "project": PROJECT,
            "server": "web-1",
            "publicKey": self.public_key,
            **overrides,
        }

    def enroll_body(self, **overrides: Any) -> dict[str, Any]:
        return {
            "namespace": NS,
            "project": PROJECT,
            "token": self.enrollment_token,
            "hostname": "web-2.acme.internal",
            "labels": {"role": "web"},
            "addresses": ["10.0.0.2"],
            **overrides,
        }
