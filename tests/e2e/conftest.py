"""e2e fixtures: the session's control plane (`plane`) and operator (`operator`) live in tests/conftest.py,
so tests/e2e/ and tests/security/ share one of each in a session."""
