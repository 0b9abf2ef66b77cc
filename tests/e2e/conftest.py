"""e2e fixtures: the session's control plane (`plane`) and operator (`operator`) live in tests/conftest.py,
so tests/e2e/ and tests/security/ share one of each in a session; the web console (`console`) lives in
tests/e2e/console_world.py."""

import pytest

from tests.e2e.console_world import console  # noqa: F401  (the console fixture, session-wide)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The audit-trail secret grep reads what every other test made the operator write: it runs last
    (also after tests/security/, which shares the session's operator)."""
    last = [item for item in items if item.path.name == "test_zz_audit_secrets.py"]
    items[:] = [item for item in items if item.path.name != "test_zz_audit_secrets.py"] + last
