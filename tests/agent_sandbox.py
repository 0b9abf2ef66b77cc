"""A sandboxed server for the agent's e2e tests: a private mount namespace (``unshare --mount``) in
which /etc is a copy, and /home and /run are empty tmpfs, so the agent's useradd, sudoers drop-ins and
sshd files change only the sandbox; the network is shared, so the sandbox's sshd listens on a loopback
port the test's ssh client reaches and the agent reaches the broker on 127.0.0.1.

Everything runs as root (the agent manages accounts); the sandbox ends with its holder process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from kubepam.dev.cluster import free_port
from tests.sshd import ssh_command, sshd_config

SSHD = "/usr/sbin/sshd"

_SETUP = """#!/bin/bash
set -euo pipefail
SB=$1
mount --make-rprivate /
mkdir -p "$SB/etc"
cp -a /etc/. "$SB/etc/"
mount --bind "$SB/etc" /etc
mount -t tmpfs -o mode=0755 tmpfs /home
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /etc/ssh/kubepam/principals
echo ready > "$SB/ready"
exec sleep infinity
"""


def available() -> str:
    """Why the sandbox cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "the agent sandbox needs root (useradd in a private mount namespace)"
    for tool in ("unshare", "nsenter", "useradd", "visudo", "sudo"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (hack/deps.sh installs it)"
    return ""


class Sandbox:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.auth_log = self.dir / "auth.log"
        self.holder: subprocess.Popen[bytes] | None = None
        self.sshd: subprocess.Popen[bytes] | None = None

    # ----- the namespace ---------------------------------------------------------------------------
    def start(self) -> None:
        setup = self.dir / "setup.sh"
        setup.write_text(_SETUP)
        setup.chmod(0o755)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", str(setup), str(self.dir / "root")],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "setup.log").open("ab"),
        )
        deadline = time.monotonic() + 30
        while not (self.dir / "root" / "ready").exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start: {(self.dir / 'setup.log').read_text()}")
            time.sleep(0.05)

    def command(self, *argv: str) -> list[str]:
        """argv run inside the sandbox's mount namespace."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=60, check=check)

    def read(self, path: str) -> str:
        done = self.run("cat", path, check=False)
        return done.stdout if done.returncode == 0 else ""

    def popen(self, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        try:
            return subprocess.Popen(self.command(*argv), stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    # ----- sshd ------------------------------------------------------------------------------------
    def start_sshd(self) -> None:
        host_key = self.dir / "host_ed25519"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        config = self.dir / "sshd_config"
        config.write_text(
            sshd_config(
                self.port,
                host_key,
                self.dir / "sshd.pid",
                "/etc/ssh/kubepam/trusted_user_ca_keys.pub",
                "/etc/ssh/kubepam/principals/%u",
                "PermitRootLogin no",
            )
        )
        self.run("touch", "/etc/ssh/kubepam/trusted_user_ca_keys.pub")
        self.sshd = subprocess.Popen(
            self.command(SSHD, "-D", "-E", str(self.auth_log), "-f", str(config)),
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "sshd.stderr").open("ab"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.stderr').read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("sshd did not listen")

    def reload_command(self) -> str:
        """What the agent runs after the trusted CA keys change (sshd reads them per login anyway): a
        script, since the agent runs its command without a shell."""
        script = self.dir / "reload-sshd"
        script.write_text(f'#!/bin/sh\nexec kill -HUP "$(cat {self.dir / "sshd.pid"})"\n')
        script.chmod(0o755)
        return str(script)

    def login_command(self, user: str, key: Path, cert: Path, command: str) -> list[str]:
        return ssh_command(self.port, user, key, cert, command)

    def login(
        self, user: str, key: Path, cert: Path, command: str = "echo kubepam-ok"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.login_command(user, key, cert, command), capture_output=True, text=True, timeout=30
        )

    def stop(self) -> None:
        for proc in (self.sshd, self.holder):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.sshd = self.holder = None
