"""Offline checks of manifests, no cluster needed, in the API server's order for a create:
MutatingAdmissionPolicies (requester and groups stamped from the user), JSON-schema validation against
crds/ (as `kubectl apply --validate=strict` would: unknown fields are errors), the CRDs' CEL rules, the
ValidatingAdmissionPolicies of manifests/ (each project's JIT settings derived from the Projects in the
files, as the operator publishes them), and then the operator's own semantic checks and plan. CEL runs
in cel-python (`kubepam.cel`); `tests/e2e/test_validate_cel.py` holds it to the API server's answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kubepam.cel import Admission, Resource, UserInfo, apply_defaults, crd_rule_violations
from kubepam.domain.jit import SETTINGS_LABEL, admission_params, settings_configmap_name
from kubepam.domain.kinds import API_VERSION, GROUP
from kubepam.domain.plans import Plan, plan_connection, plan_generic, plan_role

# Whom the files are checked as, unless told otherwise: a cluster admin, as a GitOps controller usually is.
DEFAULT_USER = UserInfo("admin", ("system:masters",))


def crd_dir() -> Path:
    from kubepam.dev.cluster import repo_root

    return repo_root() / "crds"


def _strict(schema: Any) -> Any:
    """openAPIV3Schema -> JSON Schema: drop x-kubernetes-* keys, forbid unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.setdefault("additionalProperties", False)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    return out


@dataclass(frozen=True)
class Crd:
    """One kind's storage version: its raw schema (defaults, CEL rules) and the strict JSON schema."""

    kind: str
    version: str
    plural: str
    schema: Mapping[str, Any]
    strict: Mapping[str, Any]

    @property
    def resource(self) -> Resource:
        return Resource(GROUP, self.version, self.kind, self.plural)


def load_crds(directory: Path | None = None) -> dict[str, Crd]:
    """kind -> its CRD's storage version, from crds/."""
    crds: dict[str, Crd] = {}
    for path in sorted((directory or crd_dir()).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        raw = version["schema"]["openAPIV3Schema"]
        strict = _strict(raw)
        strict["properties"]["metadata"] = {"type": "object"}
        crds[names["kind"]] = Crd(names["kind"], version["name"], names["plural"], raw, strict)
    return crds


def load_admission(path: Path | None = None) -> Admission:
    """The admission policies and bindings kubepam installs (manifests/40-admission-policies.yaml)."""
    from kubepam.dev.cluster import repo_root

    source = path or repo_root() / "manifests" / "40-admission-policies.yaml"
    return Admission(d for d in yaml.safe_load_all(source.read_text()) if isinstance(d, Mapping))


def iter_documents(paths: Iterable[Path]) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    for path in paths:
        files = sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml")) if path.is_dir() else [path]
        for file in files:
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, Mapping):
                    yield file, doc


@dataclass(frozen=True)
class Finding:
    source: str
    kind: str
    name: str
    errors: tuple[str, ...]
    plan: Plan | None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def jit_params(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ConfigMaps the admission policy on JitAccounts reads: those in the files, and each Project's
    ``<project>-jit`` as the operator would publish it."""
    params: list[dict[str, Any]] = []
    for doc in docs:
        meta = _mapping(doc.get("metadata"))
        namespace = str(meta.get("namespace", "default"))
        if doc.get("apiVersion") == "v1" and doc.get("kind") == "ConfigMap":
            params.append({**doc, "metadata": {**meta, "namespace": namespace}})
        elif doc.get("apiVersion") == API_VERSION and doc.get("kind") == "Project":
            name = str(meta.get("name", ""))
            try:
                data = admission_params(name, _mapping(_mapping(doc.get("spec")).get("jit")))
            except (AttributeError, TypeError):
                continue  # a malformed Project: its own schema errors say why; the operator publishes nothing
            params.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": settings_configmap_name(name),
                        "namespace": namespace,
                        "labels": {SETTINGS_LABEL: "true"},
                    },
                    "data": data,
                }
            )
    return params


def check(
    paths: Iterable[Path],
    crds: Mapping[str, Crd] | None = None,
    *,
    admission: Admission | None = None,
    user: UserInfo = DEFAULT_USER,
) -> list[Finding]:
    """Each kubepam object in ``paths``, judged as if ``user`` created it."""
    crds = crds if crds is not None else load_crds()
    admission = admission if admission is not None else load_admission()
    documents = list(iter_documents(paths))
    params = jit_params(doc for _, doc in documents)
    findings: list[Finding] = []
    for file, doc in documents:
        api = str(doc.get("apiVersion", ""))
        if not api.startswith(GROUP + "/"):
            continue
        kind = str(doc.get("kind", ""))
        meta = _mapping(doc.get("metadata"))
        name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        if not isinstance(doc.get("metadata"), Mapping):
            findings.append(Finding(str(file), kind, name, ("metadata: must be an object",), None))
            continue
        crd = crds.get(kind)
        if crd is None:
            findings.append(Finding(str(file), kind, name, (f"kind: unknown kind {kind!r}",), None))
            continue
        errors: list[str] = []
        if api != API_VERSION:
            errors.append(f"apiVersion: {api} is not served; use {API_VERSION}")
        obj, errors_so_far = _as_created(doc, crd, admission, user)
        errors.extend(errors_so_far)
        if not errors:
            errors.extend(str(v) for v in crd_rule_violations(crd.schema, obj))
        if not errors:
            errors.extend(str(v) for v in admission.validate_create(obj, crd.resource, user, params))
        plan = None
        if not errors:
            spec = obj.get("spec") or {}
            ns, nm = str(meta.get("namespace", "default")), str(meta.get("name", ""))
            if kind == "WorkloadConnection":
                plan = plan_connection(spec, doc.get("status"), None)
            elif kind == "WorkloadRole":
                plan = plan_role(ns, nm, spec)
            else:
                plan = plan_generic(kind, ns, nm, spec)
            if plan.reason == "InvalidSpec":
                errors.extend(plan.message.split("; "))
        findings.append(Finding(str(file), kind, name, tuple(errors), plan))
    return findings


def _as_created(
    doc: Mapping[str, Any], crd: Crd, admission: Admission, user: UserInfo
) -> tuple[dict[str, Any], list[str]]:
    """The object as the API server would store it (defaults, mutating admission; the status a file
    carries is dropped on create), and what the mutations or the JSON schema refuse."""
    meta = dict(doc.get("metadata") or {})
    meta.setdefault("namespace", "default")
    obj = apply_defaults(crd.schema, {**{k: v for k, v in doc.items() if k != "status"}, "metadata": meta})
    obj, refused = admission.mutate_create(obj, crd.resource, user)
    obj = apply_defaults(crd.schema, obj)
    errors = [str(v) for v in refused]
    judged = {**obj, "status": doc["status"]} if "status" in doc else obj
    validator = jsonschema.Draft7Validator(crd.strict)
    for err in sorted(validator.iter_errors(judged), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {err.message}")
    return obj, errors
