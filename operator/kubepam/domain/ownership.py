"""Names of the objects the operator derives, and the rule that says whether an object is provably ours.

Every Secret, Role, RoleBinding and ServiceAccount kubepam derives from one of its objects is named
from a fixed purpose and the owning object's uid (``kubepam-<purpose>-<readable name>-<uid>``): a uid
is unique and chosen by the API server, so no name a person picks for another object can reach it,
and two purposes of one object never meet. The readable part is only for people; the uid decides.

An existing object is ours only if it carries kubepam's managed-by label *and* points at the owner's
uid (an ownerReference, or the owner-uid label where an ownerReference cannot cross namespaces). The
operator refuses to adopt, replace or delete anything else (:class:`ForeignObject`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_UID = "kubepam.io/owner-uid"
OWNER_KIND = "kubepam.io/owner-kind"
OWNER_NAME = "kubepam.io/owner-name"
_SLUG = re.compile(r"[^a-z0-9-]+")
READABLE_MAX = 40


class ForeignObject(Exception):
    """An object exists under a name kubepam derives, but kubepam did not make it for this owner."""

    def __init__(self, kind: str, namespace: str, name: str, owner: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(
            f"refusing to adopt, replace or delete {kind} {namespace}/{name}: it was not created by kubepam "
            f"for {owner} (no {MANAGED_BY}=kubepam label and ownerReference to its uid)"
        )


def slug(text: str, limit: int = READABLE_MAX) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-") or "x"


def derived_name(purpose: str, name: str, uid: str) -> str:
    """``kubepam-<purpose>-<name>-<uid>``: unique per owner and purpose, whatever names people choose."""
    if not uid:
        raise ValueError(f"cannot derive a {purpose} name for {name!r} without its uid")
    return f"kubepam-{purpose}-{slug(name)}-{uid}"


def qualified(base: str, part: str) -> str:
    """``base`` plus a readable, collision-free suffix for ``part`` (e.g. one RoleBinding per role)."""
    digest = hashlib.sha256(part.encode()).hexdigest()[:12]
    return f"{base}-{slug(part, 30)}-{digest}"[:253]


def owner_labels(kind: str, name: str, uid: str) -> dict[str, str]:
    labels = {MANAGED_BY: "kubepam", OWNER_UID: uid, OWNER_KIND: kind.lower()}
    readable = slug(name, 63)
    if readable == name:  # label values are at most 63 characters of [a-z0-9-]
        labels[OWNER_NAME] = name
    return labels


def provably_ours(labels: Mapping[str, str], owner_uids: Iterable[str], uid: str) -> bool:
    """Managed by kubepam and tied to this owner's uid (ownerReference, or the owner-uid label)."""
    if not uid or labels.get(MANAGED_BY) != "kubepam":
        return False
    return uid in set(owner_uids) or labels.get(OWNER_UID) == uid
