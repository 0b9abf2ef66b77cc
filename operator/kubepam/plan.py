"""`kubepam plan`: who gains and who loses which access if these manifests are applied.

Before = the live kubepam objects read with the caller's own credentials (``kubectl get``), or nothing
offline. After = before with the files overlaid as ``kubectl apply`` would (same kind, namespace and
name replaced; with ``prune``, live objects of the access kinds in the files' namespaces that the files
do not contain are removed). Status is never taken from a file: a live object keeps its own (a
WorkloadConnection's phase is a security admin's decision, not the file's). The access diff comes
from ``domain/access.py``, i.e. from the operator's own decision functions; what the operator then
creates, updates or deletes, and which live checkouts and JIT accounts keep their access, from
``effects.py``. Exit codes as
``terraform plan -detailed-exitcode``: 0 no change, 2 changes, 1 error; 3 with ``fail_on_widening``
when any change widens access.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepam.domain.access import Change, access_diff
from kubepam.domain.kinds import GROUP
from kubepam.effects import Effect, Key, effects, object_key
from kubepam.offline import iter_documents

KINDS = {
    "AccessPolicy": "accesspolicies",
    "Project": "projects",
    "Server": "servers",
    "CheckoutPolicy": "checkoutpolicies",
    "WorkloadConnection": "workloadconnections",
    "WorkloadRole": "workloadroles",
}
# Live grants a change may reach (read with --live; never taken from files).
REQUEST_KINDS = {"Checkout": "checkouts", "JitAccount": "jitaccounts"}
NO_CHANGE, ERROR, CHANGES, WIDENING = 0, 1, 2, 3


def load_files(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [
        dict(doc)
        for _, doc in iter_documents(paths)
        if str(doc.get("apiVersion", "")).startswith(GROUP + "/") and doc.get("kind") in KINDS
    ]


def read_live(kubectl: str = "kubectl", kinds: Mapping[str, str] = KINDS) -> list[dict[str, Any]]:
    """The live objects of ``kinds`` (by default every kind the access model reads), with the caller's
    credentials."""
    found: list[dict[str, Any]] = []
    for kind, plural in kinds.items():
        run = subprocess.run(
            [kubectl, "get", f"{plural}.{GROUP}", "-A", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"kubectl get {plural}: {run.stderr.strip()}")
        for item in json.loads(run.stdout).get("items") or []:
            found.append({**item, "kind": kind})
    return found


def overlay(
    live: Sequence[Mapping[str, Any]], files: Sequence[Mapping[str, Any]], prune: bool
) -> list[dict[str, Any]]:
    """``kubectl apply`` of the files over the live objects (status kept from the live object)."""
    result = {object_key(o): dict(o) for o in live}
    for doc in files:
        current = result.get(object_key(doc))
        merged = {k: v for k, v in doc.items() if k != "status"}  # status is the server's, never a file's
        if current is not None and "status" in current:
            merged["status"] = current["status"]
        result[object_key(doc)] = merged
    if prune:  # every kind the access model reads, in the namespaces the files write to
        namespaces = {k[1] for k in map(object_key, files)}
        wanted = set(map(object_key, files))
        for key in [k for k in result if k[1] in namespaces and k not in wanted]:
            del result[key]
    return list(result.values())


@dataclass(frozen=True)
class PlanResult:
    changes: list[Change]
    created: list[Key]
    deleted: list[Key]
    live: bool
    effects: list[Effect]

    def code(self, fail_on_widening: bool) -> int:
        if fail_on_widening and any(c.widening for c in self.changes):
            return WIDENING
        acts = any(e.changes_something for e in self.effects)
        return CHANGES if self.changes or self.created or self.deleted or acts else NO_CHANGE


def plan(
    files: Sequence[Mapping[str, Any]],
    live: Sequence[Mapping[str, Any]] | None,
    prune: bool = False,
    requests: Sequence[Mapping[str, Any]] = (),
) -> PlanResult:
    """``requests``: the live Checkouts and JitAccounts, to name the grants a change leaves in place."""
    before = list(live or [])
    after = overlay(before, files, prune)
    keys_before, keys_after = {object_key(o) for o in before}, {object_key(o) for o in after}
    changes = access_diff(before, after)
    return PlanResult(
        changes,
        sorted(keys_after - keys_before),
        sorted(keys_before - keys_after),
        live is not None,
        effects(before, after, changes, requests),
    )


def _action_lines(result: PlanResult) -> list[str]:
    lines = []
    for kind, ns, name in result.created:
        extra = {"WorkloadConnection": ": stays Draft until a security admin promotes it"}.get(kind, "")
        lines.append(f"+ create {kind} {ns}/{name}{extra}")
    for kind, ns, name in result.deleted:
        extra = {
            "Project": ": its certificates, checkouts and JIT accounts can no longer be requested",
            "CheckoutPolicy": ": its accounts can no longer be checked out",
        }.get(kind, "")
        lines.append(f"- delete {kind} {ns}/{name}{extra}")
    return lines


def render(result: PlanResult, output: str) -> str:
    if output == "json":
        return json.dumps(
            {
                "live": result.live,
                "access": [
                    {
                        "change": c.sign,
                        "principal": {"kind": c.principal.kind, "name": c.principal.name},
                        "target": {
                            "kind": c.target.kind,
                            "namespace": c.target.namespace,
                            "name": c.target.name,
                        },
                        "before": dict(c.before),
                        "after": dict(c.after),
                        "widening": c.widening,
                        "line": c.line(),
                    }
                    for c in result.changes
                ],
                "created": [list(k) for k in result.created],
                "deleted": [list(k) for k in result.deleted],
                "operator": [
                    {"change": e.sign, "kind": e.kind, "namespace": e.namespace, "name": e.name, "why": e.why}
                    for e in result.effects
                ],
            },
            indent=2,
        )
    access = [c.line() + ("   (widening)" if c.widening else "") for c in result.changes]
    actions = _action_lines(result)
    operator = [e.line() for e in result.effects]
    source = "against the live cluster" if result.live else "offline (nothing is live)"
    if output == "markdown":
        widening = sum(c.widening for c in result.changes)
        out = [f"### kubepam plan {source}", ""]
        out.append(f"**{len(result.changes)} access changes, {widening} widening.**")
        out += ["", "```diff", *(access or ["(no access change)"]), "```", ""]
        if actions:
            out += ["Objects:", "", "```diff", *actions, "```"]
        if operator:
            note = "The operator (`=`: live access the change leaves in place):"
            out += ["", note, "", "```diff", *operator, "```"]
        return "\n".join(out)
    out = [f"access ({source}):", *(f"  {line}" for line in access or ["(no access change)"])]
    if actions:
        out += ["objects:", *(f"  {line}" for line in actions)]
    if operator:
        out += ["operator:", *(f"  {line}" for line in operator)]
    return "\n".join(out)


def kubeconfig_present(environ: Mapping[str, str]) -> bool:
    if environ.get("KUBECONFIG"):
        return True
    return (Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config").exists()
