"""The server agent on the real control plane with a real sshd, confined to a sandbox (a private mount
namespace with its own /etc, /home and /run: tests/agent_sandbox.py): the agent enrolls with the
project's token, creates the local accounts the AccessPolicies give this server, a person logs in with a
kubepam certificate to the account it created, a sudo rule's drop-in passes `visudo -c` and `sudo -n
true` works, the login becomes an Event on the Server naming the person, a CA rotation is trusted
without a restart, removing the rule ends the login at once and the account after the grace period, and
this machine's /etc/passwd never changes."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from tests.agent_sandbox import Sandbox, available
from tests.e2e.harness import OperatorProcess, apply, kubectl_json, kubepam_object, team_namespace
from tests.sshd import new_key

NS = "fleet"
SERVER = "web-7"
CLI = "import sys; from kubepam.cli import main; sys.exit(main(sys.argv[1:]))"

pytestmark = pytest.mark.skipif(bool(available()), reason=available() or "ok")


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, NS)


def eventually(what: str, check: Callable[[], Any], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def passwd_digest() -> str:
    return hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fleet(
    plane: ControlPlane, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sandbox, Path]]:
    host_passwd = passwd_digest()
    team_namespace(plane, NS)
    apply(
        plane,
        "devops",
        obj("Project", "web", {"certificateAuthority": {"rotation": {"generation": 0, "overlap": "30s"}}}),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"users": ["alice"]},
                "rules": [
                    {"name": "login", "projects": ["web"], "servers": {"matchLabels": {"role": "web"}}}
                ],
            },
        ),
        obj(
            "AccessPolicy",
            "admins",
            {
                "principals": {"users": ["bob"]},
                "rules": [
                    {
                        "name": "root",
                        "projects": ["web"],
                        "servers": {"matchLabels": {"role": "web"}},
                        "sshCertificate": {"sudo": True},
                    }
                ],
            },
        ),
    )
    secret_name = eventually(
        "the enrollment token",
        lambda: (
            (kubectl_json(plane, "admin", "get", "project", "web", "-n", NS).get("status") or {}).get(
                "enrollment"
            )
            or {}
        ).get("secretName"),
    )
    token = base64.b64decode(
        kubectl_json(plane, "admin", "get", "secret", secret_name, "-n", NS)["data"]["token"]
    ).decode()
    work = tmp_path_factory.mktemp("agent")
    (work / "token").write_text(token)
    (work / "token").chmod(0o600)
    sandbox = Sandbox(work / "sandbox")
    sandbox.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        sandbox.start_sshd()
        agent = sandbox.popen(
            sys.executable,
            "-c",
            CLI,
            "agent",
            "--broker",
            operator.url,
            "--token-file",
            str(work / "token"),
            "--namespace",
            NS,
            "--project",
            "web",
            "--hostname",
            SERVER,
            "--label",
            "role=web",
            "--state-dir",
            str(work / "state"),
            "--auth-log",
            str(sandbox.auth_log),
            "--reload-sshd",
            sandbox.reload_command(),
            "--grace",
            "5s",
            log=work / "agent.log",
        )
        yield sandbox, work
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        sandbox.stop()
        log = (work / "agent.log").read_text(errors="replace")
        print(log[-4000:])
        assert passwd_digest() == host_passwd, "the agent changed this machine's accounts"
        assert "ERROR" not in log, "the agent reported a failure (see its log above)"


def certificate(plane: ControlPlane, who: str, name: str, key: Path) -> Path:
    apply(
        plane,
        who,
        obj(
            "SSHCertificateRequest",
            name,
            {
                "project": "web",
                "server": SERVER,
                "publicKey": key.with_suffix(".pub").read_text().strip(),
                "requester": who,
                "ttl": "10m",
            },
        ),
    )
    status = eventually(
        f"certificate {name}",
        lambda: (
            s
            if (
                s := kubectl_json(plane, who, "get", "sshcertificaterequest", name, "-n", NS).get("status")
                or {}
            ).get("phase")
            in ("Issued", "Denied")
            else None
        ),
    )
    assert status["phase"] == "Issued", status
    cert = key.parent / f"{name}-cert.pub"
    cert.write_text(status["certificate"] + "\n")
    return cert


def agent_server(plane: ControlPlane) -> dict[str, Any] | None:
    """The enrolled Server once its agent has reported (None before it exists or reports)."""
    done = plane.kubectl("admin", "get", "server", SERVER, "-n", NS, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    server: dict[str, Any] = json.loads(done.stdout)
    return server if ((server.get("status") or {}).get("agent") or {}).get("lastSeen") else None


def local_user(sandbox: Sandbox, name: str) -> bool:
    return sandbox.run("getent", "passwd", name, check=False).returncode == 0


def test_the_agent_enrolls_and_creates_the_accounts_the_policies_give(
    plane: ControlPlane, fleet: tuple[Sandbox, Path]
) -> None:
    sandbox, work = fleet
    server = eventually("the Server's agent status", lambda: agent_server(plane))
    assert server["metadata"]["labels"]["role"] == "web"
    assert server["status"]["agent"]["keyFingerprint"]
    eventually(
        "alice and bob in the sandbox", lambda: local_user(sandbox, "alice") and local_user(sandbox, "bob")
    )
    assert "kubepam-agent" in sandbox.run("getent", "passwd", "alice").stdout
    assert sandbox.read("/etc/ssh/kubepam/principals/alice").split() == ["alice"]
    assert not local_user_on_host("alice") and not local_user_on_host("bob")
    # the enrollment token is not replayed: the agent has its own credential from now on
    assert (work / "state").exists()


def local_user_on_host(name: str) -> bool:
    return any(line.split(":", 1)[0] == name for line in Path("/etc/passwd").read_text().splitlines())


def test_a_person_logs_in_with_a_kubepam_certificate_and_sudo_follows_the_rule(
    plane: ControlPlane, fleet: tuple[Sandbox, Path]
) -> None:
    sandbox, work = fleet
    eventually("bob's sudoers drop-in", lambda: sandbox.read("/etc/sudoers.d/kubepam-bob"))
    assert sandbox.run("visudo", "-c", "-f", "/etc/sudoers.d/kubepam-bob").returncode == 0
    assert not sandbox.read("/etc/sudoers.d/kubepam-alice")

    alice_key = new_key(work / "alice")
    alice = sandbox.login("alice", alice_key, certificate(plane, "alice", "alice-1", alice_key), "id -un")
    assert alice.returncode == 0 and alice.stdout.strip() == "alice", alice.stderr
    no_sudo = sandbox.login("alice", alice_key, work / "alice-1-cert.pub", "sudo -n true")
    assert no_sudo.returncode != 0

    bob_key = new_key(work / "bob")
    bob = sandbox.login(
        "bob", bob_key, certificate(plane, "bob", "bob-1", bob_key), "sudo -n true && echo root-ok"
    )
    assert bob.returncode == 0 and "root-ok" in bob.stdout, bob.stderr
    wrong = sandbox.login("bob", alice_key, work / "alice-1-cert.pub")  # alice's certificate is not bob's
    assert wrong.returncode == 255

    def login_event() -> dict[str, Any] | None:
        events = kubectl_json(
            plane,
            "admin",
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            f"involvedObject.name={SERVER},reason=Login",
        )["items"]
        return next((e for e in events if "alice" in e["message"]), None)

    event = eventually("the Login event", login_event)
    assert event["involvedObject"]["kind"] == "Server" and "127.0.0.1" in event["message"]
    last = kubectl_json(plane, "admin", "get", "server", SERVER, "-n", NS)["status"]["agent"]["lastLogin"]
    assert last["user"] in ("alice", "bob") and last["source"] == "127.0.0.1"


def test_a_ca_rotation_is_trusted_without_restarting_the_agent(
    plane: ControlPlane, fleet: tuple[Sandbox, Path]
) -> None:
    sandbox, work = fleet
    before = sandbox.read("/etc/ssh/kubepam/trusted_user_ca_keys.pub")
    assert before.count("\n") >= 1
    serial = kubectl_json(plane, "admin", "get", "server", SERVER, "-n", NS)["status"]["agent"][
        "certificateSerial"
    ]
    plane.kubectl(
        "devops",
        "patch",
        "project",
        "web",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"certificateAuthority":{"rotation":{"generation":1,"overlap":"30s"}}}}',
    )
    eventually(
        "both CA keys trusted in the sandbox",
        lambda: sandbox.read("/etc/ssh/kubepam/trusted_user_ca_keys.pub").count("\n") == 2,
    )
    key = new_key(work / "alice-rot")
    login = sandbox.login("alice", key, certificate(plane, "alice", "alice-rot", key), "id -un")
    assert login.returncode == 0 and login.stdout.strip() == "alice", login.stderr
    # the agent's own client certificate moves to the new CA during the overlap, so it keeps working after
    renewed = eventually(
        "the agent's certificate renewed from the new CA",
        lambda: (
            (agent := (agent_server(plane) or {}).get("status", {}).get("agent", {}))
            and agent.get("certificateSerial") != serial
            and agent
        ),
    )
    assert renewed["keyFingerprint"]


def test_removing_the_rule_ends_the_login_at_once_and_the_account_after_the_grace(
    plane: ControlPlane, fleet: tuple[Sandbox, Path]
) -> None:
    sandbox, work = fleet
    key = new_key(work / "alice-late")
    cert = certificate(plane, "alice", "alice-late", key)
    assert sandbox.login("alice", key, cert).returncode == 0
    session = subprocess.Popen(  # alice is logged in when her access goes
        sandbox.login_command("alice", key, cert, "sleep 120"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(
            "alice's session", lambda: sandbox.run("pgrep", "-u", "alice", "sleep", check=False).stdout
        )
        plane.kubectl("devops", "delete", "accesspolicy", "people", "-n", NS)
        session.wait(timeout=30)  # ended by the agent (pkill), not by its 120 s
    finally:
        if session.poll() is None:
            session.kill()
    eventually("alice's principals removed", lambda: not sandbox.read("/etc/ssh/kubepam/principals/alice"))
    assert sandbox.login("alice", key, cert).returncode == 255  # a valid certificate, no login
    removed = time.monotonic()
    assert local_user(sandbox, "alice")  # kept for the grace period (5 s here)
    eventually("alice's account deleted after the grace", lambda: not local_user(sandbox, "alice"))
    assert time.monotonic() - removed < 15, (
        "the deletion is scheduled at the grace's end, not at the next poll"
    )
    assert local_user(sandbox, "bob")
    assert not local_user_on_host("alice")
