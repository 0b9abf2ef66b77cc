"""The operator's side of history (services/records.py) against an in-memory API: a record is written
once when a checkout finishes, a retry or a restart writes nothing twice, a failed write is retried by the
one scheduler, and each record the operator wrote is deleted at finishedAt + retention (not before, and
never one somebody else made)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubepam.adapters.kube import KubeError
from kubepam.domain import records
from kubepam.services.records import RecordService
from kubepam.services.scheduler import Scheduler
from tests.handlers.fakes import Clock

RETENTION = timedelta(days=30)


class FakeRecords:
    """AccessRecords in memory: create answers 409 for a name that exists (as the API server does)."""

    def __init__(self, failures: int = 0) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0
        self.deletes: list[tuple[str, str]] = []
        self.failures = failures

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> None:
        assert plural == "accessrecords"
        self.creates += 1
        if self.failures:
            self.failures -= 1
            raise KubeError(503, "ServiceUnavailable", "etcd is busy")
        key = (namespace, body["metadata"]["name"])
        if key in self.items:
            raise KubeError(409, "AlreadyExists", "already exists")
        self.items[key] = {**body, "metadata": {**body["metadata"], "uid": f"uid-{key[1]}"}}

    async def delete(self, plural: str, namespace: str, name: str, uid: str) -> bool:
        self.deletes.append((namespace, name))
        found = self.items.get((namespace, name))
        if found is None or found["metadata"]["uid"] != uid:
            return False
        del self.items[(namespace, name)]
        return True


def finished_checkout(clock: Clock, phase: str = "CheckedIn", uid: str = "u-1") -> dict[str, Any]:
    at = (clock() - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "co-1", "namespace": "team-a", "uid": uid, "creationTimestamp": at},
        "spec": {"project": "p", "account": "db_admin", "requester": "alice", "reason": "INC-1"},
        "status": {
            "phase": phase,
            "grantedAt": at,
            "expiresAt": at,
            "secretName": "co-1-credential",
            "conditions": [{"type": "Ready", "lastTransitionTime": at}],
        },
    }


async def settle(scheduler: Scheduler, seconds: float = 0.05) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def world(failures: int = 0) -> tuple[Clock, FakeRecords, Scheduler, RecordService]:
    clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    objects = FakeRecords(failures)
    scheduler = Scheduler(clock, backoff=(0,))
    return clock, objects, scheduler, RecordService(objects, scheduler, clock, RETENTION)


async def test_a_finished_checkout_is_recorded_once_however_often_it_is_seen() -> None:
    clock, objects, scheduler, service = world()
    service.observe_checkout({**finished_checkout(clock), "status": {"phase": "Active"}})
    await settle(scheduler)
    assert objects.items == {}
    for _ in range(3):  # every later event of the same finished checkout
        service.observe_checkout(finished_checkout(clock))
    await settle(scheduler)
    assert objects.creates == 1 and service.written == 1
    ((_, name),) = objects.items
    assert name.startswith("checkout-co-1-")
    spec = objects.items[("team-a", name)]["spec"]
    assert spec["outcome"] == "CheckedIn" and spec["who"] == "alice" and "secretName" not in str(spec)


async def test_after_a_restart_the_same_record_is_not_written_twice() -> None:
    clock, objects, scheduler, _ = world()
    first = RecordService(objects, scheduler, clock, RETENTION)
    first.observe_checkout(finished_checkout(clock))
    await settle(scheduler)
    restarted = RecordService(objects, Scheduler(clock, backoff=(0,)), clock, RETENTION)  # knows nothing
    restarted.observe_checkout(finished_checkout(clock))
    await settle(restarted._scheduler)
    assert len(objects.items) == 1 and objects.creates == 2  # the second create met 409: done
    assert restarted.written == 0


async def test_a_failed_write_is_retried_by_the_scheduler_until_it_lands() -> None:
    clock, objects, scheduler, service = world(failures=2)
    service.observe_checkout(finished_checkout(clock))
    await settle(scheduler, 0.1)
    assert objects.creates == 3 and len(objects.items) == 1


async def test_a_record_past_its_retention_is_not_written() -> None:
    clock, objects, scheduler, service = world()
    old = finished_checkout(clock)
    clock.advance(days=31)
    service.observe_checkout(old)
    await settle(scheduler)
    assert objects.creates == 0


async def test_each_record_is_deleted_at_finished_plus_retention() -> None:
    clock, objects, scheduler, service = world()
    service.observe_checkout(finished_checkout(clock))
    await settle(scheduler)
    ((key, record),) = objects.items.items()
    service.seen(record)  # the watch event of the record just written
    finished = datetime.fromisoformat(record["spec"]["finishedAt"].replace("Z", "+00:00"))
    assert scheduler.deadline(("access-record-gc", *key)) == finished + RETENTION
    await settle(scheduler)
    assert key in objects.items  # not before
    clock.now = finished + RETENTION  # the deadline has come
    service.seen(record)  # re-armed at start-up: same deadline, now due
    scheduler.schedule(("nudge",), clock(), _nothing)  # wake the loop (a fake clock never ticks)
    await settle(scheduler)
    assert key not in objects.items and service.collected == 1


async def _nothing() -> None:
    return None


async def test_a_record_listed_at_start_up_past_its_retention_is_deleted_at_once() -> None:
    clock, objects, scheduler, service = world()
    old = records.checkout_record(finished_checkout(clock, uid="u-old"), clock())
    assert old is not None
    await objects.create("accessrecords", "team-a", old.manifest())
    clock.advance(days=40)
    service.seen(objects.items[("team-a", old.name)])
    await settle(scheduler)
    assert objects.items == {} and service.collected == 1


async def test_records_somebody_else_made_are_never_deleted() -> None:
    _clock, objects, scheduler, service = world()
    foreign = {
        "metadata": {"name": "mine", "namespace": "team-a", "uid": "x", "labels": {"team": "a"}},
        "spec": {"finishedAt": "2020-01-01T00:00:00Z"},
    }
    objects.items[("team-a", "mine")] = foreign
    service.seen(foreign)
    await settle(scheduler)
    assert objects.deletes == [] and ("team-a", "mine") in objects.items


async def test_a_deleted_record_cancels_its_deadline() -> None:
    clock, objects, scheduler, service = world()
    service.observe_checkout(finished_checkout(clock))
    await settle(scheduler)
    ((key, record),) = objects.items.items()
    service.seen(record)
    service.gone(record)
    assert scheduler.deadline(("access-record-gc", *key)) is None


async def test_jit_windows_and_certificates_are_recorded_too() -> None:
    _clock, objects, scheduler, service = world()
    window = {"by": "bob", "reason": "CHG-1", "groups": ["edit"]}
    window |= {"from": "2026-03-01T10:00:00Z", "until": "2026-03-01T11:00:00Z"}
    service.observe_jit(
        {
            "metadata": {"name": "bob", "namespace": "team-a", "uid": "u-j"},
            "spec": {"project": "p", "owner": "bob"},
            "status": {"phase": "Disabled", "accountName": "bob_jit", "history": [window]},
        }
    )
    service.observe_certificate(
        "SSHCertificateRequest",
        {
            "metadata": {"name": "c", "namespace": "team-a", "uid": "u-c"},
            "spec": {"requester": "alice", "project": "p"},
            "status": {"phase": "Denied", "reason": "no policy"},
        },
    )
    await settle(scheduler)
    assert sorted(o["spec"]["kind"] for o in objects.items.values()) == ["certificate", "jit"]


# -- the console's History page reads the records too (same rows as `kubepam history`) ---------------


async def test_the_console_history_shows_records_of_gone_objects_beside_live_ones() -> None:
    import csv
    import io

    from tests.handlers.test_console_http import TOKEN, FakeKube, client, sign_in

    clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    gone = records.checkout_record(finished_checkout(clock, uid="u-gone"), clock())
    live = finished_checkout(clock, uid="u-live")
    live_record = records.checkout_record(live, clock())
    assert gone is not None and live_record is not None

    class WithRecords(FakeKube):
        async def list_or_empty(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
            assert token == TOKEN
            found = {
                "accessrecords": [gone.manifest(), live_record.manifest()],
                "checkouts": [live],
            }
            return found.get(plural, [])

    c, _ = await client(kube=WithRecords())
    try:
        await sign_in(c)
        resp = await c.get("/history?format=csv")
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    finally:
        await c.close()
    # the gone checkout: one row from its record; the live one: its own rows (checkout, checkin), once
    assert sorted(
        (r["kind"], r["detail"].split(":")[0]) for r in rows if r["detail"].startswith("CheckedIn: ")
    ) == [("checkout", "CheckedIn")]
    assert sorted(r["kind"] for r in rows) == ["checkin", "checkout", "checkout"]
