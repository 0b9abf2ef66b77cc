"""Where privileged groups may be bound: JIT accounts and elevations of Kubernetes shared accounts bind
ClusterRoles in the namespaces their settings name, never in the project's own namespace, which holds
the CA keys, the backend admin Secrets and every shared-account password (an `edit` there reads them).
"""

from __future__ import annotations

from collections.abc import Sequence


def privileged_namespaces_problem(field: str, namespaces: Sequence[str], home: str) -> str:
    """Why these namespaces cannot receive privileged bindings ('' when they can)."""
    if not namespaces:
        return f"{field}: name the namespaces where the privileged groups apply"
    if home in namespaces:
        return (
            f"{field} must not include {home}: it holds the project's CA keys, admin Secrets and "
            "shared-account passwords, which these groups could read"
        )
    return ""
