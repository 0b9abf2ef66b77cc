"""`kubepam agent`: runs on an enrolled server and manages its own local accounts, sshd trust and login
audit from the broker's desired state (docs/agent-protocol.md). It holds no authority: it imports neither
kopf nor the Kubernetes client nor the operator's services (checked by import-linter)."""
