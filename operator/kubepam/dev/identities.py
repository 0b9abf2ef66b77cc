"""The people and programs of the local control plane, one token and one kubeconfig each.

``operator`` authenticates with the exact username and groups of the operator's ServiceAccount, so it
holds only the RBAC that manifests/ grants that ServiceAccount, and every admission policy that names
the operator applies to it exactly as in a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATOR_NAMESPACE = "kubepam-system"
OPERATOR_SERVICE_ACCOUNT = "kubepam-operator"
OPERATOR_USERNAME = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"


@dataclass(frozen=True)
class Identity:
    name: str  # kubeconfig file name: <name>.kubeconfig
    username: str
    groups: tuple[str, ...]


IDENTITIES: tuple[Identity, ...] = (
    Identity("admin", "admin", ("system:masters",)),
    Identity(
        "operator",
        OPERATOR_USERNAME,
        ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}"),
    ),
    Identity("devops", "devops", ("kubepam:devops-admins",)),
    Identity("secadmin", "secadmin", ("kubepam:security-admins",)),
    Identity("approver", "approver", ("kubepam:approvers",)),
    Identity("alice", "alice", ("kubepam:users",)),
    Identity("bob", "bob", ("kubepam:users",)),
    # People only tests/security/ acts as: an attacker among the users, a victim, a DevOps admin who
    # tries to reach credentials, a second approver and a second security admin.
    Identity("mallory", "mallory", ("kubepam:users",)),
    Identity("victor", "victor", ("kubepam:users",)),
    Identity("dana", "dana", ("kubepam:devops-admins",)),
    Identity("april", "april", ("kubepam:approvers",)),
    Identity("sonia", "sonia", ("kubepam:security-admins",)),
    Identity("controller-manager", "system:kube-controller-manager", ("system:masters",)),
)
