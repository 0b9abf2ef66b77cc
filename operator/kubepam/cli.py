"""The `kubepam` command (also installed as `kubectl-pam`, so `kubectl pam ...` works).

kubepam run                      run the operator (and its broker) against the current kubeconfig
kubepam demo                     local control plane + install + examples + operator, in one go
kubepam dev up|down|env          the local control plane for development and tests
kubepam install [--examples]     apply manifests/ to the current cluster
kubepam console                  the web console: people sign in with their own Kubernetes token
kubepam validate -f PATH         check manifests offline as the API server would (schema, CEL, admission)
kubepam plan -f PATH             show what the operator would do for manifests, changing nothing
kubepam history [-A] [--csv]     finished checkouts, JIT activations, certificates (AccessRecords)
kubepam agent --broker URL ...   on an enrolled server: its accounts, sshd trust and login audit
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

DEFAULT_DEV_DIR = Path(os.environ.get("KUBEPAM_DEV_DIR", ".kubepam/dev"))


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiohttp.access", "kubernetes.client.rest"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    import kubepam.handlers  # noqa: F401  (registers the handlers)
    from kubepam.adapters import audit, memory
    from kubepam.handlers.process import serve
    from kubepam.handlers.runtime import SETTINGS

    _setup_logging(SETTINGS.log_level)
    audit.configure(SETTINGS.audit_file, SETTINGS.audit_file_max_bytes, SETTINGS.audit_file_backups)
    memory.limit_arenas(SETTINGS.malloc_arenas)  # before any thread pool starts
    return asyncio.run(serve())


def cmd_console(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import dataclasses

    from kubepam.console.app import app_from_settings, cluster_of, start
    from kubepam.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in (("console_host", args.host), ("console_port", args.port)) if v}
    settings = dataclasses.replace(settings, **overrides)
    _setup_logging(settings.log_level)
    server, ca_file, ca_data = cluster_of(args.kubeconfig) if args.kubeconfig else ("", "", "")
    try:
        app = app_from_settings(settings, api_server=server, ca_file=ca_file, ca_data=ca_data)
    except (ValueError, OSError) as exc:
        print(f"kubepam console: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        runner = await start(app, settings)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The leader Lease as a person wants to read it: who leads, since when, last renewal."""
    from datetime import UTC, datetime

    import kubernetes
    from kubernetes.client.exceptions import ApiException

    from kubepam.client.errors import api_message

    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    try:
        lease = kubernetes.client.CoordinationV1Api().read_namespaced_lease(args.lease, args.namespace)
    except ApiException as exc:
        print(f"kubepam: lease {args.namespace}/{args.lease}: {api_message(exc)}", file=sys.stderr)
        return 1
    spec: Any = lease.spec
    holder = spec.holder_identity or "(nobody: the last leader stepped down)"
    renewed = spec.renew_time
    age = f"{(datetime.now(UTC) - renewed).total_seconds():.1f}s ago" if renewed else "never"
    print(f"leader:       {holder}")
    print(f"since:        {spec.acquire_time.isoformat() if spec.acquire_time else '-'}")
    print(f"renewed:      {age} (lease {spec.lease_duration_seconds}s)")
    print(f"transitions:  {spec.lease_transitions or 0}")
    return 0


def _kubectl_for(kubeconfig: str | None) -> Any:
    from kubepam.dev.cluster import ensure_binaries

    binary = str(ensure_binaries() / "kubectl")

    def kubectl(
        *cmd: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = [binary, *(["--kubeconfig", kubeconfig] if kubeconfig else []), *cmd]
        result = subprocess.run(full, capture_output=True, text=True, input=input_text)
        if check and result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(result.returncode)
        return result

    return kubectl


def cmd_dev(args: argparse.Namespace) -> int:
    from kubepam.dev.cluster import ControlPlane, ensure_binaries
    from kubepam.dev.install import install

    state_dir = Path(args.state_dir).resolve()
    existing = ControlPlane.load(state_dir)
    if args.action == "down":
        if existing is None:
            print("no local control plane running")
            return 0
        existing.stop()
        print("stopped")
        return 0
    if args.action == "env":
        print(f"export KUBECONFIG={state_dir / 'kubeconfigs' / (args.identity + '.kubeconfig')}")
        return 0
    if existing is not None and existing.alive():
        print(f"already running: {existing.server}")
        return 0
    if existing is not None:
        existing.stop()
    plane = ControlPlane(state_dir=state_dir, bin_dir=ensure_binaries())
    plane.start()
    if not args.no_install:
        install(
            lambda *cmd, **kw: plane.kubectl("admin", *cmd, **kw),
            examples=args.examples,
            requester=lambda *cmd, **kw: plane.kubectl("alice", *cmd, **kw),
        )
    print(f"control plane up in {plane.startup_seconds:.1f}s at {plane.server}")
    print(
        f"kubeconfigs: {state_dir / 'kubeconfigs'} (admin, operator, devops, secadmin, approver, alice, bob)"
    )
    print(f"export KUBECONFIG={plane.kubeconfig('admin')}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from kubepam.dev.install import install

    install(_kubectl_for(args.kubeconfig), examples=args.examples)
    print("installed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Set up and run the main job: a local control plane (unless KUBECONFIG names a cluster), kubepam
    installed with its examples, and the operator running as its own least-privileged identity. Whatever
    it started is stopped again on any failure, Ctrl-C, SIGTERM or SIGHUP (unless --keep)."""
    from kubepam.dev.cluster import ControlPlane, ensure_binaries
    from kubepam.dev.install import install

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the same clean shutdown as Ctrl-C: operator first, then the control plane

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on_signal)
    plane: ControlPlane | None = None
    env = dict(os.environ)
    code = 1
    try:
        if os.environ.get("KUBECONFIG") and not args.local:
            install(_kubectl_for(os.environ["KUBECONFIG"]), examples=True)
        else:
            state_dir = Path(args.state_dir).resolve()
            old = ControlPlane.load(state_dir)
            if old is not None:
                old.stop()
            plane = ControlPlane(state_dir=state_dir, bin_dir=ensure_binaries())
            started = plane
            plane.start()
            install(
                lambda *cmd, **kw: started.kubectl("admin", *cmd, **kw),
                examples=True,
                requester=lambda *cmd, **kw: started.kubectl("alice", *cmd, **kw),
            )
            env["KUBECONFIG"] = str(plane.kubeconfig("operator"))
            print(
                f"control plane up in {plane.startup_seconds:.1f}s; "
                f"kubeconfigs in {state_dir / 'kubeconfigs'}"
            )
            print(f"try: KUBECONFIG={plane.kubeconfig('admin')} kubectl get kubepam -A")
        print("starting the operator (Ctrl-C to stop)", flush=True)
        with subprocess.Popen([sys.executable, "-m", "kubepam", "run"], env=env) as proc:
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                code = 0
    except KeyboardInterrupt:
        code = 0
    finally:
        if plane is not None and not args.keep:
            plane.stop()
            print("stopped the control plane", flush=True)
    return code


def cmd_validate(args: argparse.Namespace, *, show_plan: bool = False) -> int:
    from kubepam.cel import Unsupported, UserInfo
    from kubepam.offline import DEFAULT_USER, check

    paths = [Path(p) for p in args.filename]
    as_user, as_groups = getattr(args, "as_user", None), tuple(getattr(args, "as_group", None) or ())
    if getattr(args, "server", False):
        from kubepam.dryrun import impersonation, kubectl_binary, server_check

        kubeconfig = ["--kubeconfig", args.kubeconfig] if args.kubeconfig else []
        kubectl = [kubectl_binary(), *kubeconfig, *impersonation(as_user, as_groups)]
        findings = server_check(paths, kubectl=kubectl)
    else:
        if as_groups and not as_user:
            print("kubepam validate: --as-group needs --as", file=sys.stderr)
            return 1
        user = UserInfo(as_user, as_groups) if as_user else DEFAULT_USER
        try:
            findings = check(paths, user=user)
        except Unsupported as exc:
            print(f"kubepam validate: {exc}", file=sys.stderr)
            return 1
    bad = 0
    for f in findings:
        if f.errors:
            bad += 1
            print(f"{f.source}: {f.kind} {f.name}: INVALID")
            for err in f.errors:
                print(f"  - {err}")
        elif show_plan and f.plan is not None:
            print(f"{f.kind} {f.name}: {f.plan.health.value} ({f.plan.reason}) {f.plan.message}")
            for key, value in f.plan.status.items():
                print(f"  ~ status.{key} = {json.dumps(value)}")
            for action in f.plan.actions:
                print(f"  + {action}")
        else:
            print(f"{f.kind} {f.name}: valid")
    if not findings:
        print("no kubepam objects found")
    return 1 if bad else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from kubepam import plan

    paths = [Path(p) for p in args.filename]
    if args.objects and cmd_validate(args, show_plan=True):
        return plan.ERROR
    try:
        files = plan.load_files(paths)
        live_wanted = plan.kubeconfig_present(os.environ) if args.live is None else args.live
        live = plan.read_live() if live_wanted else None
        requests = plan.read_live(kinds=plan.REQUEST_KINDS) if live_wanted else []
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"kubepam plan: {exc}", file=sys.stderr)
        return plan.ERROR
    result = plan.plan(files, live, prune=args.prune, requests=requests)
    print(plan.render(result, args.output))
    return result.code(args.fail_on_widening)


def _subject_token(args: argparse.Namespace) -> str:
    from kubepam.client.id_tokens import id_token

    return id_token(
        args.provider,
        os.environ,
        audience=args.audience,
        token_file=args.token_file,
        gitlab_variable=args.gitlab_variable,
    )


def cmd_workload(args: argparse.Namespace) -> int:
    from kubepam.client import broker
    from kubepam.client.id_tokens import TokenSourceError

    if not args.broker:
        print("kubepam: set --broker or KUBEPAM_BROKER to the broker's URL", file=sys.stderr)
        return 2
    if args.action in ("checkout", "checkin"):
        return _workload_checkouts(args)
    if not args.connection:
        print("kubepam: --connection (namespace/name of the WorkloadConnection) is required", file=sys.stderr)
        return 2
    try:
        subject = _subject_token(args)
    except TokenSourceError as exc:
        print(f"kubepam: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "explain":
            report = broker.validate(args.broker, args.connection, subject)
            print(json.dumps(report, indent=2) if args.json else broker.render_report(report))
            return 0 if report.get("verdict") == "valid" else 1
        answer = broker.exchange(args.broker, args.connection, subject)
    except broker.BrokerError as exc:
        print(f"kubepam: {exc}", file=sys.stderr)
        return 1
    if args.output:
        path = Path(args.output)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(answer["access_token"] + "\n")
        print(f"access token written to {path} (expires in {answer['expires_in']}s)", file=sys.stderr)
    elif args.json:
        print(json.dumps(answer))
    else:
        print(answer["access_token"])
    return 0


def _access_token(args: argparse.Namespace) -> str:
    if args.access_token_file:
        try:
            return Path(args.access_token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {args.access_token_file}: {exc.strerror}") from None
    token = os.environ.get("KUBEPAM_ACCESS_TOKEN", "").strip()
    if not token:
        raise ValueError("set --access-token-file or KUBEPAM_ACCESS_TOKEN (from `kubepam workload login`)")
    return token


def _workload_checkouts(args: argparse.Namespace) -> int:
    """`kubepam workload checkout|checkin`: a job's checkout of a shared account through the broker."""
    from kubepam.client import broker

    try:
        token = _access_token(args)
    except ValueError as exc:
        print(f"kubepam: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "checkin":
            namespace, _, name = (args.checkout or "").partition("/")
            if not namespace or not name:
                print("kubepam: --checkout namespace/name is required", file=sys.stderr)
                return 2
            answer = broker.checkin(args.broker, token, namespace, name)
            print(f"{namespace}/{name}: check-in requested ({answer.get('phase')})", file=sys.stderr)
            return 0
        missing = [f"--{f}" for f in ("role", "project", "account", "reason") if not getattr(args, f)]
        if missing:
            print(f"kubepam: {', '.join(missing)} required for a checkout", file=sys.stderr)
            return 2
        answer = broker.checkout(
            args.broker,
            token,
            role=args.role,
            project=args.project,
            account=args.account,
            reason=args.reason,
            duration=args.duration,
            timeout=args.timeout,
            progress=lambda note: print(f"kubepam: waiting: {note}", file=sys.stderr),
        )
    except broker.BrokerError as exc:
        print(f"kubepam: {exc}", file=sys.stderr)
        return 1
    held = f"{answer['namespace']}/{answer['checkout']}"
    if args.output:
        path = Path(args.output)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps(answer) + "\n")
        print(
            f"{held}: {answer['account']} is yours until {answer['expiresAt']}; credential written to {path} "
            f"(check in: kubepam workload checkin --checkout {held})",
            file=sys.stderr,
        )
    else:
        print(json.dumps(answer))
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    from kubepam.client.ssh import SSHError, run

    try:
        return run(
            args.namespace,
            args.server,
            Path(args.key).expanduser(),
            login=args.login,
            ttl=args.ttl,
            principals=args.principal or [],
            timeout=args.timeout,
            ssh_options=args.ssh_option or [],
            command=args.command_args,
        )
    except SSHError as exc:
        print(f"kubepam ssh: {exc}", file=sys.stderr)
        return 2


def cmd_checkouts(args: argparse.Namespace) -> int:
    from kubepam.client import checkouts as co

    try:
        if args.command == "checkout":

            def waiting(name: str, status: dict[str, Any]) -> None:
                print(f"{name}: {co.waiting_line(status)}", file=sys.stderr)

            obj = co.checkout(
                args.namespace,
                args.project,
                args.account,
                args.reason,
                args.duration,
                args.elevate,
                args.timeout if args.timeout is not None else (3600 if args.wait else 60),
                args.break_glass,
                queue=args.wait,
                progress=waiting,
            )
            status = obj.get("status") or {}
            name = obj["metadata"]["name"]
            if status.get("phase") != "Active":
                print(f"{status.get('phase', '').lower()}: {status.get('message')}", file=sys.stderr)
                return 1
            print(f"{name}: {args.account} is yours until {status.get('expiresAt')}")
            print(f"credential: kubectl get secret {status.get('secretName')} -n {args.namespace} -o yaml")
            if args.show:
                cred = co.credential(args.namespace, str(status.get("secretName")))
                print(f"username: {cred.get('username')}\npassword: {cred.get('password')}")
            return 0
        if args.command == "claim":
            co.claim(args.namespace, args.name)
            print(f"{args.name}: claimed (it is yours while the offer stands)")
            return 0
        if args.command == "checkin":
            co.patch_spec(
                args.namespace, args.name, {"checkin": {"force": True} if args.force else {"requested": True}}
            )
            print(f"{args.name}: check-in requested")
            return 0
        if args.command in ("approve", "deny"):
            co.decide(
                args.namespace, args.name, "Approved" if args.command == "approve" else "Denied", args.reason
            )
            print(f"{args.name}: {args.command}d")
            return 0
        header = [
            "NAMESPACE",
            "NAME",
            "PROJECT",
            "ACCOUNT",
            "HOLDER",
            "STATUS",
            "POSITION",
            "EXPIRES",
            "LEFT",
            "ELEVATION",
            "BREAK-GLASS",
        ]
        rows = co.listing(None if args.all_namespaces else args.namespace)
        if args.break_glass:
            rows = [row for row in rows if row[-1]]
        _table(header, rows)
        return 0
    except co.CheckoutError as exc:
        print(f"kubepam {args.command}: {exc}", file=sys.stderr)
        return 2


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_history(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from kubepam.client import history
    from kubepam.domain import history as hist

    try:
        now = datetime.now(UTC)
        rows = history.rows(
            None if args.all_namespaces else args.namespace,
            person=args.person,
            account=args.account,
            project=args.project,
            kind=args.kind,
            since=history.moment(args.since, now) if args.since else None,
            until=history.moment(args.until, now) if args.until else None,
        )
    except history.HistoryError as exc:
        print(f"kubepam history: {exc}", file=sys.stderr)
        return 2
    if args.csv or args.output == "csv":
        sys.stdout.write(hist.to_csv(rows))
    elif args.output == "json":
        print(hist.to_json(rows))
    else:
        _table([f.upper() for f in hist.FIELDS], [list(r.as_dict().values()) for r in rows])
    return 0


def cmd_jit(args: argparse.Namespace) -> int:
    import getpass

    from kubepam.client import jit

    try:
        if args.action == "create":
            owner = args.owner or getpass.getuser()
            name = args.name or owner.replace("_", "-")
            jit.create(
                args.namespace,
                name,
                args.project,
                owner,
                args.groups.split(","),
                args.reason,
                args.duration,
                args.account,
            )
            print(f"jitaccount {name} created; its credential will be in Secret jit-{name} (yours alone)")
        elif args.action == "enable":
            if not args.name:
                print("kubepam jit enable: give the JitAccount's name", file=sys.stderr)
                return 2
            jit.enable(args.namespace, args.name, args.reason, args.duration)
            print(f"jitaccount {args.name}: re-enable requested")
        elif args.action == "disable":
            if not args.name:
                print("kubepam jit disable: give the JitAccount's name", file=sys.stderr)
                return 2
            jit.disable(args.namespace, args.name)
            print(f"jitaccount {args.name}: disable requested (its window ends now)")
        else:
            _table(
                ["NAMESPACE", "NAME", "ACCOUNT", "OWNER", "GROUPS", "STATUS", "EXPIRES", "SECRET"],
                jit.listing(None if args.all_namespaces else args.namespace),
            )
        return 0
    except jit.JitError as exc:
        print(f"kubepam jit {args.action}: {exc}", file=sys.stderr)
        return 2


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio
    import socket

    from kubepam.agent.main import main as agent_main
    from kubepam.agent.settings import AgentSettings
    from kubepam.domain.durations import parse_duration

    _setup_logging(args.log_level)
    try:
        settings = AgentSettings(
            broker=args.broker,
            token_file=Path(args.token_file),
            namespace=args.namespace,
            project=args.project,
            hostname=args.hostname or socket.gethostname(),
            labels=dict(args.label or []),
            state_dir=Path(args.state_dir),
            prefix=args.prefix,
            uid_min=args.uid_min,
            uid_max=args.uid_max,
            sshd_dir=Path(args.sshd_dir),
            sudoers_dir=Path(args.sudoers_dir),
            auth_log=Path(args.auth_log),
            reload_sshd=args.reload_sshd,
            grace=parse_duration(args.grace),
            once=args.once,
        )
    except ValueError as exc:
        print(f"kubepam agent: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(agent_main(settings))


def _agent_parser(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="run on an enrolled server: manage its kubepam accounts, sshd trust and login audit",
        description="Enroll this server (once) and keep its local accounts, sshd's trusted CA keys and "
        "principals files as the broker says; report sshd logins (docs/agent-protocol.md). Every option "
        "also reads KUBEPAM_AGENT_<OPTION> (e.g. KUBEPAM_AGENT_RELOAD_SSHD), --broker also KUBEPAM_BROKER: "
        "the systemd unit passes its settings that way (/etc/kubepam-agent.env).",
    )

    def option(name: str, default: str | None = None, **kw: Any) -> None:
        env = os.environ.get("KUBEPAM_AGENT_" + name.upper().replace("-", "_"), default)
        if name == "broker":
            env = os.environ.get("KUBEPAM_AGENT_BROKER", os.environ.get("KUBEPAM_BROKER", default))
        agent.add_argument(f"--{name}", default=env, required=env is None, **kw)

    option("broker", help="the broker's URL")
    option("token-file", help="the enrollment token (read to enroll, once)")
    option("namespace", help="the project's namespace")
    option("project", help="the project to enroll in")
    option("hostname", "", help="the name to enroll as (default: this host's name)")
    agent.add_argument("--label", action="append", type=_label, metavar="KEY=VALUE", help="repeatable")
    option("state-dir", "/var/lib/kubepam-agent", help="key, certificate, record of accounts, spool")
    option("prefix", "", help="prepended to every local account name")
    option("uid-min", "60000", type=int, help="the UIDs (and GIDs) the agent may give: 60000..60999")
    option("uid-max", "60999", type=int)
    option("sshd-dir", "/etc/ssh/kubepam", help="principals/<user> and trusted_user_ca_keys.pub")
    option("sudoers-dir", "/etc/sudoers.d")
    option("auth-log", "/var/log/auth.log", help="sshd's log (%(default)s; RHEL: /var/log/secure)")
    option(
        "reload-sshd", "systemctl reload ssh", metavar="CMD", help="run when the CA keys change (%(default)s)"
    )
    option("grace", "10m", help="how long a removed account (no login possible) is kept (%(default)s)")
    agent.add_argument("--once", action="store_true", help="enroll if needed, sync once, send events, exit")
    agent.add_argument("--log-level", default=os.environ.get("KUBEPAM_LOG_LEVEL", "INFO"))
    agent.set_defaults(fn=cmd_agent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubepam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the operator and its broker").set_defaults(fn=cmd_run)

    status = sub.add_parser(
        "status", help="which replica leads (reconciles); every replica serves the broker"
    )
    status.add_argument("--namespace", default=os.environ.get("KUBEPAM_NAMESPACE", "kubepam-system"))
    status.add_argument("--lease", default=os.environ.get("KUBEPAM_LEASE_NAME", "kubepam-operator-leader"))
    status.set_defaults(fn=cmd_status)

    demo = sub.add_parser("demo", help="local control plane + install + examples + operator")
    demo.add_argument("--state-dir", default=str(DEFAULT_DEV_DIR))
    demo.add_argument(
        "--local", action="store_true", help="ignore KUBECONFIG and start a local control plane"
    )
    demo.add_argument("--keep", action="store_true", help="leave the control plane running afterwards")
    demo.set_defaults(fn=cmd_demo)

    dev = sub.add_parser("dev", help="the local control plane")
    dev.add_argument("action", choices=["up", "down", "env"])
    dev.add_argument("--state-dir", default=str(DEFAULT_DEV_DIR))
    dev.add_argument("--no-install", action="store_true", help="do not apply manifests/")
    dev.add_argument("--examples", action="store_true", help="also apply manifests/examples/")
    dev.add_argument("--identity", default="admin", help="for env: whose kubeconfig")
    dev.set_defaults(fn=cmd_dev)

    console = sub.add_parser(
        "console",
        help="serve the web console (people sign in with their own Kubernetes token)",
    )
    console.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="take the API server and its CA from this kubeconfig (never its credentials); "
        "default in a pod: the in-cluster API server",
    )
    console.add_argument(
        "--host", default=None, help="listen address (default $KUBEPAM_CONSOLE_HOST or 127.0.0.1)"
    )
    console.add_argument(
        "--port", type=int, default=None, help="port (default $KUBEPAM_CONSOLE_PORT or 8443)"
    )
    console.set_defaults(fn=cmd_console)

    inst = sub.add_parser("install", help="apply manifests/ to the current cluster")
    inst.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    inst.add_argument("--examples", action="store_true")
    inst.set_defaults(fn=cmd_install)

    val = sub.add_parser(
        "validate",
        help="check manifests as the API server would on create: schema, CEL rules, admission policies "
        "(offline, or with --server by the API server itself)",
    )
    val.add_argument("-f", "--filename", action="append", required=True)
    val.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="judge the files as created by USER (default offline: a cluster admin, system:masters)",
    )
    val.add_argument("--as-group", action="append", metavar="GROUP", help="USER's groups (repeat)")
    val.add_argument(
        "--server",
        action="store_true",
        help="ask the API server instead (kubectl apply --dry-run=server, one object at a time)",
    )
    val.add_argument("--kubeconfig", default=None, help="with --server (default: $KUBECONFIG)")
    val.set_defaults(fn=cmd_validate)

    plan = sub.add_parser(
        "plan",
        help="who gains and who loses which access if these manifests are applied (exit 0 no change, "
        "2 changes, 1 error, 3 widening with --fail-on-widening)",
    )
    plan.add_argument("-f", "--filename", action="append", required=True)
    plan.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the current objects with your credentials (default: when a kubeconfig is present)",
    )
    plan.add_argument("--prune", action="store_true", help="live objects the files lack are deleted")
    plan.add_argument("-o", "--output", choices=["text", "json", "markdown"], default="text")
    plan.add_argument("--fail-on-widening", action="store_true", help="exit 3 when any change widens access")
    plan.add_argument("--objects", action="store_true", help="also print each object's offline plan")
    plan.set_defaults(fn=cmd_plan)

    workload = sub.add_parser(
        "workload",
        help="for CI jobs: exchange the job's OIDC token, or explain it; check a shared account out or in",
    )
    workload.add_argument("action", choices=["login", "explain", "checkout", "checkin"])
    workload.add_argument("--connection", help="namespace/name of the WorkloadConnection (login, explain)")
    workload.add_argument(
        "--broker", default=os.environ.get("KUBEPAM_BROKER"), help="broker URL ($KUBEPAM_BROKER)"
    )
    workload.add_argument(
        "--provider", default="auto", choices=["auto", "file", "github", "gitlab", "circleci", "gcp"]
    )
    workload.add_argument("--token-file", help="read the ID token from this file")
    workload.add_argument("--audience", help="audience to request (github, gcp)")
    workload.add_argument("--gitlab-variable", default="KUBEPAM_ID_TOKEN", help="the id_tokens variable name")
    workload.add_argument(
        "--output",
        "-o",
        help="write the access token (login) or the checkout's credential to this file (0600)",
    )
    workload.add_argument("--json", action="store_true", help="print the broker's JSON answer")
    workload.add_argument("--role", help="checkout: the WorkloadRole (in the access token) to act as")
    workload.add_argument("--project", help="checkout: the Project of the shared account")
    workload.add_argument("--account", help="checkout: the shared account")
    workload.add_argument("--duration", help="checkout: how long (capped by the policy)")
    workload.add_argument("--reason", help="checkout: why (kept for audit)")
    workload.add_argument(
        "--access-token-file",
        help="checkout, checkin: the kubepam access token (else $KUBEPAM_ACCESS_TOKEN)",
    )
    workload.add_argument("--checkout", help="checkin: namespace/name of the checkout")
    workload.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="checkout: seconds to wait while approvers decide (default 300)",
    )
    workload.set_defaults(fn=cmd_workload)

    ssh = sub.add_parser(
        "ssh",
        help="get a short-lived SSH certificate for a server and log in",
        usage="kubepam ssh SERVER [options] [-- REMOTE COMMAND...]",
    )
    ssh.add_argument("server", help="the Server object's name")
    ssh.add_argument("-n", "--namespace", default=os.environ.get("KUBEPAM_NAMESPACE_DEFAULT", "default"))
    ssh.add_argument("-i", "--key", default="~/.ssh/id_ed25519", help="private key; its .pub is certified")
    ssh.add_argument("-l", "--login", help="remote user (default: the certificate's first principal)")
    ssh.add_argument("--ttl", help="certificate lifetime to ask for (capped by policy)")
    ssh.add_argument("--principal", action="append", help="principal to ask for (repeatable)")
    ssh.add_argument("-o", "--ssh-option", action="append", help="passed to ssh as -o (repeatable)")
    ssh.add_argument("--timeout", type=float, default=60, help="seconds to wait for the certificate")
    ssh.set_defaults(fn=cmd_ssh)

    namespace = os.environ.get("KUBEPAM_NAMESPACE_DEFAULT", "default")
    co = sub.add_parser("checkout", help="check out a shared account")
    co.add_argument("account")
    co.add_argument("--project", required=True)
    co.add_argument("--reason", required=True, help="why (kept for audit)")
    co.add_argument("--duration", help="how long (capped by the policy)")
    co.add_argument("--elevate", action="store_true", help="also request privilege elevation")
    co.add_argument(
        "--break-glass",
        metavar="REASON",
        help="approve it yourself in an emergency, where the CheckoutPolicy allows (capped window, flagged)",
    )
    co.add_argument("--show", action="store_true", help="print the credential (it is yours alone to read)")
    co.add_argument(
        "--wait",
        action="store_true",
        help="if the account is held, wait in its line (printing your place) and take it when offered",
    )
    co.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the checkout (default 60, with --wait 3600; then it leaves the line)",
    )
    co.add_argument("-n", "--namespace", default=namespace)
    co.set_defaults(fn=cmd_checkouts)
    ci = sub.add_parser("checkin", help="check a checkout in early")
    ci.add_argument("name")
    ci.add_argument("--force", action="store_true", help="security admins: force it (rotates the password)")
    ci.add_argument("-n", "--namespace", default=namespace)
    ci.set_defaults(fn=cmd_checkouts)
    cl = sub.add_parser("claim", help="take an account offered to your queued checkout")
    cl.add_argument("name")
    cl.add_argument("-n", "--namespace", default=namespace)
    cl.set_defaults(fn=cmd_checkouts)
    for verb in ("approve", "deny"):
        decide = sub.add_parser(
            verb, help=f"{verb} a checkout's open request (checkout, elevation, extension)"
        )
        decide.add_argument("name")
        decide.add_argument("--reason", default="")
        decide.add_argument("-n", "--namespace", default=namespace)
        decide.set_defaults(fn=cmd_checkouts)
    ls = sub.add_parser("checkouts", help="list checkouts (who holds what, until when)")
    ls.add_argument("-n", "--namespace", default=namespace)
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument(
        "--break-glass", action="store_true", help="only checkouts that used break-glass (security review)"
    )
    ls.set_defaults(fn=cmd_checkouts)

    jit = sub.add_parser("jit", help="personal temporary privileged accounts")
    jit.add_argument("action", choices=["create", "enable", "disable", "list"])
    jit.add_argument("name", nargs="?", help="the JitAccount object (default: the owner's name)")
    jit.add_argument("--project")
    jit.add_argument("--owner", help="whose account (security admins may name someone else)")
    jit.add_argument("--account", help="account name, <name>_jit (default: <owner>_jit)")
    jit.add_argument("--groups", default="", help="comma-separated privileged groups")
    jit.add_argument("--reason", default="")
    jit.add_argument("--duration", default="1h")
    jit.add_argument("-n", "--namespace", default=namespace)
    jit.add_argument("-A", "--all-namespaces", action="store_true")
    jit.set_defaults(fn=cmd_jit)

    hi = sub.add_parser(
        "history",
        help="finished checkouts, JIT activations and certificate requests (AccessRecords)",
        description="One row per AccessRecord you may list, newest first: the same rows as the console's "
        "History page. Records are kept for KUBEPAM_HISTORY_RETENTION (default 720h) after they finish.",
    )
    hi.add_argument("-n", "--namespace", default=namespace)
    hi.add_argument("-A", "--all-namespaces", action="store_true")
    hi.add_argument("--person", default="", help="who it was for (exact username or workload subject)")
    hi.add_argument("--account", default="", help="the shared or JIT account (or a certificate's server)")
    hi.add_argument("--project", default="")
    hi.add_argument("--kind", default="", choices=["", "checkout", "denied", "jit", "certificate"])
    hi.add_argument("--since", default="", help="from this RFC 3339 time, or this long ago (24h)")
    hi.add_argument("--until", default="", help="before this RFC 3339 time, or this long ago")
    hi.add_argument("--csv", action="store_true", help="CSV with a header row (same as -o csv)")
    hi.add_argument("-o", "--output", default="table", choices=["table", "csv", "json"])
    hi.set_defaults(fn=cmd_history)
    _agent_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    remote: list[str] = []
    if "--" in argv:  # everything after -- is the remote command of `kubepam ssh`
        cut = argv.index("--")
        argv, remote = argv[:cut], argv[cut + 1 :]
    if argv[:2] == ["checkout", "claim"] and len(argv) > 2 and not argv[2].startswith("-"):
        argv = argv[1:]  # `kubepam checkout claim NAME` is `kubepam claim NAME`
    args = build_parser().parse_args(argv)
    args.command_args = remote
    from kubepam.dev.install import InstallError

    try:
        code: int = args.fn(args)
    except InstallError as exc:  # kubectl's and the API server's own words, not a traceback
        print(f"kubepam: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() if isinstance(exc.stderr or exc.stdout, str) else ""
        print(f"kubepam: {' '.join(map(str, exc.cmd[:3]))} failed: {detail or exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
