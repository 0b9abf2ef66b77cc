"""The kubepam API: group, version and the kinds with their plural names."""

from __future__ import annotations

GROUP = "kubepam.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

PLURALS: dict[str, str] = {
    "WorkloadConnection": "workloadconnections",
    "WorkloadRole": "workloadroles",
    "AccessPolicy": "accesspolicies",
    "Project": "projects",
    "Server": "servers",
    "CheckoutPolicy": "checkoutpolicies",
    "Checkout": "checkouts",
    "JitAccount": "jitaccounts",
    "SSHCertificateRequest": "sshcertificaterequests",
    "X509CertificateRequest": "x509certificaterequests",
}

# Kinds only the operator writes: history records (no examples, no status; see domain/records.py).
RECORD_PLURALS: dict[str, str] = {"AccessRecord": "accessrecords"}
