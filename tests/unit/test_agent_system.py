"""The agent's system actions (kubepam.agent.system) with a fake command runner and every path in a
temporary directory: nothing here touches /etc or creates a user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from kubepam.agent import plan as p
from kubepam.agent.settings import AgentSettings
from kubepam.agent.system import ActionFailed, Result, System


class FakeRunner:
    def __init__(self, fail: dict[str, Result] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail = fail or {}
        self.visudo_saw: list[str] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.commands.append(list(argv))
        if argv[0] == "visudo":
            self.visudo_saw.append(Path(argv[-1]).read_text())
        return self.fail.get(argv[0], Result(0))


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(
        broker="http://127.0.0.1:1",
        token_file=tmp_path / "token",
        namespace="team-a",
        project="p",
        hostname="web-1",
        state_dir=tmp_path / "state",
        sshd_dir=tmp_path / "ssh" / "kubepam",
        sudoers_dir=tmp_path / "sudoers.d",
        auth_log=tmp_path / "auth.log",
        reload_sshd="kill -HUP 4242",
    )


def test_create_account_commands(settings: AgentSettings) -> None:
    runner = FakeRunner()
    system = System(settings, runner)
    system.apply(p.CreateAccount("alice", 60000))
    system.apply(p.CreateAccount("bob", 60001, with_group=False))
    assert runner.commands == [
        ["groupadd", "-g", "60000", "alice"],
        [
            "useradd",
            "-m",
            "-g",
            "alice",
            "-u",
            "60000",
            "-p",
            "*",
            "-c",
            "kubepam-agent",
            "-s",
            "/bin/bash",
            "alice",
        ],
        [
            "useradd",
            "-m",
            "-g",
            "bob",
            "-u",
            "60001",
            "-p",
            "*",
            "-c",
            "kubepam-agent",
            "-s",
            "/bin/bash",
            "bob",
        ],
    ]


def test_a_failing_command_is_an_action_failure(settings: AgentSettings) -> None:
    system = System(settings, FakeRunner({"useradd": Result(9, "useradd: user 'alice' already exists")}))
    with pytest.raises(ActionFailed, match="already exists"):
        system.apply(p.CreateAccount("alice", 60000))


def test_delete_and_end_sessions(settings: AgentSettings) -> None:
    runner = FakeRunner({"pkill": Result(1), "groupdel": Result(6, "group 'alice' does not exist")})
    system = System(settings, runner)
    system.apply(p.WritePrincipals("alice", ("alice",)))
    system.apply(p.EndSessions("alice"))
    system.apply(p.DeleteAccount("alice", 60000))
    assert runner.commands == [
        ["pkill", "-KILL", "-u", "alice"],
        ["pkill", "-KILL", "-u", "alice"],
        ["userdel", "-r", "alice"],
        ["groupdel", "alice"],
    ]
    assert not (settings.principals_dir / "alice").exists()


def test_delete_waits_for_killed_sessions(settings: AgentSettings) -> None:
    results = iter([Result(8, "user alice is currently used by process 7"), Result(0)])

    class Busy(FakeRunner):
        def __call__(self, argv: Sequence[str]) -> Result:
            super().__call__(argv)
            return next(results) if argv[0] == "userdel" else Result(0)

    runner = Busy()
    slept: list[float] = []
    System(settings, runner, sleep=slept.append).apply(p.DeleteAccount("alice", 60000))
    assert [c[0] for c in runner.commands] == ["pkill", "userdel", "pkill", "userdel", "groupdel"]
    assert slept == [0.5]


def test_delete_gives_up_when_processes_survive(settings: AgentSettings) -> None:
    system = System(settings, FakeRunner({"userdel": Result(8)}), sleep=lambda _: None)
    with pytest.raises(ActionFailed, match="survive"):
        system.apply(p.DeleteAccount("alice", 60000))


def test_principals_file_written_atomically_and_removed(settings: AgentSettings) -> None:
    system = System(settings, FakeRunner())
    system.apply(p.WritePrincipals("alice", ("alice", "oncall")))
    path = settings.principals_dir / "alice"
    assert path.read_text() == "alice\noncall\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(x.name for x in settings.principals_dir.iterdir()) == ["alice"]  # no temp file left
    inode = path.stat().st_ino
    system.apply(p.WritePrincipals("alice", ("alice",)))
    assert path.read_text() == "alice\n"
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    system.apply(p.RemovePrincipals("alice"))
    system.apply(p.RemovePrincipals("alice"))  # idempotent
    assert not path.exists()


def test_sudoers_checked_by_visudo_then_installed_0440(settings: AgentSettings) -> None:
    runner = FakeRunner()
    system = System(settings, runner)
    system.apply(p.WriteSudoers("alice"))
    target = settings.sudoers_dir / "kubepam-alice"
    assert target.read_text().endswith("alice ALL=(ALL:ALL) NOPASSWD: ALL\n")
    assert target.stat().st_mode & 0o777 == 0o440
    (visudo,) = [c for c in runner.commands if c[0] == "visudo"]
    assert visudo[:3] == ["visudo", "-c", "-q"] and visudo[3] == "-f"
    checked = Path(visudo[4])
    assert checked.parent == settings.sudoers_dir and "." in checked.name  # sudo's includedir skips it
    assert runner.visudo_saw == [target.read_text()]
    assert [x.name for x in settings.sudoers_dir.iterdir()] == ["kubepam-alice"]
    system.apply(p.RemoveSudoers("alice"))
    assert not target.exists()


def test_sudoers_that_visudo_refuses_is_never_installed(settings: AgentSettings) -> None:
    runner = FakeRunner({"visudo": Result(1, "syntax error near line 2")})
    system = System(settings, runner)
    with pytest.raises(ActionFailed, match="visudo refused"):
        system.apply(p.WriteSudoers("alice"))
    assert list(settings.sudoers_dir.iterdir()) == []  # neither the drop-in nor the temp file


def test_sudoers_refused_keeps_the_previous_drop_in(settings: AgentSettings) -> None:
    System(settings, FakeRunner()).apply(p.WriteSudoers("alice"))
    before = (settings.sudoers_dir / "kubepam-alice").read_text()
    with pytest.raises(ActionFailed):
        System(settings, FakeRunner({"visudo": Result(1)})).apply(p.WriteSudoers("alice"))
    assert (settings.sudoers_dir / "kubepam-alice").read_text() == before


def test_trusted_ca_keys_reload_only_on_change(settings: AgentSettings) -> None:
    runner = FakeRunner()
    system = System(settings, runner)
    keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA kubepam-ca-1\n"
    assert system.write_trusted_ca_keys(keys) is True
    assert settings.trusted_ca_keys.read_text() == keys
    assert runner.commands == [["kill", "-HUP", "4242"]]
    assert system.write_trusted_ca_keys(keys) is False
    assert system.write_trusted_ca_keys("  " + keys.strip() + "\n\n") is False  # the same keys
    assert runner.commands == [["kill", "-HUP", "4242"]]
    assert system.write_trusted_ca_keys(keys + "ssh-ed25519 AAAAB kubepam-ca-2\n") is True
    assert runner.commands == [["kill", "-HUP", "4242"]] * 2
    assert sorted(x.name for x in settings.sshd_dir.iterdir()) == ["trusted_user_ca_keys.pub"]


def test_reload_failure_is_reported_and_retried(settings: AgentSettings) -> None:
    runner = FakeRunner({"kill": Result(1, "no such process")})
    system = System(settings, runner)
    with pytest.raises(ActionFailed, match="no such process"):
        system.write_trusted_ca_keys("ssh-ed25519 AAAA ca\n")
    runner.fail = {}
    assert system.write_trusted_ca_keys("ssh-ed25519 AAAA ca\n") is True  # unchanged, but not yet reloaded
    assert runner.commands == [["kill", "-HUP", "4242"]] * 2
    assert system.write_trusted_ca_keys("ssh-ed25519 AAAA ca\n") is False
