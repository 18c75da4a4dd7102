from tests.tags.conftest import make_profile, make_record  # noqa: F401  (shared fixtures)
