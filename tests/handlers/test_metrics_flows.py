"""The flows count themselves: rotations (success, failure, the retry that resumes a pending password),
JWKS fetches and cache states, scheduler lateness and depth, and the runtime's wiring of the state
gauges to the indexes, the scheduler, the JWKS cache and the elector."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kubepam.adapters import metrics, postgres
from kubepam.adapters.kube import SecretData
from kubepam.domain.backends import ALLOWED_HOSTS_ANNOTATION
from kubepam.handlers import observed
from kubepam.services.accounts import Account, Accounts
from kubepam.services.scheduler import Scheduler
from tests.handlers.fakes import Clock, FakeFetcher, FakeSecrets, jwks_cache

NS = "team"


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def state() -> Iterator[metrics.State]:
    saved = metrics.State(**vars(metrics.STATE))
    yield metrics.STATE
    for key, value in vars(saved).items():
        setattr(metrics.STATE, key, value)


async def test_rotations_count_by_backend_and_outcome_and_a_resumed_one_as_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = FakeSecrets()
    accounts = Accounts(secrets, Clock(), FakeSecrets())  # type: ignore[arg-type]
    ok = sample("kubepam_password_rotations_total", backend="kubernetes", outcome="success")
    await accounts.rotate(Account(NS, "p", "ops", "kubernetes", 24, {}, "uid"))
    assert sample("kubepam_password_rotations_total", backend="kubernetes", outcome="success") == ok + 1

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("no connections in this test")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse)
    secrets.items[(NS, "pg-admin")] = SecretData(
        {"username": b"postgres", "password": b"x"}, "1", {}, {ALLOWED_HOSTS_ANNOTATION: "127.0.0.1:5432"}
    )
    pg = Account(NS, "p", "app", "postgresql", 24, {"host": "127.0.0.1", "port": 5432}, "uid")
    failed = sample("kubepam_password_rotations_total", backend="postgresql", outcome="failure")
    retries = sample("kubepam_password_rotation_retries_total", backend="postgresql")
    for _ in range(2):  # the second attempt finds the first one's pending password
        with pytest.raises(postgres.BackendError):
            await accounts.rotate(pg)
    assert sample("kubepam_password_rotations_total", backend="postgresql", outcome="failure") == failed + 2
    assert sample("kubepam_password_rotation_retries_total", backend="postgresql") == retries + 1


async def test_jwks_fetches_and_cache_states() -> None:
    clock = Clock()
    fetcher = FakeFetcher()
    cache = jwks_cache(fetcher, clock)
    ok, errors = (
        sample("kubepam_jwks_fetches_total", result="ok"),
        sample("kubepam_jwks_fetches_total", result="error"),
    )
    await cache.refresh("https://a.example/jwks")
    assert cache.cache_states() == {"fresh": 1, "stale": 0, "expired": 0, "unavailable": 0}
    clock.advance(minutes=20)
    assert cache.cache_states()["stale"] == 1
    clock.advance(hours=25)
    assert cache.cache_states()["expired"] == 1
    fetcher.down = True
    with pytest.raises(Exception, match="connection refused"):
        await cache.refresh("https://b.example/jwks")
    assert cache.cache_states() == {"fresh": 0, "stale": 0, "expired": 1, "unavailable": 1}
    assert sample("kubepam_jwks_fetches_total", result="ok") == ok + 1
    assert sample("kubepam_jwks_fetches_total", result="error") == errors + 1
    await cache.close()


async def test_scheduler_lateness_and_depth_reach_the_scrape(state: metrics.State) -> None:
    def now() -> datetime:
        return datetime.now(UTC)

    scheduler = Scheduler(now)
    cache = jwks_cache(FakeFetcher(), Clock())
    leading = [False]
    checkouts = {("phase", "Active"): ["a"], ("phase", "Queued"): ["b", "c"], observed.WAITING: ["b", "c"]}
    jits = {("phase", "Disabled"): ["d"]}
    observed.wire(
        {"checkout_metrics_index": checkouts, "jit_metrics_index": jits},
        now,
        scheduler,
        cache,
        lambda: leading[0],
    )
    done = asyncio.Event()

    async def action() -> None:
        done.set()

    count = sample("kubepam_scheduler_lateness_seconds_count")
    total = sample("kubepam_scheduler_lateness_seconds_sum")  # the registry is the process's: other tests
    scheduler.schedule("soon", now() + timedelta(milliseconds=20), action)
    scheduler.schedule("later", now() + timedelta(hours=1), action)
    assert sample("kubepam_scheduler_deadlines") == 2
    assert sample("kubepam_leader") == 0
    runner = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(done.wait(), 2)
    runner.cancel()
    await scheduler.close()
    assert sample("kubepam_scheduler_lateness_seconds_count") == count + 1
    assert sample("kubepam_scheduler_lateness_seconds_sum") - total < 60
    leading[0] = True
    assert sample("kubepam_leader") == 1
    assert sample("kubepam_scheduler_deadlines") == 1
    assert sample("kubepam_checkouts", phase="Queued") == 2
    assert sample("kubepam_checkouts", phase="Expired") == 0
    assert sample("kubepam_checkout_queue_length") == 2
    assert sample("kubepam_jit_accounts", state="Disabled") == 1
    assert sample("kubepam_approvals_pending") == 0
    assert sample("kubepam_jwks_cache_entries", state="fresh") == 0
    await cache.close()
