"""Server enrollment: a machine trades its project's enrollment token for a Server object and what it
needs to trust kubepam's certificates (the SSH user CA keys and an sshd_config snippet).

A wrong token changes nothing. Enrolling the same hostname again updates its labels and addresses,
unless an agent enrolled for it (``status.agent.keyFingerprint`` set): then the token is refused
(409 already_enrolled), so it cannot be replayed to take over or relabel the server. With ``csr`` the
answer carries the agent's client certificate (services/agents.py), issued before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from kubepam.adapters.kube import KubeError
from kubepam.domain import oauth
from kubepam.domain.conditions import rfc3339
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.text import clip
from kubepam.services.agents import AgentService
from kubepam.services.projects import CAStore, EnrollmentTokens

_DNS = re.compile(r"[^a-z0-9.-]+")


class Objects(Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def patch(self, plural: str, namespace: str, name: str, body: Mapping[str, Any]) -> None: ...
    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...


def server_name(hostname: str) -> str:
    """A valid object name for a host name (lower case, DNS characters, at most 63)."""
    name = _DNS.sub("-", hostname.lower()).strip("-.")[:63].strip("-.")
    if not name:
        raise oauth.invalid_request("hostname must contain letters or digits")
    return name


def _text(body: Mapping[str, Any], field: str, required: bool = True) -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise oauth.invalid_request(f"{field} is required (a string of at most 253 characters)")
    return value


class Enroller:
    def __init__(
        self,
        tokens: EnrollmentTokens,
        cas: CAStore,
        objects: Objects,
        project_uid: Callable[[str, str], str | None],
        clock: Callable[[], datetime],
        agents: AgentService | None = None,
    ) -> None:
        self._agents = agents
        self._tokens = tokens
        self._cas = cas
        self._objects = objects
        self._project_uid = project_uid
        self._clock = clock

    async def enroll(self, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace, project = _text(body, "namespace"), _text(body, "project")
        token, hostname = _text(body, "token"), _text(body, "hostname")
        os_name = body.get("os", "linux")
        if os_name not in ("linux", "windows"):
            raise oauth.invalid_request("os must be linux or windows")
        labels = body.get("labels") or {}
        addresses = body.get("addresses") or []
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise oauth.invalid_request("labels must be an object of strings")
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise oauth.invalid_request("addresses must be a list of strings")
        uid = self._project_uid(namespace, project)
        if not uid or not await self._tokens.valid(namespace, project, uid, token):
            # One answer for both: do not tell a guesser which projects exist.
            raise oauth.invalid_token(
                "the enrollment token is not valid for this project", "bad_enrollment_token"
            )
        name = server_name(hostname)
        csr, version = body.get("csr"), body.get("agentVersion")
        if version is not None and (not isinstance(version, str) or len(version) > 64):
            raise oauth.invalid_request("agentVersion must be a string of at most 64 characters")
        existing = await self._objects.get("servers", namespace, name)
        if (((existing or {}).get("status") or {}).get("agent") or {}).get("keyFingerprint"):
            raise oauth.OAuthError(
                "invalid_request",
                f"server {namespace}/{name} already has an enrolled agent; delete the Server to enroll again",
                409,
                "already_enrolled",
            )
        agent: tuple[dict[str, Any], dict[str, Any]] | None = None
        if csr is not None:
            if self._agents is None:
                raise oauth.invalid_request("this broker does not issue agent certificates")
            agent = self._agents.issue(namespace, project, name, csr)  # a bad CSR changes nothing
        spec = {"project": project, "hostname": hostname, "os": os_name, "addresses": addresses}
        try:
            await self._objects.create(
                "servers",
                namespace,
                {
                    "apiVersion": API_VERSION,
                    "kind": "Server",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": {**labels, "kubepam.io/enrolled": "true"},
                    },
                    "spec": spec,
                },
            )
        except KubeError as exc:
            if exc.status == 422:
                raise oauth.invalid_request(
                    f"the API server refused the Server: {clip(str(exc), 200)}"
                ) from None
            if not exc.conflict:
                raise
            existing = await self._objects.get("servers", namespace, name) or {}
            if (existing.get("spec") or {}).get("project") != project:
                raise oauth.OAuthError(
                    "invalid_request", f"server name {name} is taken by another project", 409, "server_taken"
                ) from None
            await self._objects.patch(
                "servers",
                namespace,
                name,
                {
                    "metadata": {"labels": {**labels, "kubepam.io/enrolled": "true"}},
                    "spec": {"hostname": hostname, "os": os_name, "addresses": addresses},
                },
            )
        now = rfc3339(self._clock())
        status: dict[str, Any] = {"enrolledAt": now}
        if agent is not None and self._agents is not None:
            status["agent"] = {**agent[1], "enrolledAt": now, "version": version or ""}
            await self._objects.patch_status("servers", namespace, name, status)
            self._agents.pin(namespace, name, agent[1]["keyFingerprint"])
        else:
            await self._objects.patch_status("servers", namespace, name, status)
        answer: dict[str, Any] = {
            "server": f"{namespace}/{name}",
            "trustedUserCAKeys": self._cas.trusted_user_ca_keys(namespace, project),
            "caCertificates": self._cas.ca_bundle(namespace, project),
            "sshdConfig": (
                f"TrustedUserCAKeys /etc/ssh/kubepam-{namespace}-{project}.pub\n"
                "# wl_<role> and people log in with the principals kubepam puts in certificates\n"
            ),
        }
        if agent is not None:
            answer["agent"] = agent[0]
        return answer
