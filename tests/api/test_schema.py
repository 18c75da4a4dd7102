from io import StringIO

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_generates_without_warnings_and_validates():
    out = StringIO()
    # --fail-on-warn turns every warning and error of the generator into a failure; --validate checks OpenAPI 3.
    call_command("spectacular", "--fail-on-warn", "--validate", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer cdp_<prefix>_<secret>`"}
