"""PostgreSQL backends, short of a real server: an admin Secret is used only for the host:port it is
pinned to, with the CA the Project references, and no BackendError message ever contains a password
(neither the admin's nor the one being set). Against a rogue server on loopback, the adapter refuses
cleartext and MD5 password requests and unverified certificates before sending any password."""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kubepam.adapters import postgres
from kubepam.adapters.kube import SecretData
from kubepam.domain.backends import ALLOWED_HOSTS_ANNOTATION
from kubepam.services.accounts import Account, Accounts
from tests.handlers.fakes import Clock, FakeSecrets
from tests.rogue_postgres import AUTH_CLEARTEXT, AUTH_MD5, RoguePostgres
from tests.tls import TestCA

NS = "team"
ADMIN_PASSWORD = "the-admin-password-Zq9"
ROLE_PASSWORD = "the-role-password-Xk4"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class World:
    def __init__(self, annotations: dict[str, str] | None, ca_pem: bytes | None = None) -> None:
        self.secrets, self.configmaps = FakeSecrets(), FakeSecrets()
        self.secrets.items[(NS, "pg-admin")] = SecretData(
            {"username": b"postgres", "password": ADMIN_PASSWORD.encode()}, "1", {}, annotations or {}
        )
        if ca_pem is not None:
            self.configmaps.items[(NS, "pg-ca")] = SecretData({"ca.crt": ca_pem}, "1")
        self.accounts = Accounts(self.secrets, Clock(), self.configmaps)  # type: ignore[arg-type]


def settings(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "adminSecretRef": {"name": "pg-admin"},
        "caConfigMapRef": {"name": "pg-ca"},
        **extra,
    }


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection attempt, recorded and failed."""
    attempts: list[Any] = []

    async def connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append(kwargs)
        raise psycopg.OperationalError("no connections in this test")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    return attempts


def private_file(name: str) -> bytes:
    """The file's content, once it is known to be the user's alone (0600 in a 0700 directory)."""
    path = Path(name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    return path.read_bytes()


def assert_clean(message: str) -> None:
    assert ADMIN_PASSWORD not in message and ROLE_PASSWORD not in message


@pytest.mark.parametrize(
    ("annotations", "port", "expected"),
    [
        (None, 5432, f"has no annotation {ALLOWED_HOSTS_ANNOTATION}"),
        ({ALLOWED_HOSTS_ANNOTATION: "127.0.0.1:5432"}, 6543, "host 127.0.0.1:6543 is not allowed"),
        ({ALLOWED_HOSTS_ANNOTATION: "db.internal:5432"}, 5432, "host 127.0.0.1:5432 is not allowed"),
    ],
)
async def test_an_unpinned_host_is_refused_before_any_connection(
    no_connections: list[Any], annotations: dict[str, str] | None, port: int, expected: str
) -> None:
    w = World(annotations, TestCA().cert_pem)
    account = Account(NS, "p", "app", "postgresql", 32, settings(port), "uid")
    with pytest.raises(postgres.BackendError) as caught:
        await w.accounts.rotate(account)
    message = str(caught.value)
    assert expected in message and f"{NS}/pg-admin" in message and ALLOWED_HOSTS_ANNOTATION in message
    assert_clean(message)
    assert no_connections == []


@pytest.mark.parametrize(
    ("configmap", "ref", "expected"),
    [
        (None, {"name": "pg-ca"}, f"CA ConfigMap {NS}/pg-ca (postgresql.caConfigMapRef) is missing"),
        (b"pem", {"name": "pg-ca", "key": "other.crt"}, "has no key other.crt"),
        (b"not a certificate", {"name": "pg-ca"}, "holds no PEM certificate"),
        (None, None, "postgresql.caConfigMapRef is required"),
    ],
)
async def test_a_missing_ca_is_refused_before_any_connection(
    no_connections: list[Any], configmap: bytes | None, ref: dict[str, str] | None, expected: str
) -> None:
    w = World({ALLOWED_HOSTS_ANNOTATION: "127.0.0.1:5432"}, configmap)
    with pytest.raises(postgres.BackendError, match=re.escape(expected)) as caught:
        await w.accounts.server(NS, settings(5432, caConfigMapRef=ref))
    assert_clean(str(caught.value))
    assert no_connections == []


async def test_an_allowed_host_is_reached_with_verify_full_and_scram_only(no_connections: list[Any]) -> None:
    ca = TestCA()
    w = World({ALLOWED_HOSTS_ANNOTATION: "127.0.0.1:5432"}, ca.cert_pem)
    server = await w.accounts.server(NS, settings(5432))
    assert ADMIN_PASSWORD not in repr(server)
    assert private_file(server.ca_file) == ca.cert_pem
    assert (await w.accounts.server(NS, settings(5432))).ca_file == server.ca_file  # one file per CA
    with pytest.raises(postgres.BackendError) as caught:
        await postgres.set_password(server, "app", ROLE_PASSWORD)
    assert_clean(str(caught.value))
    (params,) = no_connections
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == server.ca_file
    assert params["require_auth"] == "scram-sha-256"


async def test_connection_errors_never_contain_a_password(tmp_path: Any) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(TestCA().cert_pem)
    server = postgres.Server("127.0.0.1", closed_port(), "postgres", "postgres", ADMIN_PASSWORD, str(ca))
    for action in (
        postgres.set_password(server, "app", ROLE_PASSWORD),
        postgres.disable_login(server, "app", ROLE_PASSWORD, "kubepam jitaccount ns/app uid u"),
    ):
        with pytest.raises(postgres.BackendError) as caught:
            await action
        assert "127.0.0.1" in str(caught.value)
        assert_clean(str(caught.value))


def test_a_server_error_quoting_a_password_is_redacted() -> None:
    assert postgres._redact(f"ERROR: near '{ROLE_PASSWORD}'", [ROLE_PASSWORD]) == "ERROR: near '[redacted]'"


@pytest.mark.parametrize("auth", [AUTH_CLEARTEXT, AUTH_MD5])
async def test_a_server_asking_for_cleartext_or_md5_gets_no_password(auth: int, tmp_path: Any) -> None:
    ca = TestCA()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    with RoguePostgres(tls=ca.server(), auth=auth) as rogue:
        server = postgres.Server(
            "127.0.0.1", rogue.port, "postgres", "postgres", ADMIN_PASSWORD, str(tmp_path / "ca.crt")
        )
        with pytest.raises(postgres.BackendError) as caught:
            await postgres.set_password(server, "app", ROLE_PASSWORD)
    assert rogue.seen.handshakes == 1 and rogue.seen.startups == 1  # it got as far as authentication
    assert rogue.seen.passwords == []
    assert 'authentication method requirement "scram-sha-256" failed' in str(caught.value)
    assert_clean(str(caught.value))


async def test_a_certificate_from_another_ca_is_refused_before_the_startup(tmp_path: Any) -> None:
    (tmp_path / "ca.crt").write_bytes(TestCA().cert_pem)
    with RoguePostgres(tls=TestCA("someone else's CA").server()) as rogue:
        server = postgres.Server(
            "127.0.0.1", rogue.port, "postgres", "postgres", ADMIN_PASSWORD, str(tmp_path / "ca.crt")
        )
        with pytest.raises(postgres.BackendError, match="certificate verify failed") as caught:
            await postgres.set_password(server, "app", ROLE_PASSWORD)
    assert rogue.seen.ssl_requests == 1 and rogue.seen.handshakes == 0 and rogue.seen.handshake_errors
    assert rogue.seen.startups == 0 and rogue.seen.passwords == []
    assert_clean(str(caught.value))


async def test_a_server_without_tls_gets_nothing(tmp_path: Any) -> None:
    (tmp_path / "ca.crt").write_bytes(TestCA().cert_pem)
    with RoguePostgres(tls=None) as rogue:
        server = postgres.Server(
            "127.0.0.1", rogue.port, "postgres", "postgres", ADMIN_PASSWORD, str(tmp_path / "ca.crt")
        )
        with pytest.raises(postgres.BackendError):
            await postgres.set_password(server, "app", ROLE_PASSWORD)
    assert rogue.seen.ssl_requests == 1 and rogue.seen.startups == 0 and rogue.seen.passwords == []


async def test_a_server_with_no_ca_is_not_contacted(no_connections: list[Any]) -> None:
    server = postgres.Server("127.0.0.1", 5432, "postgres", "postgres", ADMIN_PASSWORD)
    with pytest.raises(postgres.BackendError, match="no CA"):
        await postgres.set_password(server, "app", ROLE_PASSWORD)
    assert no_connections == []
