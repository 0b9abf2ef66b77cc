"""The API server's CEL rules, evaluated offline with cel-python, so that `kubepam validate` refuses in
review what the API server would refuse at apply: the CRDs' ``x-kubernetes-validations`` and the
admission policies of manifests/40-admission-policies.yaml, for an object being created by a given user.

What it does, in the API server's order for a CREATE:
1. mutating admission: the MutatingAdmissionPolicies that match (their matchConditions, then their
   JSONPatch mutations, in order), then the CRD schema's defaults again;
2. every ``x-kubernetes-validations`` rule of every schema node present in the object, ``self`` bound
   to that node (transition rules, which read ``oldSelf``, are skipped: the API server skips them on
   create); the caller runs the JSON schema first and these only when it passed, as the API server
   does not reach admission with an invalid object;
3. validating admission: the ValidatingAdmissionPolicies that match and are bound, with their
   matchConditions, variables and params (the objects the binding's paramRef selects among those given,
   in the object's namespace unless the paramRef names one); a false expression denies with its
   messageExpression or message, an error denies under failurePolicy Fail.

Not modelled, and refused loudly rather than guessed: ApplyConfiguration mutations, namespace and object
selectors, binding matchResources, excludeResourceRules, paramRef matchExpressions, a rule's reason (all
are reported as Invalid value), and any CEL function
beyond the standard ones and the Kubernetes string library's split and join (an unknown function is an
evaluation error). CEL cost limits are not computed.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import jsonpatch
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from jsonpointer import JsonPointerException

_OLD_SELF = re.compile(r"\boldSelf\b")


class Unsupported(ValueError):
    """A policy uses a feature this offline evaluation does not model."""


@dataclass(frozen=True)
class UserInfo:
    """Who creates the object, as request.userInfo (the API server adds system:authenticated)."""

    username: str
    groups: tuple[str, ...]

    def cel(self) -> dict[str, Any]:
        groups = list(self.groups)
        if "system:authenticated" not in groups:
            groups.append("system:authenticated")
        return {"username": self.username, "groups": groups}


@dataclass(frozen=True)
class Violation:
    """One refusal: where (a field path, or the policy), and the message the API server would give."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class JSONPatch(celtypes.MessageType):
    """The type of MutatingAdmissionPolicy patches: JSONPatch{op: ..., path: ..., value: ...}."""


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])


def _join(items: celtypes.ListType, separator: celtypes.StringType | None = None) -> celtypes.StringType:
    return celtypes.StringType(str(separator or "").join(str(item) for item in items))


_FUNCTIONS: dict[str, Any] = {"split": _split, "join": _join}
_ENV = celpy.Environment(annotations={"JSONPatch": JSONPatch})


@cache
def program(expression: str) -> celpy.Runner:
    """Compile once; raises celpy's CELParseError for syntax cel-python lacks (such as optionals, ?.)."""
    return _ENV.program(_ENV.compile(expression), functions=_FUNCTIONS)


def evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    """The expression's value, or the CELEvalError it produced (an error is a value in CEL)."""
    try:
        return program(expression).evaluate(dict(activation))
    except CELEvalError as exc:
        return exc


def to_cel(value: Any) -> Any:
    return json_to_cel(value)


def to_json(value: Any) -> Any:
    """A CEL value as plain JSON data (for patches)."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    return value


def _failure(result: Any, expression: str) -> str | None:
    """None when the expression held; otherwise why not, as the API server words an evaluation error."""
    if isinstance(result, CELEvalError):
        return f"expression '{expression}' resulted in error: {result.args[0] if result.args else result}"
    if not isinstance(result, bool | celtypes.BoolType):
        return f"expression '{expression}' must evaluate to bool"
    return None if bool(result) else ""


# --- CRD schemas ------------------------------------------------------------------------------------


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in where fields are absent (as the API server does on
    decode); never changes the argument."""
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: Mapping[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default_in_place(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in set(value) - set(schema.get("properties") or {}):
                _default_in_place(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default_in_place(schema["items"], item)


def _shown(value: Any) -> str:
    """The rejected value as the API server prints it before the message: scalars only."""
    if isinstance(value, bool):
        return f"{str(value).lower()}: "
    if isinstance(value, int | float):
        return f"{value}: "
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) + ": "
    return ""


def crd_rule_violations(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Violation]:
    """Every ``x-kubernetes-validations`` rule (not a transition rule) of every node present in ``obj``."""
    found: list[Violation] = []
    _walk_rules(schema, obj, "", found)
    return found


def _walk_rules(schema: Mapping[str, Any], value: Any, path: str, found: list[Violation]) -> None:
    for rule in schema.get("x-kubernetes-validations") or ():
        expression = str(rule["rule"])
        if _OLD_SELF.search(expression):
            continue
        failure = _failure(evaluate(expression, {"self": to_cel(value)}), expression)
        if failure is None:
            continue
        message = failure or _message(rule, {"self": to_cel(value)}, f"failed rule: {expression}")
        where = path + str(rule.get("fieldPath") or "")
        found.append(Violation(where or "<nil>", f"Invalid value: {_shown(value)}{message}"))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key in value:
                _walk_rules(sub, value[key], f"{path}.{key}" if path else key, found)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in sorted(set(value) - set(properties)):
                _walk_rules(extra, value[key], f"{path}[{key}]", found)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _walk_rules(schema["items"], item, f"{path}[{index}]", found)


def _message(item: Mapping[str, Any], activation: Mapping[str, Any], fallback: str) -> str:
    """A failed rule's or validation's message: its messageExpression when that gives a non-empty
    string, else its message, else the API server's default."""
    if "messageExpression" in item:
        text = evaluate(str(item["messageExpression"]), activation)
        if isinstance(text, str) and text.strip():
            return text
    return str(item.get("message") or fallback)


# --- admission policies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """What the request is for, as the API server names it."""

    group: str
    version: str
    kind: str
    plural: str


@dataclass(frozen=True)
class _Bound:
    policy: Mapping[str, Any]
    binding: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.policy["metadata"]["name"])

    @property
    def spec(self) -> Mapping[str, Any]:
        return dict(self.policy.get("spec") or {})


def _refuse_unmodelled(bound: _Bound) -> None:
    constraints = bound.spec.get("matchConstraints") or {}
    for key in ("namespaceSelector", "objectSelector"):
        if constraints.get(key):
            raise Unsupported(f"{bound.name}: matchConstraints.{key} is not modelled offline")
    if constraints.get("excludeResourceRules"):
        raise Unsupported(f"{bound.name}: matchConstraints.excludeResourceRules is not modelled offline")
    if (bound.binding.get("spec") or {}).get("matchResources"):
        raise Unsupported(f"{bound.name}: the binding's matchResources is not modelled offline")
    for mutation in bound.spec.get("mutations") or ():
        if mutation.get("patchType") != "JSONPatch":
            raise Unsupported(f"{bound.name}: {mutation.get('patchType')} mutations are not modelled offline")


def _matches(bound: _Bound, operation: str, resource: Resource) -> bool:
    def has(values: Iterable[str], wanted: str) -> bool:
        return "*" in values or wanted in values

    for rule in (bound.spec.get("matchConstraints") or {}).get("resourceRules") or ():
        if (
            has(rule.get("operations") or (), operation)
            and has(rule.get("apiGroups") or (), resource.group)
            and has(rule.get("apiVersions") or (), resource.version)
            and has(rule.get("resources") or (), resource.plural)
        ):
            return True
    return False


class Admission:
    """The bound admission policies among ``documents`` (a policy without a binding is not enforced)."""

    def __init__(self, documents: Iterable[Mapping[str, Any]]) -> None:
        policies: dict[tuple[str, str], Mapping[str, Any]] = {}
        bindings: list[tuple[str, Mapping[str, Any]]] = []
        for doc in documents:
            kind = str(doc.get("kind", ""))
            if kind in ("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy"):
                policies[(kind, str(doc["metadata"]["name"]))] = doc
            elif kind in ("ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicyBinding"):
                bindings.append((kind.removesuffix("Binding"), doc))
        self.validating: list[_Bound] = []
        self.mutating: list[_Bound] = []
        for kind, binding in bindings:
            policy = policies.get((kind, str((binding.get("spec") or {}).get("policyName"))))
            if policy is None:
                continue
            bound = _Bound(policy, binding)
            _refuse_unmodelled(bound)
            (self.validating if kind == "ValidatingAdmissionPolicy" else self.mutating).append(bound)

    def mutate_create(
        self, obj: Mapping[str, Any], resource: Resource, user: UserInfo
    ) -> tuple[dict[str, Any], list[Violation]]:
        """The object after the matching MutatingAdmissionPolicies, and any refusal on the way."""
        current = copy.deepcopy(dict(obj))
        problems: list[Violation] = []
        for bound in self.mutating:
            if not _matches(bound, "CREATE", resource):
                continue
            activation = self._activation(bound, current, resource, user, None)
            applies, refused = self._applies(bound, activation)
            problems.extend(refused)
            if not applies:
                continue
            for mutation in bound.spec.get("mutations") or ():
                expression = str(mutation["jsonPatch"]["expression"])
                patches = evaluate(expression, activation)
                if isinstance(patches, CELEvalError) or not isinstance(patches, list):
                    problems.append(self._denied(bound, _failure(patches, expression) or "not a list"))
                    break
                try:
                    current = jsonpatch.apply_patch(current, [to_json(p) for p in patches])
                except (jsonpatch.JsonPatchException, JsonPointerException) as exc:
                    problems.append(self._denied(bound, f"JSON patch failed: {exc}"))
                    break
                activation = self._activation(bound, current, resource, user, None)
        return current, problems

    def validate_create(
        self, obj: Mapping[str, Any], resource: Resource, user: UserInfo, params: Sequence[Mapping[str, Any]]
    ) -> list[Violation]:
        """What the matching ValidatingAdmissionPolicies refuse about creating ``obj``."""
        problems: list[Violation] = []
        for bound in self.validating:
            if not _matches(bound, "CREATE", resource):
                continue
            selected = self._params(bound, obj, params)
            if selected is None:
                missing = "no params found for policy binding with `Deny` parameterNotFoundAction"
                problems.append(self._denied(bound, missing))
                continue
            for param in selected:
                activation = self._activation(bound, obj, resource, user, param)
                applies, refused = self._applies(bound, activation)
                problems.extend(refused)
                if not applies:
                    continue
                for check in bound.spec.get("validations") or ():
                    expression = str(check["expression"])
                    failure = _failure(evaluate(expression, activation), expression)
                    if failure is None:
                        continue
                    message = failure or _message(check, activation, f"failed expression: {expression}")
                    problems.append(self._denied(bound, message))
        return problems

    @staticmethod
    def _denied(bound: _Bound, message: str) -> Violation:
        kind = str(bound.policy.get("kind"))
        binding = str(bound.binding["metadata"]["name"])
        verdict = "denied request: " if kind.startswith("Validating") else ""
        return Violation("", f"{kind} '{bound.name}' with binding '{binding}' {verdict}{message}")

    @staticmethod
    def _params(
        bound: _Bound, obj: Mapping[str, Any], params: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any] | None] | None:
        """The params to evaluate against: [None] without paramKind, None when none is found and the
        binding says Deny, [] when none is found and it says Allow."""
        kind = bound.spec.get("paramKind")
        if not kind:
            return [None]
        ref = (bound.binding.get("spec") or {}).get("paramRef") or {}
        selector = ref.get("selector") or {}
        if selector.get("matchExpressions"):
            raise Unsupported(f"{bound.name}: paramRef.selector.matchExpressions is not modelled offline")
        namespace = ref.get("namespace") or (obj.get("metadata") or {}).get("namespace", "default")
        found: list[Mapping[str, Any] | None] = []
        for param in params:
            meta = param.get("metadata") or {}
            labels = meta.get("labels") or {}
            if (
                param.get("apiVersion") == kind.get("apiVersion")
                and param.get("kind") == kind.get("kind")
                and meta.get("namespace", "default") == namespace
                and ("name" not in ref or meta.get("name") == ref["name"])
                and all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
            ):
                found.append(param)
        if not found and ref.get("parameterNotFoundAction", "Deny") == "Deny":
            return None
        return found

    def _applies(self, bound: _Bound, activation: Mapping[str, Any]) -> tuple[bool, list[Violation]]:
        """Whether every matchCondition holds; a condition that fails to evaluate refuses the request
        (failurePolicy Fail)."""
        for condition in bound.spec.get("matchConditions") or ():
            expression = str(condition["expression"])
            failure = _failure(evaluate(expression, activation), expression)
            if failure == "":
                return False, []
            if failure is not None:
                return False, [self._denied(bound, failure)]
        return True, []

    @staticmethod
    def _activation(
        bound: _Bound,
        obj: Mapping[str, Any],
        resource: Resource,
        user: UserInfo,
        param: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        request = {
            "kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
            "resource": {"group": resource.group, "version": resource.version, "resource": resource.plural},
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "operation": "CREATE",
            "userInfo": user.cel(),
            "dryRun": False,
        }
        activation: dict[str, Any] = {
            "object": to_cel(dict(obj)),
            "oldObject": None,
            "request": to_cel(request),
            "params": to_cel(dict(param)) if param is not None else None,
        }
        values: dict[Any, Any] = {}
        for variable in bound.spec.get("variables") or ():
            activation["variables"] = celtypes.MapType(values)
            values[celtypes.StringType(variable["name"])] = evaluate(str(variable["expression"]), activation)
        activation["variables"] = celtypes.MapType(values)
        return activation
