"""Kubernetes label selectors (matchLabels AND matchExpressions), evaluated in memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubepam.domain.errors import SpecError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_selector(selector: Mapping[str, Any] | None, path: str) -> list[str]:
    problems: list[str] = []
    for i, expr in enumerate((selector or {}).get("matchExpressions") or []):
        op, values = expr.get("operator"), expr.get("values") or []
        if op not in OPERATORS:
            problems.append(f"{path}.matchExpressions[{i}].operator: must be one of {', '.join(OPERATORS)}")
        elif op in ("In", "NotIn") and not values:
            problems.append(f"{path}.matchExpressions[{i}].values: required for {op}")
        elif op in ("Exists", "DoesNotExist") and values:
            problems.append(f"{path}.matchExpressions[{i}].values: must be empty for {op}")
    return problems


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """An empty or missing selector selects everything, as in Kubernetes."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in OPERATORS:
            raise SpecError([f"unknown selector operator {op!r}"])
    return True


def describe_selector(selector: Mapping[str, Any] | None) -> str:
    if selector is None:
        return "no servers"
    if not selector:
        return "all servers"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        values = ",".join(expr.get("values") or [])
        parts.append(f"{expr['key']} {expr['operator']}" + (f" ({values})" if values else ""))
    return ", ".join(parts)
