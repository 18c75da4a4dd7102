from tests.api.conftest import _fresh_rate_counters, api_client  # noqa: F401  (shared fixtures)
from tests.tags.conftest import make_profile  # noqa: F401  (shared fixture)
