"""e2e fixtures: the session's control plane (`plane`) and operator (`operator`) live in tests/conftest.py,
so tests/e2e/ and tests/security/ share one of each in a session; the web console (`console`) lives in
tests/e2e/console_world.py."""

from tests.e2e.console_world import console  # noqa: F401  (the console fixture, session-wide)
