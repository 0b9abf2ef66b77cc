"""The console's browser-facing defences: response headers on every answer (a Content-Security-Policy
that allows no inline script, no framing, no caching of pages, HSTS over TLS) and the sign-in rate
limit (a token bucket per client address, so guessing tokens is slow and costs the guesser only)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def headers_middleware(tls: bool) -> Middleware:
    @web.middleware
    async def secure_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if tls:
            response.headers["Strict-Transport-Security"] = HSTS
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return secure_headers


class RateLimit:
    """Failed sign-ins per key (client address): `burst` at once, refilled at `per_minute`; remembers at
    most `keys` clients. Successful sign-ins cost nothing, so only guessing is slowed down."""

    def __init__(self, burst: int = 5, per_minute: float = 10, keys: int = 10_000) -> None:
        self.burst, self.rate, self.keys = burst, per_minute / 60.0, keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def blocked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self._tokens(key, now) < 1

    def failed(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        self._buckets[key] = (max(tokens - 1, 0.0), now)
        while len(self._buckets) > self.keys:
            self._buckets.popitem(last=False)
