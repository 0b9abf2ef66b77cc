"""Prometheus metrics of the operator and broker (served on /metrics by every replica).

Two kinds of series:

- **Events** (counters and histograms) are counted where they happen, in the replica where they happen:
  token requests on every replica, rotations, expiries, JIT disables and reconcile errors on the leader
  (the only replica that reconciles), certificates on the leader (requests) or on the replica that
  answered the broker (workloads). Sum them over replicas.
- **State** (gauges: checkouts by phase, the waiting line, open approvals, JIT accounts by state,
  scheduler depth, JWKS cache, leadership) is computed at scrape time by :class:`StateCollector` from
  what the process already holds: kopf indexes every replica keeps (handlers/observed.py), the
  scheduler, the JWKS cache, the leader elector. Nothing is pushed, so nothing can drift; the object
  gauges read the same on every replica (take ``max``), the scheduler's are the leader's.

Every label has a value set fixed by the code (enumerated below or in the domain); no label carries a
person, an object name, a namespace or a URL, so the number of series does not grow with the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubepam.domain.checkout import Phase

REGISTRY = CollectorRegistry(auto_describe=True)

# ----- the bounded label values --------------------------------------------------------------------
CHECKOUT_PHASES: Final = tuple(phase.value for phase in Phase)
JIT_STATES: Final = ("Pending", "Active", "Disabled", "Failed")
BACKENDS: Final = ("kubernetes", "postgresql")
CERTIFICATE_KINDS: Final = ("ssh", "x509")
CERTIFICATE_SOURCES: Final = ("request", "workload")  # a person's *CertificateRequest, or the broker
CERTIFICATE_OUTCOMES: Final = ("issued", "denied")
ROTATION_OUTCOMES: Final = ("success", "failure")
RECONCILED_KINDS: Final = ("Checkout", "JitAccount")
JWKS_STATES: Final = ("fresh", "stale", "expired", "unavailable")
JIT_DISABLE_CAUSES: Final = ("expired", "early")
OTHER: Final = "other"  # any value outside its set (never expected: it keeps the set closed)

_OUTCOME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

LATENESS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

# ----- events ----------------------------------------------------------------------------------------
TOKEN_REQUESTS = Counter(
    "kubepam_token_requests",
    "Token exchange and validation requests by endpoint and outcome (issued, valid, or the refusal reason).",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
TOKEN_LATENCY = Histogram(
    "kubepam_token_request_seconds",
    "Time to answer a token endpoint request.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
JWKS_FETCHES = Counter(
    "kubepam_jwks_fetches",
    "Fetches of issuer JWKS documents by result (ok, error).",
    ["result"],
    registry=REGISTRY,
)
ROTATIONS = Counter(
    "kubepam_password_rotations",
    "Password rotations of shared accounts by backend and outcome (success, failure).",
    ["backend", "outcome"],
    registry=REGISTRY,
)
ROTATION_RETRIES = Counter(
    "kubepam_password_rotation_retries",
    "Rotation attempts that resume a pending password an earlier failed attempt left, by backend.",
    ["backend"],
    registry=REGISTRY,
)
CHECKOUT_EXPIRY_LATENESS = Histogram(
    "kubepam_checkout_expiry_lateness_seconds",
    "From a checkout's expiresAt to its Expired status (check-in and rotation included).",
    buckets=LATENESS_BUCKETS,
    registry=REGISTRY,
)
JIT_DISABLES = Counter(
    "kubepam_jit_disables",
    "JIT accounts disabled, by cause (expired: the window ended; early: spec.disabled).",
    ["cause"],
    registry=REGISTRY,
)
JIT_DISABLE_LATENESS = Histogram(
    "kubepam_jit_disable_lateness_seconds",
    "From a JIT account's expiresAt to its account being disabled in the backend.",
    ["backend"],
    buckets=LATENESS_BUCKETS,
    registry=REGISTRY,
)
CERTIFICATES = Counter(
    "kubepam_certificates",
    "Certificate decisions by kind (ssh, x509), source (request, workload) and outcome (issued, denied).",
    ["kind", "source", "outcome"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "kubepam_reconcile_errors",
    "Failed reconcile steps (retried with backoff) by kind and exception class.",
    ["kind", "error"],
    registry=REGISTRY,
)
SCHEDULER_LATENESS = Histogram(
    "kubepam_scheduler_lateness_seconds",
    "From a deadline to the start of its action in the scheduler.",
    buckets=LATENESS_BUCKETS,
    registry=REGISTRY,
)

# The exception classes a reconcile step may fail with (services/reconciler.py RETRYABLE); others: "other".
RECONCILE_ERROR_CLASSES: Final = ("BackendError", "KubeError", "RuntimeError", "ForeignObject")

# Every series of a closed label set exists from the start (at 0), so rate() and increase() see the
# first event, and a dashboard shows 0 rather than "no data".
for _backend in BACKENDS:
    ROTATION_RETRIES.labels(backend=_backend)
    JIT_DISABLE_LATENESS.labels(backend=_backend)
    for _outcome in ROTATION_OUTCOMES:
        ROTATIONS.labels(backend=_backend, outcome=_outcome)
for _cause in JIT_DISABLE_CAUSES:
    JIT_DISABLES.labels(cause=_cause)
for _kind in CERTIFICATE_KINDS:
    for _source in CERTIFICATE_SOURCES:
        for _outcome in CERTIFICATE_OUTCOMES:
            CERTIFICATES.labels(kind=_kind, source=_source, outcome=_outcome)
for _kind in RECONCILED_KINDS:
    for _error in RECONCILE_ERROR_CLASSES:
        RECONCILE_ERRORS.labels(kind=_kind, error=_error)
for _result in ("ok", "error"):
    JWKS_FETCHES.labels(result=_result)


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


def record_token_outcome(endpoint: str, outcome: str) -> None:
    # outcomes are literals of the code (domain/oauth.py); the pattern only guards against a mistake
    TOKEN_REQUESTS.labels(endpoint=endpoint, outcome=outcome if _OUTCOME.match(outcome) else OTHER).inc()


def record_jwks_fetch(ok: bool) -> None:
    JWKS_FETCHES.labels(result="ok" if ok else "error").inc()


def record_rotation(backend: str, ok: bool, *, resumed: bool) -> None:
    backend = _bounded(backend, BACKENDS)
    ROTATIONS.labels(backend=backend, outcome="success" if ok else "failure").inc()
    if resumed:
        ROTATION_RETRIES.labels(backend=backend).inc()


def record_checkout_expired(deadline: datetime | None, done: datetime) -> None:
    if deadline is not None:
        CHECKOUT_EXPIRY_LATENESS.observe(max(0.0, (done - deadline).total_seconds()))


def record_jit_disabled(backend: str, *, early: bool, deadline: datetime | None, done: datetime) -> None:
    JIT_DISABLES.labels(cause="early" if early else "expired").inc()
    if not early and deadline is not None:
        JIT_DISABLE_LATENESS.labels(backend=_bounded(backend, BACKENDS)).observe(
            max(0.0, (done - deadline).total_seconds())
        )


def record_certificate(kind: str, source: str, issued: bool) -> None:
    CERTIFICATES.labels(
        kind=_bounded(kind, CERTIFICATE_KINDS),
        source=_bounded(source, CERTIFICATE_SOURCES),
        outcome="issued" if issued else "denied",
    ).inc()


def record_reconcile_error(plural: str, exc: BaseException) -> None:
    kind = {"checkouts": "Checkout", "jitaccounts": "JitAccount"}.get(plural, OTHER)
    RECONCILE_ERRORS.labels(kind=kind, error=_bounded(type(exc).__name__, RECONCILE_ERROR_CLASSES)).inc()


def record_deadline_started(deadline: datetime, started: datetime) -> None:
    SCHEDULER_LATENESS.observe(max(0.0, (started - deadline).total_seconds()))


# ----- state, read at scrape time --------------------------------------------------------------------
@dataclass(frozen=True)
class Approvals:
    pending: int
    oldest_age_seconds: float  # 0 when none is pending


@dataclass(frozen=True)
class SchedulerDepth:
    deadlines: int  # armed deadlines (expiries, rotations, approval windows, key changes, retries)
    queued: int  # work waiting for a queue slot (kopf's create/update/resume hand-offs)


@dataclass
class State:
    """Readers of what the process holds; the runtime sets them at start-up (None: not reported)."""

    checkout_phases: Callable[[], Mapping[str, int]] | None = None
    checkout_queue_length: Callable[[], int] | None = None
    approvals: Callable[[], Approvals] | None = None
    jit_states: Callable[[], Mapping[str, int]] | None = None
    scheduler: Callable[[], SchedulerDepth] | None = None
    jwks: Callable[[], Mapping[str, int]] | None = None
    leader: Callable[[], bool] | None = None


STATE = State()


def _by(
    name: str, doc: str, label: str, allowed: tuple[str, ...], counts: Mapping[str, int] | None
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    if counts is not None:
        values = dict.fromkeys(allowed, 0)
        for key, count in counts.items():
            values[_bounded(key, allowed)] = values.get(_bounded(key, allowed), 0) + count
        for value, count in values.items():
            family.add_metric([value], count)
    return family


def _one(name: str, doc: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


class StateCollector(Collector):
    """The gauges of current state, computed from :data:`STATE` at each scrape."""

    def __init__(self, state: State) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return self._families(State())

    def collect(self) -> Iterable[Metric]:
        return self._families(self._state)

    @staticmethod
    def _families(s: State) -> list[Metric]:
        approvals = s.approvals() if s.approvals else None
        depth = s.scheduler() if s.scheduler else None
        return [
            _by(
                "kubepam_checkouts",
                "Checkouts by status phase.",
                "phase",
                CHECKOUT_PHASES,
                s.checkout_phases() if s.checkout_phases else None,
            ),
            _one(
                "kubepam_checkout_queue_length",
                "Checkouts waiting in an account's line (Queued or Offered), all accounts together.",
                s.checkout_queue_length() if s.checkout_queue_length else None,
            ),
            _one(
                "kubepam_approvals_pending",
                "Open approval requests (checkouts, elevations, extensions) waiting for votes.",
                approvals.pending if approvals else None,
            ),
            _one(
                "kubepam_approval_oldest_pending_age_seconds",
                "Age of the oldest open approval request (0 when none is open).",
                approvals.oldest_age_seconds if approvals else None,
            ),
            _by(
                "kubepam_jit_accounts",
                "JIT accounts by status phase.",
                "state",
                JIT_STATES,
                s.jit_states() if s.jit_states else None,
            ),
            _one(
                "kubepam_scheduler_deadlines",
                "Deadlines armed in this replica's scheduler (the leader's hold the work).",
                depth.deadlines if depth else None,
            ),
            _one(
                "kubepam_scheduler_queue_depth",
                "Jobs waiting in this replica's scheduler queue for a slot.",
                depth.queued if depth else None,
            ),
            _by(
                "kubepam_jwks_cache_entries",
                "Issuer JWKS cached by this replica, by state (fresh, stale: due for refresh, "
                "expired: older than the maximum staleness, unavailable: never fetched successfully).",
                "state",
                JWKS_STATES,
                s.jwks() if s.jwks else None,
            ),
            _one(
                "kubepam_leader",
                "1 while this replica holds the leader Lease (reconciles and runs deadlines), else 0.",
                (1.0 if s.leader() else 0.0) if s.leader else None,
            ),
        ]


REGISTRY.register(StateCollector(STATE))


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
