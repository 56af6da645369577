"""Fixtures of the API tests: the Kustomer sandbox (a real HTTP server)."""

from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture for tests/api)
