"""The console's Kubernetes API calls, each made with the signed-in person's own bearer token.

The console has no credential of its own: who someone is comes from a SelfSubjectReview, what they may
do from SelfSubjectAccessReviews, and every read and write is refused or allowed by the API server's
RBAC and admission policies exactly as for kubectl. The token goes only to the configured API server,
whose certificate is verified against the configured CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

GROUP, VERSION = "kubepam.io", "v1alpha1"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """The API server's refusal, in its own words (safe to show: it never contains the token)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


@dataclass(frozen=True)
class Person:
    username: str
    groups: frozenset[str]


class Kube:
    """One HTTP client for the API server; every call takes the caller's token."""

    def __init__(self, server: str, ca_file: str = "", timeout: float = 15, ca_data: str = "") -> None:
        if not server.startswith("https://"):
            raise ValueError(f"the API server URL must be https://, got {server!r}")
        self.server = server.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_file or None, cadata=ca_data or None)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        token: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with self._session.request(
                method, self.server + path, json=body, headers=headers, params=params
            ) as resp:
                try:
                    answer: dict[str, Any] = await resp.json(content_type=None)
                except ValueError:
                    answer = {}
                if resp.status >= 400:
                    message = answer.get("message") if isinstance(answer, dict) else None
                    raise KubeError(resp.status, str(message or resp.reason or f"HTTP {resp.status}"))
                return answer
        except aiohttp.ClientError as exc:
            raise KubeError(503, f"the API server is unreachable: {type(exc).__name__}") from None

    # -- identity ---------------------------------------------------------------------------------

    async def whoami(self, token: str) -> Person:
        review = await self._request(
            token,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        info = (review.get("status") or {}).get("userInfo") or {}
        if not info.get("username"):
            raise KubeError(401, "the API server did not say who this token belongs to")
        return Person(str(info["username"]), frozenset(info.get("groups") or []))

    async def can(
        self,
        token: str,
        verb: str,
        resource: str,
        *,
        namespace: str = "",
        subresource: str = "",
        name: str = "",
    ) -> bool:
        attrs: dict[str, str] = {"group": GROUP, "resource": resource, "verb": verb}
        if namespace:
            attrs["namespace"] = namespace
        if subresource:
            attrs["subresource"] = subresource
        if name:
            attrs["name"] = name
        review = await self._request(
            token,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs},
            },
        )
        return bool((review.get("status") or {}).get("allowed"))

    # -- kubepam objects --------------------------------------------------------------------------

    @staticmethod
    def _path(plural: str, namespace: str = "", name: str = "", subresource: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}"
        if namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    async def list_objects(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        items = (await self._request(token, "GET", self._path(plural, namespace))).get("items") or []
        return [dict(i) for i in items]

    async def list_or_empty(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        """A kind the person may not list is simply absent from their pages."""
        try:
            return await self.list_objects(token, plural, namespace)
        except KubeError as exc:
            if exc.status in (403, 404):
                return []
            raise

    async def get(self, token: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(token, "GET", self._path(plural, namespace, name))

    async def create(
        self, token: str, plural: str, namespace: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        params = {"dryRun": "All"} if dry_run else None
        return await self._request(token, "POST", self._path(plural, namespace), body, params=params)

    async def patch(
        self,
        token: str,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        params = {"dryRun": "All"} if dry_run else None
        return await self._request(
            token,
            "PATCH",
            self._path(plural, namespace, name, subresource),
            patch,
            content_type=MERGE,
            params=params,
        )

    async def json_patch(
        self,
        token: str,
        plural: str,
        namespace: str,
        name: str,
        operations: Sequence[Mapping[str, Any]],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        """A JSON patch (RFC 6902): what appends one vote to status.approvals without rewriting the list."""
        return await self._request(
            token,
            "PATCH",
            self._path(plural, namespace, name, subresource),
            operations,
            content_type=JSON_PATCH,
        )

    async def secret(self, token: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            token, "GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
        )
