"""Developer tooling: a real local Kubernetes control plane for tests and the demo (not operator code)."""
