"""`kubepam agent`'s command line: options and their KUBEPAM_AGENT_* environment defaults -> AgentSettings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubepam import cli
from kubepam.agent.settings import AgentSettings

BASE = [
    "agent",
    "--broker",
    "https://b.example",
    "--token-file",
    "/t",
    "--namespace",
    "team-a",
    "--project",
    "web",
]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[AgentSettings]:
    got: list[AgentSettings] = []

    async def fake_main(settings: AgentSettings, system: Any = None) -> int:
        got.append(settings)
        return 0

    monkeypatch.setattr("kubepam.agent.main.main", fake_main)
    for name in (
        "KUBEPAM_BROKER",
        "KUBEPAM_AGENT_BROKER",
        "KUBEPAM_AGENT_PREFIX",
        "KUBEPAM_AGENT_RELOAD_SSHD",
    ):
        monkeypatch.delenv(name, raising=False)
    return got


def test_defaults(captured: list[AgentSettings]) -> None:
    assert cli.main([*BASE, "--hostname", "web-1"]) == 0
    (s,) = captured
    assert s.broker == "https://b.example" and s.token_file == Path("/t")
    assert (s.namespace, s.project, s.hostname) == ("team-a", "web", "web-1")
    assert s.state_dir == Path("/var/lib/kubepam-agent") and s.prefix == ""
    assert (s.uid_min, s.uid_max) == (60000, 60999)
    assert s.sshd_dir == Path("/etc/ssh/kubepam") and s.sudoers_dir == Path("/etc/sudoers.d")
    assert s.auth_log == Path("/var/log/auth.log") and s.reload_sshd == "systemctl reload ssh"
    assert s.grace == timedelta(minutes=10) and s.once is False
    assert s.trusted_ca_keys == Path("/etc/ssh/kubepam/trusted_user_ca_keys.pub")


def test_options_and_environment(captured: list[AgentSettings], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEPAM_AGENT_RELOAD_SSHD", "systemctl reload sshd")
    monkeypatch.setenv("KUBEPAM_AGENT_PREFIX", "kp_")
    argv = [*BASE, "--label", "role=web", "--label", "zone=a", "--uid-min", "70000", "--uid-max", "70010"]
    assert cli.main([*argv, "--grace", "1h", "--once", "--reload-sshd", "kill -HUP 1"]) == 0
    (s,) = captured
    assert s.labels == {"role": "web", "zone": "a"}
    assert (s.uid_min, s.uid_max, s.grace, s.once) == (70000, 70010, timedelta(hours=1), True)
    assert s.reload_sshd == "kill -HUP 1"  # the option wins over the environment
    assert s.prefix == "kp_"
    assert s.hostname  # this host's name


@pytest.mark.parametrize(
    "extra",
    [["--uid-min", "10"], ["--uid-min", "61000", "--uid-max", "60000"], ["--grace", "forever"]],
)
def test_bad_settings_exit_2(captured: list[AgentSettings], extra: list[str], capsys: Any) -> None:
    assert cli.main([*BASE, *extra]) == 2
    assert "kubepam agent:" in capsys.readouterr().err
    assert captured == []


def test_required_options(captured: list[AgentSettings]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["agent", "--token-file", "/t", "--namespace", "a", "--project", "p"])
    with pytest.raises(SystemExit):
        cli.main([*BASE, "--label", "novalue"])
