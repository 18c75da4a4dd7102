from tests.tags.conftest import make_profile  # noqa: F401  (shared fixture)
