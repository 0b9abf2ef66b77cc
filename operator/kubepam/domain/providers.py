"""Presets for the CI/CD and cloud OIDC issuers kubepam trusts, with the claims each really uses.

A *multi-tenant* issuer (GitHub Actions, GitLab.com, Google) signs tokens for every customer with the
same keys, so a connection to it must bind at least one tenant-identifying claim, or any repository or
project in the world could log in. CircleCI issues per organization (the org id is in the issuer URL),
which binds the tenant by itself.

Each preset also says which algorithms its issuer signs with (``spec.algorithms`` defaults to them): all
four sign RS256 today (GitHub Actions, GitLab, CircleCI and Google publish RSA keys with alg RS256), so a
PS256 or ES256 token is refused for them even if it would verify; ``generic`` has no default and the
connection must name its issuer's algorithms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    name: str
    issuer: str | None  # None: the connection must give its issuer
    jwks_url: str | None  # None: derived from the issuer or given by the connection
    binding_claims: frozenset[str]  # claims that identify the tenant; empty: issuer binds the tenant
    claim_vocabulary: tuple[str, ...]  # the claims people write conditions on, for docs and `explain`
    issuer_pattern: re.Pattern[str] | None = None
    algorithms: tuple[str, ...] = ("RS256",)  # what the issuer signs with; empty: the connection names them

    @property
    def multi_tenant(self) -> bool:
        return bool(self.binding_claims)


GITHUB = Provider(
    name="github",
    issuer="https://token.actions.githubusercontent.com",
    jwks_url="https://token.actions.githubusercontent.com/.well-known/jwks",
    binding_claims=frozenset(
        {
            "sub",
            "repository",
            "repository_id",
            "repository_owner",
            "repository_owner_id",
            "enterprise",
            "enterprise_id",
            "job_workflow_ref",
        }
    ),
    claim_vocabulary=(
        "sub",
        "repository",
        "repository_owner",
        "repository_id",
        "ref",
        "ref_type",
        "environment",
        "workflow",
        "job_workflow_ref",
        "event_name",
        "actor",
    ),
)
GITLAB = Provider(
    name="gitlab",
    issuer="https://gitlab.com",
    jwks_url="https://gitlab.com/oauth/discovery/keys",
    binding_claims=frozenset({"sub", "project_path", "project_id", "namespace_path", "namespace_id"}),
    claim_vocabulary=(
        "sub",
        "project_path",
        "namespace_path",
        "ref",
        "ref_type",
        "ref_protected",
        "environment",
        "pipeline_source",
        "user_login",
    ),
)
CIRCLECI = Provider(
    name="circleci",
    issuer=None,
    jwks_url=None,
    binding_claims=frozenset(),
    claim_vocabulary=(
        "sub",
        "oidc.circleci.com/project-id",
        "oidc.circleci.com/context-ids",
        "oidc.circleci.com/vcs-origin",
        "oidc.circleci.com/vcs-ref",
    ),
    issuer_pattern=re.compile(
        r"^https://oidc\.circleci\.com/org/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ),
)
GCP = Provider(
    name="gcp",
    issuer="https://accounts.google.com",
    jwks_url="https://www.googleapis.com/oauth2/v3/certs",
    binding_claims=frozenset(
        {"sub", "email", "/google/compute_engine/project_id", "/google/compute_engine/project_number"}
    ),
    claim_vocabulary=(
        "sub",
        "email",
        "/google/compute_engine/project_id",
        "/google/compute_engine/project_number",
        "/google/compute_engine/instance_name",
    ),
)
GENERIC = Provider(
    name="generic",
    issuer=None,
    jwks_url=None,
    binding_claims=frozenset(),
    claim_vocabulary=(),
    algorithms=(),
)

PROVIDERS: dict[str, Provider] = {p.name: p for p in (GITHUB, GITLAB, CIRCLECI, GCP, GENERIC)}


def default_jwks_url(provider: Provider, issuer: str) -> str | None:
    if provider.jwks_url is not None and issuer == provider.issuer:
        return provider.jwks_url
    if provider is CIRCLECI:
        return issuer + "/.well-known/jwks-pub.json"
    if provider is GITLAB:  # self-managed GitLab publishes its keys at the same path
        return issuer.rstrip("/") + "/oauth/discovery/keys"
    return None
