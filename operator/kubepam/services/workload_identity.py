"""Token exchange (RFC 8693) and token validation for workload connections.

The broker calls :class:`TokenExchange`; it reads connections and roles from an in-memory
:class:`Directory` (kopf indexes in the operator), verifies the subject token, applies the
connection's claim conditions, matches roles and signs a kubepam access token. Nothing here touches
the Kubernetes API on the request path.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kubepam.adapters import audit
from kubepam.adapters.jwks import KeySet
from kubepam.adapters.jwt_verifier import KeySource, verify_token
from kubepam.domain import oauth
from kubepam.domain.claims import ClaimCondition, all_hold, evaluate_all, lookup_claim
from kubepam.domain.connection import Connection, Phase
from kubepam.domain.oauth import OAuthError
from kubepam.domain.roles import Role, matching_roles, trace_role
from kubepam.domain.text import clip


@dataclass(frozen=True)
class ConnectionEntry:
    """One WorkloadConnection as the broker sees it."""

    namespace: str
    name: str
    phase: Phase
    connection: Connection | None  # None when the spec is invalid
    problems: tuple[str, ...] = ()
    inline_keys: KeySet | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class Directory(Protocol):
    def connection(self, namespace: str, name: str) -> ConnectionEntry | None: ...
    def roles(self, namespace: str) -> Sequence[Role]: ...
    def synced(self) -> bool: ...


class Signer(Protocol):
    def sign(self, claims: Mapping[str, Any]) -> str: ...


@dataclass(frozen=True)
class Exchanged:
    access_token: str
    expires_in: int
    roles: tuple[str, ...]
    subject: str = ""  # the access token's sub and jti (for the audit trail)
    jti: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "issued_token_type": oauth.TOKEN_TYPE_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def parse_exchange_form(form: Mapping[str, str]) -> tuple[str, str, str]:
    """RFC 8693 parameters -> (namespace, name, subject_token), or invalid_request naming the field."""
    grant = form.get("grant_type")
    if not grant:
        raise oauth.invalid_request("grant_type is required", "missing_parameter")
    if grant != oauth.GRANT_TYPE_TOKEN_EXCHANGE:
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type must be {oauth.GRANT_TYPE_TOKEN_EXCHANGE}",
            400,
            "unsupported_grant_type",
        )
    token = form.get("subject_token")
    if not token:
        raise oauth.invalid_request("subject_token is required", "missing_parameter")
    token_type = form.get("subject_token_type")
    if token_type != oauth.TOKEN_TYPE_JWT:
        raise oauth.invalid_request(f"subject_token_type must be {oauth.TOKEN_TYPE_JWT}", "wrong_token_type")
    ref = form.get("connection")
    if not ref:
        raise oauth.invalid_request(
            "connection is required (namespace/name of a WorkloadConnection)", "missing_parameter"
        )
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name or len(ref) > 317:
        raise oauth.invalid_request("connection must be namespace/name", "invalid_request")
    return namespace, name, token


def audit_exchange(form: Mapping[str, str], result: Exchanged | None, refusal: OAuthError | None) -> None:
    """One audit line per token exchange: issued (actor: the access token's sub, correlation: its jti)
    or refused with its reason code (correlation: a fresh request id). Never a token."""
    namespace, _, name = str(form.get("connection") or "").partition("/")
    target = audit.Target("WorkloadConnection", clip(namespace) or None, clip(name) or None)
    if result is not None:
        audit.record(
            audit.Action.TOKEN_ISSUED,
            audit.Outcome.SUCCESS,
            actor=result.subject,
            target=target,
            correlation_id=result.jti,
            details={"roles": list(result.roles), "expiresIn": result.expires_in},
        )
    elif refusal is not None:
        audit.record(
            audit.Action.TOKEN_REFUSED,
            audit.Outcome.DENIED,
            actor="",
            target=target,
            reason=refusal.outcome,
            correlation_id=f"req-{secrets.token_hex(8)}",
            details={"error": refusal.error, "description": refusal.description, "status": refusal.status},
        )


def _source_claims(claims: Mapping[str, Any], conditions: Sequence[ClaimCondition]) -> dict[str, Any]:
    """The source claims worth carrying into the access token: iss, sub and every claim a condition used."""
    out: dict[str, Any] = {k: claims[k] for k in ("iss", "sub") if k in claims}
    for cond in conditions:
        value = lookup_claim(claims, cond.claim)
        if isinstance(value, (str, int, bool, list)) and cond.claim not in out:
            out[cond.claim] = value
    return out


class TokenExchange:
    def __init__(
        self,
        directory: Directory,
        keys: KeySource,
        signer: Signer,
        *,
        issuer: str,
        audience: str,
        clock: Callable[[], datetime],
        record: Callable[[str, str], None],
    ) -> None:
        self._directory = directory
        self._keys = keys
        self._signer = signer
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._record = record

    def _entry(self, namespace: str, name: str) -> ConnectionEntry:
        entry = self._directory.connection(namespace, name)
        if entry is None:
            if not self._directory.synced():
                raise oauth.temporarily_unavailable(
                    "the operator is still loading connections; retry shortly"
                )
            raise oauth.invalid_client(f"no WorkloadConnection {clip(f'{namespace}/{name}')}")
        if entry.connection is None:
            raise oauth.unauthorized_client(
                f"WorkloadConnection {entry.ref} is invalid: {'; '.join(entry.problems)}",
                "connection_invalid",
            )
        return entry

    async def _verify(self, entry: ConnectionEntry, token: str) -> dict[str, Any]:
        assert entry.connection is not None
        return await verify_token(token, entry.connection, entry.inline_keys, self._keys)

    @staticmethod
    def _matching(call: Callable[[], Any]) -> Any:
        """Run claim matching; a claim value the matchers cannot read is the caller's token's fault, so it
        is a 400 invalid_grant with the reason, never a server error (the verifier already refuses the
        known causes: lone surrogates, non-finite numbers, deep nesting)."""
        try:
            return call()
        except (ValueError, TypeError, RecursionError) as exc:
            raise oauth.invalid_grant(
                f"the token's claims cannot be matched ({type(exc).__name__})", "claims_unreadable"
            ) from None

    async def exchange(self, form: Mapping[str, str]) -> Exchanged:
        try:
            result = await self._exchange(form)
        except OAuthError as exc:
            self._record("token", exc.outcome)
            audit_exchange(form, None, exc)
            raise
        self._record("token", "issued")
        audit_exchange(form, result, None)
        return result

    async def _exchange(self, form: Mapping[str, str]) -> Exchanged:
        namespace, name, token = parse_exchange_form(form)
        entry = self._entry(namespace, name)
        conn = entry.connection
        assert conn is not None
        if entry.phase is not Phase.ACTIVE:
            # Verify anyway so a broken token is reported as such, then refuse: Draft issues nothing.
            await self._verify(entry, token)
            raise oauth.unauthorized_client(
                f"WorkloadConnection {entry.ref} is Draft; a security admin must promote it to Active "
                "(POST /v1/token/validate shows what would happen)",
                "connection_draft",
            )
        claims = await self._verify(entry, token)
        if not self._matching(lambda: all_hold(conn.claims, claims)):
            _, trace = self._matching(lambda: evaluate_all(conn.claims, claims))
            failed = next(r for r in trace if not r.matched)
            raise oauth.invalid_grant(
                f"token does not meet the connection's conditions: {clip(failed.claim)} {failed.operator} "
                f"{clip(failed.expected)} ({failed.reason})",
                "claims_mismatch",
            )
        roles: list[Role] = self._matching(
            lambda: matching_roles(self._directory.roles(namespace), namespace, name, claims)
        )
        if not roles:
            raise oauth.access_denied(f"no WorkloadRole in {namespace} matches this token", "no_role")
        now = self._clock()
        ttl = int(conn.access_token_ttl.total_seconds())
        iat = int(now.timestamp())
        used = [c for role in roles for block in role.blocks for c in block]
        access = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": f"workload:{entry.ref}:{claims.get('sub', '')}",
            "iat": iat,
            "nbf": iat,
            "exp": iat + ttl,
            "jti": secrets.token_hex(16),
            "connection": entry.ref,
            "roles": [r.ref for r in roles],
            "usernames": sorted({r.username for r in roles}),
            "src": _source_claims(claims, [*conn.claims, *used]),
        }
        sub, jti = str(access["sub"]), str(access["jti"])
        return Exchanged(self._signer.sign(access), ttl, tuple(r.ref for r in roles), sub, jti)

    async def validate(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Dry run for Draft or Active connections: verdict, claim-by-claim trace, roles that would match."""
        namespace, name, token = parse_exchange_form(form)
        entry = self._entry(namespace, name)
        conn = entry.connection
        assert conn is not None
        report: dict[str, Any] = {"connection": entry.ref, "phase": entry.phase.value}
        try:
            claims = await self._verify(entry, token)
        except OAuthError as exc:
            if exc.status >= 500:
                raise
            self._record("validate", exc.outcome)
            report.update(
                verdict="invalid",
                stage="signature",
                error=exc.body(),
                trace=[],
                roles=[],
                matchedRoles=[],
                wouldIssue=False,
            )
            return report
        try:
            ok, trace = self._matching(lambda: evaluate_all(conn.claims, claims))
            active = entry.phase is Phase.ACTIVE
            role_traces = self._matching(
                lambda: [
                    trace_role(r, namespace, name, active, claims) for r in self._directory.roles(namespace)
                ]
            )
        except OAuthError as exc:
            self._record("validate", exc.outcome)
            raise
        candidates = [
            t.role
            for t in role_traces
            if t.matched_block is not None and t.reason != ("role does not accept this connection")
        ]
        matched = [t.role for t in role_traces if t.matched] if ok else []
        verdict = "valid" if ok else "invalid"
        self._record("validate", "valid" if ok else "claims_mismatch")
        report.update(
            verdict=verdict,
            stage="claims" if not ok else "roles",
            trace=[r.to_dict() for r in trace],
            roles=[t.to_dict() for t in role_traces],
            matchedRoles=matched,
            wouldMatchWhenActive=candidates if ok else [],
            wouldIssue=ok and active and bool(matched),
        )
        if ok and not active:
            report["note"] = (
                "connection is Draft: tokens are validated but nothing is issued and no role matches"
            )
        return report


class VerificationKeys(Protocol):
    def verification_key(self, kid: str) -> Any: ...


class AccessTokenVerifier:
    """Checks kubepam's own access tokens (Bearer on the broker's workload endpoints)."""

    def __init__(self, keys: VerificationKeys, *, issuer: str, audience: str, directory: Directory) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._directory = directory

    def verify(self, authorization: str | None) -> dict[str, Any]:
        import jwt

        from kubepam.domain import token_rules

        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise oauth.invalid_token(
                "send the kubepam access token as Authorization: Bearer <token>", "no_token"
            )
        try:
            token_rules.check_shape(token)
            alg, kid = token_rules.check_header(token_rules.peek_header(token))
        except OAuthError as exc:
            raise oauth.invalid_token(exc.description, exc.outcome) from None
        key = self._keys.verification_key(kid or "")
        if alg != "EdDSA" or key is None:
            raise oauth.invalid_token("not a kubepam access token (unknown key or algorithm)", "kid_unknown")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=token_rules.LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise oauth.invalid_token("the access token has expired; log in again", "expired") from None
        except jwt.InvalidTokenError as exc:
            raise oauth.invalid_token(
                f"the access token is invalid ({type(exc).__name__})", "invalid"
            ) from None
        namespace, _, name = str(claims.get("connection", "")).partition("/")
        entry = self._directory.connection(namespace, name)
        if entry is None or entry.phase is not Phase.ACTIVE:
            raise oauth.invalid_token(
                f"WorkloadConnection {clip(claims.get('connection'))} is no longer Active",
                "connection_inactive",
            )
        return claims


def token_role(claims: Mapping[str, Any], asked: object) -> tuple[str, str]:
    """(namespace, role) of the WorkloadRole a broker request names (``name`` or ``namespace/name``),
    which must be one of the verified access token's ``roles``; refusals are RFC 6749 errors."""
    if not isinstance(asked, str) or not asked:
        raise oauth.invalid_request("role is required (a WorkloadRole named in the access token)")
    roles = [r for r in claims.get("roles") or [] if isinstance(r, str)]
    matches = [r for r in roles if r == asked or r.split("/", 1)[-1] == asked]
    if not matches:
        raise oauth.access_denied(
            f"the access token does not carry role {clip(asked)} (it has: {clip(', '.join(roles))})",
            "role_not_in_token",
        )
    if len(matches) > 1:
        raise oauth.invalid_request(f"role {clip(asked)} is ambiguous; use namespace/role")
    namespace, role = matches[0].split("/", 1)
    return namespace, role
