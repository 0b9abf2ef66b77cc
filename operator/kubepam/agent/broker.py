"""The agent's HTTP client to the broker (aiohttp): enrollment, certificate renewal, the access long
poll (If-None-Match, ?wait=) and login events, every call after enrollment a signed request
(`kubepam.agent.signing`), every one with `User-Agent: kubepam-agent/<version>`. Errors arrive as
`BrokerError` with the broker's RFC 6749 error shape; `Backoff` is the 1 s doubling to 60 s delay the
callers sleep after one."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict

from kubepam import __version__
from kubepam.agent.signing import authorization

USER_AGENT = f"kubepam-agent/{__version__}"


class BrokerError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        self.status, self.error, self.description = status, error, description
        super().__init__(f"{error}: {description} (HTTP {status})")


@dataclass
class Access:
    status: int  # 200 or 304
    etag: str | None
    body: dict[str, Any] | None  # None on 304


class Backoff:
    def __init__(self, initial: float = 1.0, maximum: float = 60.0) -> None:
        self.initial, self.maximum = initial, maximum
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class BrokerClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.base = base_url.rstrip("/")
        self._prefix = urlsplit(self.base).path  # a broker behind a path prefix signs the full path
        self.session = session
        self.clock = clock
        self.key: Ed25519PrivateKey | None = None
        self.certificate: str | None = None

    def use(self, key: Ed25519PrivateKey, certificate_pem: str) -> None:
        self.key, self.certificate = key, certificate_pem

    def _headers(self, method: str, path: str) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.key is not None and self.certificate is not None:
            headers["Authorization"] = authorization(
                self.key, self.certificate, method, self._prefix + path, self.clock()
            )
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        extra: dict[str, str] | None = None,
        limit: float = 30,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> tuple[int, Mapping[str, str], dict[str, Any] | None]:
        headers = self._headers(method, path) | (extra or {})
        try:
            async with self.session.request(
                method,
                self.base + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
            ) as resp:
                raw = await resp.content.read(4 << 20)
                parsed: Any = None
                if raw:
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                if resp.status not in ok:
                    err = parsed if isinstance(parsed, dict) else {}
                    raise BrokerError(
                        resp.status,
                        str(err.get("error", "http_error")),
                        str(err.get("error_description", resp.reason or ""))[:500],
                    )
                if parsed is not None and not isinstance(parsed, dict):
                    raise BrokerError(resp.status, "bad_answer", "the broker's answer is not a JSON object")
                return resp.status, CIMultiDict(resp.headers), parsed
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BrokerError(0, "unreachable", f"{self.base}: {exc or type(exc).__name__}") from None

    async def enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        _, _, answer = await self._call("POST", "/v1/enroll", body)
        return answer or {}

    async def renew(self, csr: str) -> dict[str, Any]:
        _, _, answer = await self._call("POST", "/v1/servers/self/certificate", {"csr": csr})
        return answer or {}

    async def access(self, etag: str | None, wait: int) -> Access:
        path = f"/v1/servers/self/access?wait={wait}"
        extra = {"If-None-Match": etag} if etag else {}
        status, headers, answer = await self._call("GET", path, extra=extra, limit=wait + 20, ok=(200, 304))
        if status == 304:
            return Access(304, etag, None)
        return Access(200, headers.get("ETag"), answer or {})

    async def events(self, events: list[dict[str, Any]]) -> int:
        _, _, answer = await self._call("POST", "/v1/servers/self/events", {"events": events})
        accepted = (answer or {}).get("accepted", len(events))
        return accepted if isinstance(accepted, int) else len(events)
