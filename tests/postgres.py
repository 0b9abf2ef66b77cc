"""A real PostgreSQL (Debian's binaries) on a loopback port for e2e tests: initdb into a temporary
directory, TLS only over TCP (a server certificate for 127.0.0.1 and localhost from a test CA, exposed
as ``ca_pem``/``ca_file`` for clients) with SCRAM-SHA-256, started and stopped on demand (to test
outages). PostgreSQL refuses to run as root; as root the server runs as the `postgres` system user."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from kubepam.dev.cluster import free_port
from tests.tls import TestCA


def _bin(name: str) -> str:
    found = sorted(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found (apt-get install postgresql)")
    return found[-1]


class LocalPostgres:
    def __init__(self, workdir: Path | None = None, superuser_password: str = "kubepam-e2e-admin") -> None:
        # As root the server runs as `postgres`, which must be able to reach its directory: pytest's
        # temporary directories are private to root, so use a directory of our own under /tmp.
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="kubepam-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.password = superuser_password
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else getpass.getuser()
        self.ca = TestCA("kubepam e2e PostgreSQL CA")
        self.ca_pem = self.ca.cert_pem.decode()
        self.ca_file = self.dir / "ca.crt"  # what clients verify the server with (sslrootcert)

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else list(cmd)
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(self.dir, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            _bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        server = self.ca.server(("127.0.0.1", "localhost"))
        cert, key = self.dir / "server.crt", self.dir / "server.key"
        cert.write_bytes(server.cert_pem)
        key.write_bytes(server.key_pem)
        key.chmod(0o600)
        self.ca_file.write_bytes(self.ca.cert_pem)
        if self.as_root:
            shutil.chown(cert, "postgres")
            shutil.chown(key, "postgres")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = "
                f"'{self.dir}'\nfsync = off\nlog_connections = on\nssl = on\n"
                f"ssl_cert_file = '{cert}'\nssl_key_file = '{key}'\npassword_encryption = scram-sha-256\n"
            )
        # TCP only over TLS with SCRAM; the Unix socket (in the private directory) stays for pg_ctl.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nlocal replication all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )

    def start(self) -> None:
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls(self) -> dict[str, str]:
        """Connection parameters a careful client uses: the server verified, SCRAM only."""
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_file), "require_auth": "scram-sha-256"}

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
            **self.tls(),
        )

    def sql(self, statement: str) -> None:
        with self.admin() as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def can_login(self, user: str, password: str) -> bool:
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=user,
                password=password,
                dbname="postgres",
                connect_timeout=5,
                **self.tls(),
            ) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def psql_login(self, user: str, password: str) -> bool:
        """The same check with the real psql client, as a person would."""
        env = {
            **os.environ,
            "PGPASSWORD": password,
            "PGCONNECT_TIMEOUT": "5",
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(self.ca_file),
        }
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                "postgres",
                "-tAc",
                "SELECT 1",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        return result.returncode == 0 and result.stdout.strip() == "1"

    def member_of(self, user: str) -> set[str]:
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                (user,),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def wait_down(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.can_login("postgres", self.password):
            time.sleep(0.2)
