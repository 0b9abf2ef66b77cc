"""The operator's composition root: settings, adapters and services built once at kopf start-up,
the broker and the scheduler started beside kopf, all stopped at clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web

from kubepam.adapters import metrics
from kubepam.adapters.events import Events
from kubepam.adapters.jwks import HttpFetcher, JwksCache
from kubepam.adapters.kube import ConfigMaps, CustomObjects, Secrets
from kubepam.adapters.leases import Leases
from kubepam.adapters.rbac import Rbac
from kubepam.adapters.serviceaccounts import ServiceAccounts
from kubepam.adapters.signing import SigningKeys
from kubepam.domain.connection import MAX_ACCESS_TOKEN_TTL
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.handlers import observed
from kubepam.handlers.directory import KopfDirectory
from kubepam.handlers.registries import VIEW
from kubepam.services.accounts import Accounts
from kubepam.services.agents import AgentService, ServerHealth
from kubepam.services.certificates import CertificateIssuer
from kubepam.services.checkouts import CheckoutService
from kubepam.services.enrollment import Enroller
from kubepam.services.jit import JitService
from kubepam.services.projects import CAStore, EnrollmentTokens
from kubepam.services.records import RecordService
from kubepam.services.scheduler import Scheduler
from kubepam.services.workload_checkouts import WorkloadCheckouts
from kubepam.services.workload_identity import AccessTokenVerifier, TokenExchange
from kubepam.settings import Settings

SETTINGS = Settings()
log = logging.getLogger("kubepam")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    clock: Any
    jwks: JwksCache
    fetcher: HttpFetcher
    signing: SigningKeys
    scheduler: Scheduler
    directory: KopfDirectory
    exchange: TokenExchange
    objects: CustomObjects
    configmaps: ConfigMaps
    cas: CAStore
    enrollment: EnrollmentTokens
    issuer: CertificateIssuer
    enroller: Enroller
    access: AccessTokenVerifier
    checkouts: CheckoutService
    workload_checkouts: WorkloadCheckouts  # the broker's /v1/checkouts
    jit: JitService
    accounts: Accounts
    events: Events
    started: datetime
    agents: AgentService  # the broker's /v1/servers/self/... (the server agent)
    server_health: ServerHealth  # Servers' Ready condition with their agent's heartbeat
    records: RecordService  # AccessRecords: written when things finish, deleted after the retention
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    broker: web.AppRunner | None = None
    console: web.AppRunner | None = None  # the web console, when KUBEPAM_CONSOLE=true
    elector: Any = None  # handlers/process.py sets it: who leads, for /readyz and `kubepam status`


def runtime(memo: Any) -> Runtime:
    rt = getattr(memo, "runtime", None)
    if not isinstance(rt, Runtime):
        raise kopf.TemporaryError("operator runtime not started yet", delay=1)
    return rt


def schedule_key_maintenance(rt: Runtime) -> None:
    """Re-read the signing keys periodically (replicas converge) and act at the keyring's deadlines."""

    async def maintain() -> None:
        await rt.signing.sync(rt.clock())
        schedule_key_maintenance(rt)

    resync = rt.clock() + rt.settings.signing_key_resync
    deadline = rt.signing.next_deadline()
    rt.scheduler.schedule(("signing-keys",), min(resync, deadline) if deadline else resync, maintain)


@kopf.on.startup(registry=VIEW)
async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    from kubepam.handlers.broker import start_broker

    # Kubernetes client calls run in threads; the default pool (CPUs + 4) would cap API concurrency.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=SETTINGS.api_concurrency, thread_name_prefix="kubepam-api")
    )
    now = utcnow()
    fetcher = HttpFetcher(SETTINGS.jwks_timeout)
    jwks = JwksCache(
        fetcher,
        utcnow,
        refresh=SETTINGS.jwks_refresh,
        min_refetch=SETTINGS.jwks_min_refetch,
        max_stale=SETTINGS.jwks_max_stale,
    )
    signing = SigningKeys(
        Secrets(),
        SETTINGS.namespace,
        SETTINGS.signing_secret,
        rotation_period=SETTINGS.signing_key_rotation,
        max_token_ttl=MAX_ACCESS_TOKEN_TTL,
    )
    await signing.sync(now)
    # kopf passes every index to start-up handlers by its name (empty now, filled as kopf lists objects).
    directory = KopfDirectory(kwargs, utcnow, now, SETTINGS.sync_grace)
    exchange = TokenExchange(
        directory,
        jwks,
        signing,
        issuer=SETTINGS.issuer,
        audience=SETTINGS.audience,
        clock=utcnow,
        record=metrics.record_token_outcome,
    )
    secrets = Secrets()
    objects = CustomObjects(GROUP, VERSION)
    configmaps = ConfigMaps()
    cas = CAStore(secrets, configmaps, utcnow)
    tokens = EnrollmentTokens(secrets)
    scheduler = Scheduler(utcnow, queue_concurrency=SETTINGS.reconcile_concurrency)
    events = Events()
    accounts = Accounts(secrets, utcnow, configmaps)
    rbac = Rbac()
    checkouts = CheckoutService(
        directory, objects, Leases(), secrets, rbac, accounts, scheduler, events, utcnow
    )
    jit = JitService(
        directory, objects, ServiceAccounts(), secrets, rbac, accounts, scheduler, events, utcnow
    )
    agents = AgentService(directory, cas, objects, events, utcnow, cert_ttl=SETTINGS.agent_cert_ttl)
    rt = Runtime(
        settings=SETTINGS,
        clock=utcnow,
        jwks=jwks,
        fetcher=fetcher,
        signing=signing,
        scheduler=scheduler,
        directory=directory,
        exchange=exchange,
        objects=objects,
        configmaps=configmaps,
        cas=cas,
        enrollment=tokens,
        issuer=CertificateIssuer(directory, cas, utcnow),
        enroller=Enroller(tokens, cas, objects, directory.project_uid, utcnow, agents),
        access=AccessTokenVerifier(
            signing, issuer=SETTINGS.issuer, audience=SETTINGS.audience, directory=directory
        ),
        checkouts=checkouts,
        workload_checkouts=WorkloadCheckouts(
            objects, secrets, utcnow, wait=SETTINGS.workload_checkout_wait.total_seconds()
        ),
        jit=jit,
        accounts=accounts,
        events=events,
        started=now,
        agents=agents,
        server_health=ServerHealth(objects, scheduler, utcnow, SETTINGS.agent_silent_after),
        records=RecordService(objects, scheduler, utcnow, SETTINGS.history_retention),
    )
    observed.wire(kwargs, utcnow, scheduler, jwks, lambda: bool(rt.elector and rt.elector.leading()))
    rt.tasks.append(asyncio.create_task(rt.scheduler.run(), name="kubepam scheduler"))
    schedule_key_maintenance(rt)
    rt.broker = await start_broker(rt)
    if SETTINGS.console:
        from kubepam.console.app import app_from_settings
        from kubepam.console.app import start as start_console

        rt.console = await start_console(app_from_settings(SETTINGS), SETTINGS)
    memo.runtime = rt
    log.info("kubepam operator started; broker on %s:%s", SETTINGS.broker_host, SETTINGS.broker_port)


@kopf.on.cleanup(registry=VIEW)
async def cleanup(memo: Any, **_: Any) -> None:
    rt = getattr(memo, "runtime", None)
    if not isinstance(rt, Runtime):
        return
    if rt.broker is not None:
        await rt.broker.cleanup()
    if rt.console is not None:
        await rt.console.cleanup()
    for task in rt.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await rt.scheduler.close()
    await rt.jwks.close()
    await rt.fetcher.close()
