"""The console's aiohttp application: routes, templates (Jinja2 with autoescaping), static files, the
security-header middleware, and starting it as its own server (`kubepam console`) or beside the
operator's broker (`KUBEPAM_CONSOLE=true`)."""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from kubepam.console import pages
from kubepam.console.kube import Kube
from kubepam.console.oidc import OidcClient, OidcConfig
from kubepam.console.security import RateLimit, headers_middleware
from kubepam.console.sessions import Sealer
from kubepam.domain.durations import format_duration
from kubepam.settings import Settings

log = logging.getLogger("kubepam.console")
HERE = Path(__file__).resolve().parent
MAX_BODY = 64 * 1024


def _left(until: str, now: datetime) -> str:
    try:
        end = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
    except ValueError:
        return ""
    return format_duration(end - now) or "0s"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["left"] = _left
    digest = hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted((HERE / "static").iterdir()))
    ).hexdigest()[:10]
    env.globals["static"] = lambda name: f"/static/{name}?v={digest}"
    return env


def make_app(
    kube: Kube,
    *,
    session_key: bytes | None,
    session_ttl: timedelta,
    broker: str,
    tls: bool,
    secure_cookies: bool,
    clock: Callable[[], datetime] = pages.now_utc,
    limiter: RateLimit | None = None,
    oidc: OidcClient | None = None,
) -> web.Application:
    app = web.Application(middlewares=[headers_middleware(tls)], client_max_size=MAX_BODY)
    app[pages.CONSOLE] = pages.Console(
        kube=kube,
        sealer=Sealer(session_key, session_ttl),
        templates=templates(),
        limiter=limiter or RateLimit(),
        broker=broker,
        secure_cookies=tls or secure_cookies,
        clock=clock,
        oidc=oidc,
    )

    async def home(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/access")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close(app: web.Application) -> None:
        await kube.close()

    app.on_cleanup.append(close)
    app.add_routes(
        [
            web.get("/", home),
            web.get("/healthz", healthz),
            web.get("/login", pages.login_page),
            web.post("/login", pages.login),
            web.get("/login/oidc", pages.oidc_begin),
            web.get("/login/callback", pages.oidc_callback),
            web.post("/logout", pages.logout),
            web.get("/access", pages.my_access),
            web.post("/access/checkouts/{ns}/{name}/checkin", pages.checkin),
            web.post("/access/checkouts/{ns}/{name}/extend", pages.extend),
            web.post("/access/checkouts/{ns}/{name}/elevate", pages.elevate),
            web.post("/access/jit/{ns}/{name}/disable", pages.disable_jit),
            web.post("/access/reveal/{kind}/{ns}/{name}", pages.reveal),
            web.get("/request", pages.request_page),
            web.post("/request/checkout", pages.request_checkout),
            web.post("/request/jit", pages.request_jit),
            web.get("/approvals", pages.approvals),
            web.post("/approvals/{ns}/{name}", pages.decide),
            web.get("/accounts", pages.accounts),
            web.get("/accounts/force/{ns}/{name}", pages.force_confirm),
            web.post("/accounts/force/{ns}/{name}", pages.force),
            web.get("/history", pages.history),
            web.get("/connections", pages.connections),
            web.post("/connections/explain", pages.explain),
            web.post("/connections/{ns}/{name}/phase", pages.set_phase),
            web.static("/static", HERE / "static"),
        ]
    )
    return app


def cluster_of(kubeconfig: str) -> tuple[str, str, str]:
    """The API server URL and its CA (file or PEM) of a kubeconfig's current context: only the cluster,
    never the user's credentials (the console acts with each person's own token)."""
    import base64

    import yaml

    path = Path(kubeconfig)
    config = yaml.safe_load(path.read_text()) or {}
    context_name = config.get("current-context")
    context: dict[str, Any] = next(
        (c["context"] for c in config.get("contexts") or [] if c.get("name") == context_name), {}
    )
    cluster: dict[str, Any] = next(
        (c["cluster"] for c in config.get("clusters") or [] if c.get("name") == context.get("cluster")), {}
    )
    if not cluster.get("server"):
        raise ValueError(f"{kubeconfig}: no cluster server in the current context")
    ca_file = str(cluster.get("certificate-authority") or "")
    if ca_file and not Path(ca_file).is_absolute():
        ca_file = str(path.parent / ca_file)
    data = cluster.get("certificate-authority-data")
    return str(cluster["server"]), ca_file, base64.b64decode(data).decode() if data else ""


def app_from_settings(
    settings: Settings, *, api_server: str = "", ca_file: str = "", ca_data: str = ""
) -> web.Application:
    server = api_server or settings.console_api_server
    if not server:
        raise ValueError("no API server: set KUBEPAM_CONSOLE_API_SERVER or pass --kubeconfig")
    ca = ca_file or settings.console_ca_file
    key = Path(settings.console_session_key_file).read_bytes() if settings.console_session_key_file else None
    if key is not None and len(key.strip()) < 32:
        raise ValueError("the console session key must be at least 32 bytes of secret material")
    oidc = None
    if settings.console_oidc_issuer:
        secret = settings.console_oidc_client_secret_file
        oidc = OidcClient(
            OidcConfig(
                issuer=settings.console_oidc_issuer,
                client_id=settings.console_oidc_client_id,
                redirect_url=settings.console_oidc_redirect_url,
                client_secret=Path(secret).read_text().strip() if secret else "",
                ca_file=settings.console_oidc_ca_file,
                scopes=settings.console_oidc_scopes,
            )
        )
        if not settings.console_oidc_client_id or not settings.console_oidc_redirect_url:
            raise ValueError("OIDC sign-in needs KUBEPAM_CONSOLE_OIDC_CLIENT_ID and _REDIRECT_URL")
    return make_app(
        Kube(server, ca if ca and Path(ca).is_file() else "", ca_data=ca_data),
        oidc=oidc,
        session_key=key,
        session_ttl=settings.console_session_ttl,
        broker=settings.console_broker,
        tls=bool(settings.console_tls_cert),
        secure_cookies=settings.console_secure_cookies,
        limiter=RateLimit(settings.console_signin_burst, settings.console_signin_per_minute),
    )


async def start(app: web.Application, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)  # aiohttp's access log would print query strings
    await runner.setup()
    context: ssl.SSLContext | None = None
    if settings.console_tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.console_tls_cert, settings.console_tls_key)
    await web.TCPSite(runner, settings.console_host, settings.console_port, ssl_context=context).start()
    scheme = "https" if context else "http"
    log.info("console on %s://%s:%s", scheme, settings.console_host, settings.console_port)
    return runner
