"""PostgreSQL as an account backend (psycopg): set a role's password, grant and revoke role
membership, enable and disable login. Identifiers are quoted by psycopg.sql; passwords are sent as
literals of ALTER ROLE (which takes no bind parameters) and never logged.

Every connection verifies the server (``sslmode=verify-full`` against the CA the Project references)
and accepts only SCRAM-SHA-256 (``require_auth``): libpq refuses a server that asks for a cleartext or
MD5 password before sending anything derived from the admin password."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from kubepam.adapters import fencing


class BackendError(Exception):
    """The backend could not be reached or refused; the message names no secret."""


class ForeignRole(BackendError):
    """A role exists under the JIT account's name but kubepam did not create it for this JitAccount."""


FOREIGN = "KP001"  # SQLSTATE the ownership guard raises


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    database: str
    admin_user: str
    admin_password: str = field(repr=False)
    ca_file: str = ""  # PEM file of the CA that signed the server's certificate (sslrootcert)


def _private_dir() -> Path:
    """A directory only this user can enter, under the system's temporary directory."""
    base = Path(tempfile.gettempdir()) / f"kubepam-pg-ca-{os.getuid()}"
    try:
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
        info = os.lstat(base)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            base = Path(tempfile.mkdtemp(prefix="kubepam-pg-ca-"))  # someone else's: use a fresh one
    except OSError as exc:
        raise BackendError(f"cannot write the CA file for sslrootcert: {exc.strerror}") from None
    return base


def ca_file(pem: bytes) -> str:
    """A private file (mode 0600) holding this CA bundle for libpq's sslrootcert, one per content."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise BackendError("the CA holds no PEM certificate")
    path = _private_dir() / f"{hashlib.sha256(pem).hexdigest()[:32]}.pem"
    try:
        if path.read_bytes() == pem:
            return str(path)
    except OSError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # created 0600
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        Path(tmp).replace(path)
    except OSError as exc:
        raise BackendError(f"cannot write the CA file for sslrootcert: {exc.strerror}") from None
    return str(path)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


async def _run(server: Server, statements: Sequence[sql.Composed], secrets: Sequence[str] = ()) -> None:
    if not server.ca_file:
        raise BackendError(f"postgresql {server.host}:{server.port}: no CA to verify the server with")
    fencing.check()
    try:
        conn = await psycopg.AsyncConnection.connect(
            host=server.host,
            port=server.port,
            dbname=server.database,
            user=server.admin_user,
            password=server.admin_password,
            # Verify the server against the referenced CA and accept SCRAM only (require_auth needs
            # libpq 16; psycopg[binary] bundles a newer one). No GSSAPI: nothing else is negotiated.
            sslmode="verify-full",
            sslrootcert=server.ca_file,
            require_auth="scram-sha-256",
            gssencmode="disable",
            connect_timeout=5,
            autocommit=True,
        )
        async with conn, conn.transaction():  # the ownership guard and what it guards commit together
            for statement in statements:
                await conn.execute(statement)
    except psycopg.Error as exc:
        if getattr(exc, "sqlstate", None) == FOREIGN:
            raise ForeignRole(f"postgresql {server.host}:{server.port}: {str(exc).splitlines()[0]}") from None
        # psycopg messages name hosts and roles, not the statement's literals; the first line only (later
        # ones may quote the statement), and any password scrubbed all the same.
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BackendError(
            _redact(
                f"postgresql {server.host}:{server.port}: {type(exc).__name__}: {first}",
                [server.admin_password, *secrets],
            )
        ) from None


async def set_password(server: Server, role: str, password: str) -> None:
    await _run(
        server,
        [sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))],
        [password],
    )


async def grant(server: Server, role: str, groups: Sequence[str]) -> None:
    await _run(
        server, [sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    )


async def revoke(server: Server, role: str, groups: Sequence[str]) -> None:
    await _run(
        server, [sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    )


def _guard(role: str, owner: str, *, create: bool) -> sql.Composed:
    """A role is kubepam's for one JitAccount when its comment is ``owner``: anything else under that
    name (a DBA's role, another JitAccount's) raises FOREIGN, and nothing after it runs."""
    ids = {"name": sql.Literal(role), "role": sql.Identifier(role), "owner": sql.Literal(owner)}
    missing = (
        sql.SQL("CREATE ROLE {role}; COMMENT ON ROLE {role} IS {owner};").format(**ids)
        if create
        else sql.SQL("NULL;")
    )
    return sql.SQL(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
        "IF coalesce(shobj_description((SELECT oid FROM pg_roles WHERE rolname = {name}), 'pg_authid'), '')"
        " <> {owner} THEN RAISE EXCEPTION USING ERRCODE = {code}, MESSAGE = format("
        "'role %s exists and was not created by kubepam for %s: refusing to adopt, change or drop it',"
        " {name}, {owner}); END IF; ELSE {missing} END IF; END$$"
    ).format(missing=missing, code=sql.Literal(FOREIGN), **ids)


async def ensure_login_role(
    server: Server, role: str, password: str, groups: Sequence[str], valid_until: datetime, owner: str
) -> None:
    """Create (or update, if it is ``owner``'s) a LOGIN role with a password valid until the given time
    and these memberships."""
    create = _guard(role, owner, create=True)
    alter = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(role), sql.Literal(password), sql.Literal(valid_until.isoformat())
    )
    grants = [sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    await _run(server, [create, alter, *grants], [password])


async def disable_login(server: Server, role: str, password: str, owner: str) -> None:
    """NOLOGIN and a fresh random password nobody knows (only on ``owner``'s role)."""
    await _run(
        server,
        [
            _guard(role, owner, create=False),
            sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            ),
        ],
        [password],
    )


async def drop_role(server: Server, role: str, owner: str) -> None:
    await _run(
        server,
        [_guard(role, owner, create=False), sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))],
    )
