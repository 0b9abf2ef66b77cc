"""A real OpenSSH sshd on a loopback port for e2e tests: trusts the CA keys it is given
(TrustedUserCAKeys), maps certificate principals to the local login user with an
AuthorizedPrincipalsFile, and accepts nothing else (no passwords, no authorized_keys)."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from pathlib import Path

from kubepam.dev.cluster import free_port

SSHD = "/usr/sbin/sshd"


CLIENT_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
)


def sshd_config(
    port: int, host_key: Path, pid_file: Path, trusted: Path | str, principals: str, *extra: str
) -> str:
    """An sshd_config for certificate logins only: these CA keys, an AuthorizedPrincipalsFile, no
    passwords, no authorized_keys, no PAM."""
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"TrustedUserCAKeys {trusted}",
        f"AuthorizedPrincipalsFile {principals}",
        "AuthorizedKeysFile none",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        *extra,
        "LogLevel VERBOSE",
        "MaxStartups 100",
    ]
    return "\n".join(lines) + "\n"


def ssh_command(port: int, user: str, key: Path, cert: Path, command: str) -> list[str]:
    """ssh to 127.0.0.1:port as user with this key and certificate, never asking anything."""
    return [
        "ssh",
        "-i",
        str(key),
        "-o",
        f"CertificateFile={cert}",
        "-o",
        "IdentitiesOnly=yes",
        *CLIENT_OPTIONS,
        "-p",
        str(port),
        f"{user}@127.0.0.1",
        command,
    ]


class LocalSSHD:
    def __init__(self, workdir: Path, principals: list[str]) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.trusted = self.dir / "trusted_user_ca_keys"
        self.trusted.write_text("")
        (self.dir / "principals").mkdir(exist_ok=True)
        (self.dir / "principals" / self.user).write_text("\n".join(principals) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def trust(self, ca_keys: str) -> None:
        """sshd reads TrustedUserCAKeys at each authentication: replacing the file takes effect at once."""
        self.trusted.write_text(ca_keys)

    def start(self) -> None:
        host_key = self.dir / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        config = self.dir / "sshd_config"
        config.write_text(
            sshd_config(
                self.port,
                host_key,
                self.dir / "pid",
                self.trusted,
                f"{self.dir / 'principals'}/%u",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.logs()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("sshd did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def logs(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def login(
        self, key: Path, cert: Path, command: str = "echo kubepam-ok"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ssh_command(self.port, self.user, key, cert, command), capture_output=True, text=True, timeout=30
        )


def new_key(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path
