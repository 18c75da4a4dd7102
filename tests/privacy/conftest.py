from tests.api.conftest import _fresh_rate_counters, api_client  # noqa: F401  (shared fixtures)
