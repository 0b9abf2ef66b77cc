"""The agent's settings: one frozen dataclass, filled from the `kubepam agent` command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path


@dataclass(frozen=True)
class AgentSettings:
    broker: str
    token_file: Path
    namespace: str
    project: str
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)
    state_dir: Path = Path("/var/lib/kubepam-agent")
    prefix: str = ""
    uid_min: int = 60000
    uid_max: int = 60999
    sshd_dir: Path = Path("/etc/ssh/kubepam")
    sudoers_dir: Path = Path("/etc/sudoers.d")
    auth_log: Path = Path("/var/log/auth.log")
    reload_sshd: str = "systemctl reload ssh"
    grace: timedelta = timedelta(minutes=10)
    once: bool = False
    wait_seconds: int = 30  # the access long poll's ?wait=
    batch_events: int = 100  # at most this many events per POST (the protocol's bound)
    batch_seconds: float = 2.0  # ... or whatever came within this long
    poll_seconds: float = 0.5  # how often the auth log is read
    spool_files: int = 1000
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        if not self.broker.startswith(("https://", "http://")):
            raise ValueError(f"--broker must be an http(s) URL, got {self.broker!r}")
        if not 0 < self.uid_min <= self.uid_max:
            raise ValueError(f"the UID range {self.uid_min}-{self.uid_max} is empty")
        if self.uid_min < 1000:
            raise ValueError("--uid-min must be at least 1000 (system accounts live below)")
        if not 0 <= self.wait_seconds <= 55:
            raise ValueError("wait_seconds must be within 0..55")

    @property
    def principals_dir(self) -> Path:
        return self.sshd_dir / "principals"

    @property
    def trusted_ca_keys(self) -> Path:
        return self.sshd_dir / "trusted_user_ca_keys.pub"
