"""Where a CI job's OIDC ID token comes from, per provider, without user interaction.

file        --token-file PATH (or KUBEPAM_ID_TOKEN_FILE)
github      GitHub Actions: GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD with
            Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN (needs `permissions: id-token: write`)
gitlab      GitLab CI: the variable named by `id_tokens:` in .gitlab-ci.yml (--gitlab-variable, default
            KUBEPAM_ID_TOKEN)
circleci    CircleCI: $CIRCLE_OIDC_TOKEN_V2 (falls back to $CIRCLE_OIDC_TOKEN)
gcp         Google Compute Engine / GKE metadata server identity endpoint (host from GCE_METADATA_HOST)
auto        the first of these whose environment is present
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

PROVIDERS = ("file", "github", "gitlab", "circleci", "gcp", "auto")
TIMEOUT = 10


class TokenSourceError(Exception):
    """No ID token could be obtained; the message says what to set."""


def _http_get(url: str, headers: Mapping[str, str]) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise TokenSourceError(f"refusing non-HTTP URL {url.split('?')[0]}")
    request = urllib.request.Request(url, headers=dict(headers))  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310
            body: bytes = resp.read(1 << 20)
            return body
    except urllib.error.HTTPError as exc:
        raise TokenSourceError(f"GET {url.split('?')[0]}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TokenSourceError(f"GET {url.split('?')[0]}: {exc}") from None


def detect(env: Mapping[str, str]) -> str:
    if env.get("KUBEPAM_ID_TOKEN_FILE"):
        return "file"
    if env.get("ACTIONS_ID_TOKEN_REQUEST_URL"):
        return "github"
    if env.get("GITLAB_CI"):
        return "gitlab"
    if env.get("CIRCLE_OIDC_TOKEN_V2") or env.get("CIRCLE_OIDC_TOKEN"):
        return "circleci"
    if env.get("GCE_METADATA_HOST"):
        return "gcp"
    raise TokenSourceError(
        "no ID token source found: pass --token-file, or run in GitHub Actions (permissions: "
        "id-token: write), GitLab CI (id_tokens:), CircleCI, or on GCP (--provider gcp)"
    )


def id_token(
    provider: str,
    env: Mapping[str, str],
    *,
    audience: str | None = None,
    token_file: str | None = None,
    gitlab_variable: str = "KUBEPAM_ID_TOKEN",
) -> str:
    """The raw JWT from the chosen source (never logged)."""
    if provider == "auto":
        provider = "file" if token_file else detect(env)
    if provider == "file":
        path = token_file or env.get("KUBEPAM_ID_TOKEN_FILE")
        if not path:
            raise TokenSourceError("--token-file (or KUBEPAM_ID_TOKEN_FILE) is required for provider file")
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise TokenSourceError(f"cannot read token file {path}: {exc.strerror}") from None
    if provider == "github":
        url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            raise TokenSourceError(
                "ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN are not set: give the job `permissions: id-token: write`"
            )
        if audience:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"audience": audience})
        body = _http_get(url, {"Authorization": f"bearer {bearer}", "Accept": "application/json"})
        try:
            value = json.loads(body)["value"]
        except (ValueError, KeyError, TypeError):
            raise TokenSourceError("GitHub's ID token endpoint answered without a value") from None
        return str(value)
    if provider == "gitlab":
        value = env.get(gitlab_variable)
        if not value:
            raise TokenSourceError(
                f"${gitlab_variable} is empty: declare it under id_tokens: in .gitlab-ci.yml "
                "with the connection's audience as aud"
            )
        return value
    if provider == "circleci":
        value = env.get("CIRCLE_OIDC_TOKEN_V2") or env.get("CIRCLE_OIDC_TOKEN")
        if not value:
            raise TokenSourceError(
                "CIRCLE_OIDC_TOKEN_V2 is not set (CircleCI sets it in jobs with a context)"
            )
        return value
    if provider == "gcp":
        if not audience:
            raise TokenSourceError("--audience is required for provider gcp (the connection's audience)")
        host = env.get("GCE_METADATA_HOST", "metadata.google.internal")
        query = urllib.parse.urlencode({"audience": audience, "format": "full"})
        url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/identity?{query}"
        return _http_get(url, {"Metadata-Flavor": "Google"}).decode().strip()
    raise TokenSourceError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
