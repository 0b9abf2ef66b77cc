"""PostgreSQL as an account backend (psycopg): set a role's password, grant and revoke role
membership, enable and disable login. Identifiers are quoted by psycopg.sql; passwords are sent as
literals of ALTER ROLE (which takes no bind parameters) and never logged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql


class BackendError(Exception):
    """The backend could not be reached or refused; the message names no secret."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    database: str
    admin_user: str
    admin_password: str


async def _run(server: Server, statements: Sequence[sql.Composed]) -> None:
    try:
        async with await psycopg.AsyncConnection.connect(
            host=server.host,
            port=server.port,
            dbname=server.database,
            user=server.admin_user,
            password=server.admin_password,
            connect_timeout=5,
            autocommit=True,
        ) as conn:
            for statement in statements:
                await conn.execute(statement)
    except psycopg.Error as exc:
        # psycopg messages name hosts and roles, never the statement's literals.
        raise BackendError(
            f"postgresql {server.host}:{server.port}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


async def set_password(server: Server, role: str, password: str) -> None:
    await _run(
        server,
        [sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))],
    )


async def grant(server: Server, role: str, groups: Sequence[str]) -> None:
    await _run(
        server, [sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    )


async def revoke(server: Server, role: str, groups: Sequence[str]) -> None:
    await _run(
        server, [sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    )


async def ensure_login_role(
    server: Server, role: str, password: str, groups: Sequence[str], valid_until: datetime
) -> None:
    """Create or update a LOGIN role with a password valid until the given time and these memberships."""
    create = sql.SQL(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
        "CREATE ROLE {role}; END IF; END$$"
    ).format(name=sql.Literal(role), role=sql.Identifier(role))
    alter = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(role), sql.Literal(password), sql.Literal(valid_until.isoformat())
    )
    grants = [sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(role)) for g in groups]
    await _run(server, [create, alter, *grants])


async def disable_login(server: Server, role: str, password: str) -> None:
    """NOLOGIN and a fresh random password nobody knows."""
    await _run(
        server,
        [
            sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        ],
    )


async def drop_role(server: Server, role: str) -> None:
    await _run(server, [sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))])
