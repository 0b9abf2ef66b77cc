"""Thin kopf glue, one module per kind, plus the broker's HTTP routes and the operator's runtime.

Importing this package registers every handler with kopf's default registry.
"""

from kubepam.handlers import (  # noqa: F401  (imported for their kopf registrations)
    accesspolicy,
    accessrecord,
    certificaterequests,
    checkout,
    checkoutpolicy,
    jitaccount,
    observed,
    project,
    runtime,
    server,
    workloadconnection,
    workloadrole,
)
