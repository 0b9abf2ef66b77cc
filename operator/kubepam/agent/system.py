"""Carries out the plan's actions on this server, every command through an injectable runner (tests
record the commands instead of running them):

- accounts: `groupadd -g <uid> <name>`, `useradd -m -g <name> -u <uid> -p '*' -c kubepam-agent -s /bin/bash
  <name>`, and after the grace period `userdel -r <name>` then `groupdel <name>`;
- sessions end with `pkill -KILL -u <name>`;
- sudo: a drop-in `<sudoers-dir>/kubepam-<name>` written to a temp file, checked with `visudo -c -f`,
  and only then renamed into place with mode 0440 (a file visudo refuses is never installed);
- sshd: `<sshd-dir>/principals/<name>` (AuthorizedPrincipalsFile) and
  `<sshd-dir>/trusted_user_ca_keys.pub` (TrustedUserCAKeys), written atomically; the reload command
  runs only when the CA keys changed (sshd re-reads principals files at each login by itself).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubepam.agent import plan as p
from kubepam.agent.files import read_text, temp_path, write_atomic
from kubepam.agent.settings import AgentSettings

log = logging.getLogger("kubepam.agent.system")

COMMENT = "kubepam-agent"


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str = ""


Runner = Callable[[Sequence[str]], Result]


def run_command(argv: Sequence[str]) -> Result:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Result(127, str(exc))
    return Result(done.returncode, (done.stdout + done.stderr).strip())


def read_local() -> p.Local:
    return p.Local(
        users={u.pw_name: u.pw_uid for u in pwd.getpwall()},
        groups={g.gr_name: g.gr_gid for g in grp.getgrall()},
    )


class ActionFailed(Exception):
    pass


class System:
    def __init__(
        self,
        settings: AgentSettings,
        runner: Runner = run_command,
        local: Callable[[], p.Local] = read_local,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.read_local = local
        self.sleep = sleep
        self._reload_pending = False  # the last reload failed: run it again even if nothing changed

    def _run(self, *argv: str, ok: Sequence[int] = (0,)) -> Result:
        result = self.runner(argv)
        if result.returncode not in ok:
            raise ActionFailed(f"{shlex.join(argv)}: exit {result.returncode}: {result.output[:500]}")
        return result

    def sudoers_path(self, name: str) -> Path:
        return self.settings.sudoers_dir / f"kubepam-{name}"

    def principals_path(self, name: str) -> Path:
        return self.settings.principals_dir / name

    def apply(self, action: p.Action) -> None:
        match action:
            case p.CreateAccount(name, uid, with_group):
                if with_group:
                    self._run("groupadd", "-g", str(uid), name)
                # -p '*': no password can match, yet the account is not "locked" ('!'), which sshd
                # refuses outright when it runs without PAM; logins are by certificate only.
                self._run(
                    "useradd",
                    "-m",
                    "-g",
                    name,
                    "-u",
                    str(uid),
                    "-p",
                    "*",
                    "-c",
                    COMMENT,
                    "-s",
                    "/bin/bash",
                    name,
                )
            case p.WritePrincipals(name, principals):
                self.settings.principals_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
                write_atomic(self.principals_path(name), "".join(f"{x}\n" for x in principals), mode=0o644)
            case p.RemovePrincipals(name):
                with contextlib.suppress(FileNotFoundError):
                    self.principals_path(name).unlink()
            case p.WriteSudoers(name):
                self.write_sudoers(name)
            case p.RemoveSudoers(name):
                with contextlib.suppress(FileNotFoundError):
                    self.sudoers_path(name).unlink()
            case p.EndSessions(name):
                self._run("pkill", "-KILL", "-u", name, ok=(0, 1))  # 1: no process matched
            case p.DeleteAccount(name, _uid):
                for attempt in range(3):
                    self._run("pkill", "-KILL", "-u", name, ok=(0, 1))
                    # 6: no such user, 12: no home to remove; 8: still logged in (the kill is not done yet)
                    if self._run("userdel", "-r", name, ok=(0, 6, 8, 12)).returncode != 8:
                        break
                    if attempt == 2:
                        raise ActionFailed(f"userdel {name}: processes of the user survive pkill")
                    self.sleep(0.5)
                self._run("groupdel", name, ok=(0, 6))  # 6: userdel already removed the user's group
                for path in (self.principals_path(name), self.sudoers_path(name)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def write_sudoers(self, name: str) -> None:
        target = self.sudoers_path(name)
        self.settings.sudoers_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = temp_path(target)
        # the account has no password (it logs in with a certificate), so sudo cannot ask for one
        body = f"# managed by kubepam-agent\n{name} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o440)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o440)
            checked = self.runner(("visudo", "-c", "-q", "-f", str(tmp)))
            if checked.returncode != 0:
                raise ActionFailed(f"visudo refused the sudoers drop-in for {name}: {checked.output[:300]}")
            tmp.replace(target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def write_trusted_ca_keys(self, keys: str) -> bool:
        """Install the CA keys sshd trusts; reload sshd when they changed. True when they changed."""
        text = "".join(f"{line.strip()}\n" for line in keys.splitlines() if line.strip())
        path = self.settings.trusted_ca_keys
        changed = read_text(path) != text
        if not changed and not self._reload_pending:
            return False
        if changed:
            self.settings.sshd_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomic(path, text, mode=0o644)
        self._reload_pending = True
        self._run(*shlex.split(self.settings.reload_sshd))
        self._reload_pending = False
        return True
