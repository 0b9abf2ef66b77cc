"""Security tests act on the real control plane as people the rest of the suite never uses (mallory,
victor, dana, april, sonia); they share the session's `plane` and `operator` from tests/conftest.py."""
