"""Client side of kubepam for CI jobs and people: get a workload ID token from the CI system, talk to
the broker. Synchronous and dependency-light; not part of the operator's layers."""
