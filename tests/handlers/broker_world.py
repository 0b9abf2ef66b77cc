"""The whole broker in process with fakes: token exchange (a GitHub-shaped connection), kubepam access
tokens, workload SSH certificates from a project's CA, server enrollment, and workload checkouts of a
shared account (the real checkout service reconciles each Checkout the broker creates, as kopf would).
Shared by the hostile-input tests, the property tests, the workload checkout tests and
bench/fuzz_broker.py, which all need every endpoint to be reachable."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubepam.adapters.kube import KubeError
from kubepam.domain.checkout import CheckoutPolicySpec, parse_checkout_policy
from kubepam.domain.policy import ServerView, parse_policy
from kubepam.domain.project import ProjectSpec, parse_project
from kubepam.handlers.broker import make_app
from kubepam.services.accounts import Accounts
from kubepam.services.certificates import CertificateIssuer
from kubepam.services.checkouts import CheckoutService
from kubepam.services.enrollment import Enroller
from kubepam.services.projects import CAStore, EnrollmentTokens, enrollment_secret_name
from kubepam.services.scheduler import Scheduler
from kubepam.services.workload_checkouts import WorkloadCheckouts
from kubepam.services.workload_identity import AccessTokenVerifier
from tests.handlers.fakes import FakeEvents, FakeLeases, FakeObjects, FakeRbac, FakeSecrets
from tests.handlers.test_token_exchange import World, form

NS = "team-a"
PROJECT = "web"
PROJECT_UID = "web-uid"
ACCOUNT = "deploy_bot"  # a shared account (kubernetes backend) the workload role may check out
OTHER_ACCOUNT = "dba"  # one no rule grants it


class PolicyDir:
    """One project with one server and two shared accounts, and a policy letting the workload role
    `deployer` reach the server and check out one account."""

    def __init__(self) -> None:
        accounts = [
            {"name": ACCOUNT, "backend": "kubernetes"},
            {"name": OTHER_ACCOUNT, "backend": "kubernetes"},
        ]
        self._project = replace(parse_project({"sharedAccounts": accounts}), uid=PROJECT_UID)
        self._checkout_policy = parse_checkout_policy({"project": PROJECT, "maxDuration": "30m"})
        self._policy = parse_policy(
            NS,
            "workloads",
            {
                "principals": {"workloadRoles": ["deployer"]},
                "rules": [
                    {"name": "ssh", "projects": [PROJECT], "servers": {"matchLabels": {"role": "web"}}},
                    {"name": "accounts", "projects": [PROJECT], "accounts": [ACCOUNT]},
                ],
            },
        )

    def policies(self, namespace: str) -> list[Any]:
        return [self._policy] if namespace == NS else []

    def server(self, namespace: str, name: str) -> ServerView | None:
        return ServerView("web-1", PROJECT, {"role": "web"}) if (namespace, name) == (NS, "web-1") else None

    def project(self, namespace: str, name: str) -> ProjectSpec | None:
        return self._project if (namespace, name) == (NS, PROJECT) else None

    def project_uid(self, namespace: str, name: str) -> str | None:
        return PROJECT_UID if (namespace, name) == (NS, PROJECT) else None

    def checkout_policy(self, namespace: str, project: str) -> CheckoutPolicySpec | None:
        return self._checkout_policy if (namespace, project) == (NS, PROJECT) else None


class ServerObjects(FakeObjects):
    """Server objects as enrollment writes them (create, patch; a name taken is a 409)."""

    async def create(self, plural: str, namespace: str, body: Any) -> None:
        if (plural, namespace, body["metadata"]["name"]) in self.items:
            raise KubeError(409, "AlreadyExists", body["metadata"]["name"])
        self.add(plural, {**body, "metadata": dict(body["metadata"])})

    async def patch(self, plural: str, namespace: str, name: str, body: Any) -> None:
        obj = self.items[(plural, namespace, name)]
        obj["spec"] = {**obj.get("spec", {}), **body.get("spec", {})}


class ApiObjects(ServerObjects):
    """Objects as the API server keeps them: uid and resourceVersion stamped, a patch naming a
    resourceVersion refused (409) once the object changed, and a Checkout created or whose spec changed
    handed to ``on_spec`` (the checkout service reconciles it, as the operator's kopf handler would)."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0
        self.on_spec: Callable[[str, str], None] | None = None
        self.refuse_create: KubeError | None = None

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def _changed(self, plural: str, namespace: str, name: str) -> None:
        if plural == "checkouts" and self.on_spec is not None:
            self.on_spec(namespace, name)

    async def create(self, plural: str, namespace: str, body: Any) -> None:
        if self.refuse_create is not None:
            raise self.refuse_create
        if (plural, namespace, body["metadata"]["name"]) in self.items:
            raise KubeError(409, "AlreadyExists", body["metadata"]["name"])
        obj = copy.deepcopy(dict(body))
        self.add(plural, obj)
        self._bump(obj)
        self._changed(plural, namespace, obj["metadata"]["name"])

    async def patch(self, plural: str, namespace: str, name: str, body: Any) -> None:
        obj = self.items.get((plural, namespace, name))
        if obj is None:
            raise KubeError(404, "NotFound", name)
        meta = body.get("metadata") or {}
        if meta.get("resourceVersion") and meta["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        if meta.get("annotations"):
            obj["metadata"]["annotations"] = {
                **(obj["metadata"].get("annotations") or {}),
                **meta["annotations"],
            }
        if "spec" in body:
            obj["spec"] = {**obj.get("spec", {}), **body["spec"]}
        self._bump(obj)
        if "spec" in body:
            self._changed(plural, namespace, name)

    async def patch_status(self, plural: str, namespace: str, name: str, status: Any) -> None:
        await super().patch_status(plural, namespace, name, status)
        self._bump(self.items[(plural, namespace, name)])


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
        self.objects = ApiObjects()
        self.secrets = FakeSecrets()  # the shared accounts' and the checkouts' credential Secrets
        self.rbac = FakeRbac()
        self.events = FakeEvents()
        self.checkouts = CheckoutService(
            PolicyDir(),
            self.objects,
            FakeLeases(),  # type: ignore[arg-type]
            self.secrets,  # type: ignore[arg-type]
            self.rbac,  # type: ignore[arg-type]
            Accounts(self.secrets, self.world.clock),  # type: ignore[arg-type]
            Scheduler(self.world.clock),
            self.events,  # type: ignore[arg-type]
            self.world.clock,
        )
        self._reconciling: set[asyncio.Task[None]] = set()
        self.objects.on_spec = self._reconcile
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

    def _reconcile(self, namespace: str, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self.checkouts.reconcile(namespace, name))
        self._reconciling.add(task)
        task.add_done_callback(self._reconciling.discard)

    def workload_checkouts(self, wait: float = 5.0) -> WorkloadCheckouts:
        return WorkloadCheckouts(self.objects, self.secrets, self.world.clock, wait=wait)  # type: ignore[arg-type]

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
            workload_checkouts=self.workload_checkouts(),
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

    def checkout_body(self, **overrides: Any) -> dict[str, Any]:
        return {
            "role": "deployer",
            "project": PROJECT,
            "account": ACCOUNT,
            "reason": "deploy 42",
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
