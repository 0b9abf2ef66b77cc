"""Offline checks of manifests, no cluster needed: JSON-schema validation against crds/ (as
`kubectl apply --validate=strict` would: unknown fields are errors) plus the operator's own semantic
checks and plan. CEL rules run only in the API server; they are listed, not evaluated, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kubepam.domain.kinds import API_VERSION, GROUP
from kubepam.domain.plans import Plan, plan_connection, plan_generic, plan_role


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


def load_schemas(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """kind -> JSON schema of the storage version, from crds/."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted((directory or crd_dir()).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        schema = _strict(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}
        schemas[kind] = schema
    return schemas


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


def check(paths: Iterable[Path], schemas: Mapping[str, Mapping[str, Any]] | None = None) -> list[Finding]:
    schemas = schemas if schemas is not None else load_schemas()
    findings: list[Finding] = []
    for file, doc in iter_documents(paths):
        api = str(doc.get("apiVersion", ""))
        if not api.startswith(GROUP + "/"):
            continue
        kind = str(doc.get("kind", ""))
        meta = doc.get("metadata") or {}
        name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        errors: list[str] = []
        if api != API_VERSION:
            errors.append(f"apiVersion: {api} is not served; use {API_VERSION}")
        schema = schemas.get(kind)
        if schema is None:
            findings.append(Finding(str(file), kind, name, (f"kind: unknown kind {kind!r}",), None))
            continue
        validator = jsonschema.Draft7Validator(schema)
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{where}: {err.message}")
        plan = None
        if not errors:
            spec = doc.get("spec") or {}
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
