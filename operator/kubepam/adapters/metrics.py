"""Prometheus metrics of the operator and broker (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

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
    "Fetches of issuer JWKS documents by result.",
    ["result"],
    registry=REGISTRY,
)


def record_token_outcome(endpoint: str, outcome: str) -> None:
    TOKEN_REQUESTS.labels(endpoint=endpoint, outcome=outcome).inc()


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
