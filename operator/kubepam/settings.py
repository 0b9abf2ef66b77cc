"""The one place for settings: every knob the operator and broker read, from environment variables.

Each field documents its variable. ``configure_kopf`` applies the kopf-side settings in one spot.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from kubepam.domain.durations import parse_duration


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _in_cluster_api_server() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    return f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}" if host else ""


def _duration(name: str, default: str) -> timedelta:
    return parse_duration(_env(name, default))


@dataclass(frozen=True)
class Settings:
    # KUBEPAM_NAMESPACE: where the operator runs and keeps its own Secrets (signing keys).
    namespace: str = field(default_factory=lambda: _env("KUBEPAM_NAMESPACE", "kubepam-system"))
    # KUBEPAM_BROKER_HOST / KUBEPAM_BROKER_PORT: where the HTTP broker listens.
    broker_host: str = field(default_factory=lambda: _env("KUBEPAM_BROKER_HOST", "127.0.0.1"))
    broker_port: int = field(default_factory=lambda: int(_env("KUBEPAM_BROKER_PORT", "8080")))
    # KUBEPAM_BROKER_TLS_CERT / _KEY: serve HTTPS with these PEM files (e.g. from cert-manager).
    broker_tls_cert: str = field(default_factory=lambda: _env("KUBEPAM_BROKER_TLS_CERT", ""))
    broker_tls_key: str = field(default_factory=lambda: _env("KUBEPAM_BROKER_TLS_KEY", ""))
    # KUBEPAM_ISSUER: the `iss` of kubepam access tokens (the broker's external URL).
    issuer: str = field(default_factory=lambda: _env("KUBEPAM_ISSUER", "https://kubepam.kubepam-system.svc"))
    # KUBEPAM_AUDIENCE: the `aud` of kubepam access tokens.
    audience: str = field(default_factory=lambda: _env("KUBEPAM_AUDIENCE", "kubepam"))
    # KUBEPAM_SIGNING_SECRET: the Secret (in `namespace`) holding the access-token signing keys.
    signing_secret: str = field(
        default_factory=lambda: _env("KUBEPAM_SIGNING_SECRET", "kubepam-signing-keys")
    )
    # KUBEPAM_SIGNING_KEY_ROTATION: age at which the signing key is replaced (old key stays published).
    signing_key_rotation: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_SIGNING_KEY_ROTATION", "168h")
    )
    # KUBEPAM_SIGNING_KEY_RESYNC: how often the keys are re-read from their Secret (replicas converge).
    signing_key_resync: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_SIGNING_KEY_RESYNC", "60s")
    )
    # KUBEPAM_JWKS_REFRESH: how long fetched issuer keys are used before a background refetch.
    jwks_refresh: timedelta = field(default_factory=lambda: _duration("KUBEPAM_JWKS_REFRESH", "15m"))
    # KUBEPAM_JWKS_MIN_REFETCH: at most one unknown-kid refetch per issuer in this interval.
    jwks_min_refetch: timedelta = field(default_factory=lambda: _duration("KUBEPAM_JWKS_MIN_REFETCH", "10s"))
    # KUBEPAM_JWKS_MAX_STALE: how long cached keys keep working while the issuer is unreachable.
    jwks_max_stale: timedelta = field(default_factory=lambda: _duration("KUBEPAM_JWKS_MAX_STALE", "24h"))
    # KUBEPAM_JWKS_TIMEOUT: one JWKS HTTP request's time limit.
    jwks_timeout: timedelta = field(default_factory=lambda: _duration("KUBEPAM_JWKS_TIMEOUT", "5s"))
    # KUBEPAM_SYNC_GRACE: after start, how long the broker answers 503 for unknown objects (index warm-up).
    sync_grace: timedelta = field(default_factory=lambda: _duration("KUBEPAM_SYNC_GRACE", "5s"))
    # KUBEPAM_WORKLOAD_CHECKOUT_WAIT: how long POST /v1/checkouts waits for the operator's decision before
    # answering 503 with the checkout's name (the job then asks for its credential again).
    workload_checkout_wait: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_WORKLOAD_CHECKOUT_WAIT", "15s")
    )
    # KUBEPAM_AGENT_CERT_TTL: lifetime of a server agent's client certificate (renewed at two thirds).
    agent_cert_ttl: timedelta = field(default_factory=lambda: _duration("KUBEPAM_AGENT_CERT_TTL", "24h"))
    # KUBEPAM_AGENT_SILENT_AFTER: an enrolled agent silent this long makes its Server not Ready (AgentSilent).
    agent_silent_after: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_AGENT_SILENT_AFTER", "5m")
    )
    # KUBEPAM_API_CONCURRENCY: Kubernetes API calls in flight at once (threads of the client pool).
    api_concurrency: int = field(default_factory=lambda: int(_env("KUBEPAM_API_CONCURRENCY", "32")))
    # KUBEPAM_RECONCILE_CONCURRENCY: checkouts and JIT accounts reconciled at once from the work queue
    # (deadlines have their own slots and never wait behind it).
    reconcile_concurrency: int = field(
        default_factory=lambda: int(_env("KUBEPAM_RECONCILE_CONCURRENCY", "16"))
    )
    # KUBEPAM_MALLOC_ARENAS: glibc malloc arenas (0: glibc's default of 8 per core); few arenas keep
    # the memory freed by the client's threads reusable instead of spread over many heaps.
    malloc_arenas: int = field(default_factory=lambda: int(_env("KUBEPAM_MALLOC_ARENAS", "2")))
    # KUBEPAM_MEMORY_TRIM_INTERVAL: how often freed memory is handed back to the kernel (0s: never).
    memory_trim_interval: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_MEMORY_TRIM_INTERVAL", "30s")
    )
    # KUBEPAM_LEADER_ELECTION: "true" (default) or "false" (one replica only: it always leads).
    leader_election: bool = field(
        default_factory=lambda: _env("KUBEPAM_LEADER_ELECTION", "true").lower() in ("1", "true", "yes")
    )
    # KUBEPAM_LEASE_NAME: the coordination.k8s.io Lease (in `namespace`) whose holder reconciles.
    lease_name: str = field(default_factory=lambda: _env("KUBEPAM_LEASE_NAME", "kubepam-operator-leader"))
    # KUBEPAM_IDENTITY: this replica's name in the Lease (default: POD_NAME, else host name and pid).
    identity: str = field(
        default_factory=lambda: _env(
            "KUBEPAM_IDENTITY", os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        )
    )
    # KUBEPAM_LEASE_DURATION / _RENEW_DEADLINE / _RETRY_PERIOD: others take over this long after the
    # leader's last renewal; the leader stops acting when it could not renew for the renew deadline;
    # candidates try, and the leader renews, every retry period.
    lease_duration: timedelta = field(default_factory=lambda: _duration("KUBEPAM_LEASE_DURATION", "15s"))
    renew_deadline: timedelta = field(default_factory=lambda: _duration("KUBEPAM_RENEW_DEADLINE", "10s"))
    retry_period: timedelta = field(default_factory=lambda: _duration("KUBEPAM_RETRY_PERIOD", "2s"))
    # KUBEPAM_CONSOLE: "true" also serves the web console from the operator process (`kubepam run`).
    console: bool = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE", "false").lower() in ("1", "true", "yes")
    )
    # KUBEPAM_CONSOLE_HOST / KUBEPAM_CONSOLE_PORT: where the console listens.
    console_host: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_HOST", "127.0.0.1"))
    console_port: int = field(default_factory=lambda: int(_env("KUBEPAM_CONSOLE_PORT", "8443")))
    # KUBEPAM_CONSOLE_TLS_CERT / _KEY: serve the console over HTTPS (then cookies are Secure and HSTS is
    # sent); without them it serves HTTP for an ingress or mesh that terminates TLS.
    console_tls_cert: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_TLS_CERT", ""))
    console_tls_key: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_TLS_KEY", ""))
    # KUBEPAM_CONSOLE_SECURE_COOKIES: "true" marks cookies Secure behind a TLS-terminating proxy.
    console_secure_cookies: bool = field(
        default_factory=lambda: (
            _env("KUBEPAM_CONSOLE_SECURE_COOKIES", "false").lower() in ("1", "true", "yes")
        )
    )
    # KUBEPAM_CONSOLE_API_SERVER / _CA_FILE: the API server people's tokens go to, and the CA that
    # signed its certificate (in a pod: the in-cluster service and the ServiceAccount's ca.crt).
    console_api_server: str = field(
        default_factory=lambda: _env(
            "KUBEPAM_CONSOLE_API_SERVER",
            _in_cluster_api_server(),
        )
    )
    console_ca_file: str = field(
        default_factory=lambda: _env(
            "KUBEPAM_CONSOLE_CA_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        )
    )
    # KUBEPAM_CONSOLE_SESSION_KEY_FILE: secret material the session cookies are sealed with; replicas
    # that share it share sessions (empty: a random key per process, sessions end at restart).
    console_session_key_file: str = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE_SESSION_KEY_FILE", "")
    )
    # KUBEPAM_CONSOLE_SESSION_TTL: how long a sign-in lasts (the token's own expiry may end it sooner).
    console_session_ttl: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_CONSOLE_SESSION_TTL", "8h")
    )
    # KUBEPAM_CONSOLE_OIDC_ISSUER: sign people in with this OIDC issuer (authorization code + PKCE); it must
    # be the issuer the API server trusts, so the ID token works as their bearer token. Empty: token only.
    console_oidc_issuer: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_ISSUER", ""))
    # KUBEPAM_CONSOLE_OIDC_CLIENT_ID: the client ID (an audience the API server accepts).
    console_oidc_client_id: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_CLIENT_ID", ""))
    # KUBEPAM_CONSOLE_OIDC_CLIENT_SECRET_FILE: a file with the client secret (empty: a public client).
    console_oidc_client_secret_file: str = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_CLIENT_SECRET_FILE", "")
    )
    # KUBEPAM_CONSOLE_OIDC_REDIRECT_URL: this console's /login/callback as browsers reach it.
    console_oidc_redirect_url: str = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_REDIRECT_URL", "")
    )
    # KUBEPAM_CONSOLE_OIDC_CA_FILE: the CA of the issuer's HTTPS certificate (empty: the system's).
    console_oidc_ca_file: str = field(default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_CA_FILE", ""))
    # KUBEPAM_CONSOLE_OIDC_SCOPES: the scopes asked for.
    console_oidc_scopes: str = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE_OIDC_SCOPES", "openid profile email groups")
    )
    # KUBEPAM_CONSOLE_SIGNIN_BURST / _PER_MINUTE: failed sign-ins allowed per client address at once, and
    # how fast that allowance refills.
    console_signin_burst: int = field(default_factory=lambda: int(_env("KUBEPAM_CONSOLE_SIGNIN_BURST", "5")))
    console_signin_per_minute: float = field(
        default_factory=lambda: float(_env("KUBEPAM_CONSOLE_SIGNIN_PER_MINUTE", "10"))
    )
    # KUBEPAM_CONSOLE_BROKER: the broker URL the explain page sends pasted tokens to.
    console_broker: str = field(
        default_factory=lambda: _env("KUBEPAM_CONSOLE_BROKER", "http://127.0.0.1:8080")
    )
    # KUBEPAM_AUDIT_FILE: also write the audit trail (one JSON line per decision, docs/audit.md) to this
    # file, besides stdout (empty: stdout only). KUBEPAM_AUDIT_FILE_MAX_BYTES / _BACKUPS: rotate it at
    # this size, keeping this many old files.
    audit_file: str = field(default_factory=lambda: _env("KUBEPAM_AUDIT_FILE", ""))
    audit_file_max_bytes: int = field(
        default_factory=lambda: int(_env("KUBEPAM_AUDIT_FILE_MAX_BYTES", str(100 * 1024 * 1024)))
    )
    audit_file_backups: int = field(default_factory=lambda: int(_env("KUBEPAM_AUDIT_FILE_BACKUPS", "10")))
    # KUBEPAM_HISTORY_RETENTION: how long an AccessRecord (a finished checkout, JIT activation or
    # certificate request) is kept after it finished; then the operator deletes it.
    history_retention: timedelta = field(
        default_factory=lambda: _duration("KUBEPAM_HISTORY_RETENTION", "720h")
    )
    # KUBEPAM_LOG_LEVEL: DEBUG, INFO, WARNING.
    log_level: str = field(default_factory=lambda: _env("KUBEPAM_LOG_LEVEL", "INFO"))

    def describe(self) -> dict[str, Any]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def configure_kopf(kopf_settings: Any, settings: Settings) -> None:
    """kopf settings in one place: annotations for kopf's own bookkeeping (status is ours), standalone
    mode (correctness comes from the API server's optimistic concurrency, not from peering), events
    from the operator's component name, and bounded retries."""
    import kopf

    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.kubepam.io")
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.kubepam.io", key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = "kubepam.io/finalizer"
    kopf_settings.peering.standalone = True
    kopf_settings.posting.reporting_component = "kubepam-operator"
    # Only warnings and errors become Events automatically; lifecycle Events are posted explicitly.
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.execution.max_workers = 8
    kopf_settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    # The start-up listing in pages: ten thousand objects are never one response parsed in one go.
    kopf_settings.watching.chunk_size = 500
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.networking.request_timeout = 30
