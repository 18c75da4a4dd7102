"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): no input may produce a 5xx.

The schema is generated in-process from the code (drf-spectacular), so every endpoint that is documented is fuzzed,
and requests go to the WSGI app directly. The caller holds every scope, so each operation gets past the permission
check into the view; one profile and one manual tag exist so that some generated requests reach real rows.
"""
import pytest
from django.core import signals
from django.db import close_old_connections
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.models import Scope
from cdp.wsgi import application
from tags.models import TagDefinition
from profiles.models import CustomerProfile

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


@pytest.fixture
def wsgi_app():
    """The real WSGI handler, but, as in Django's test client, without closing the test's database connection at
    the end of each request (that would end the test's transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def all_scopes_key(api_client, settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path  # generated uploads land in the test's own folder
    CustomerProfile.objects.create(public_id="PFUZZ0000001", full_name="张三", phone="+8613812345678")
    TagDefinition.objects.create(code="vip", name="VIP", kind=TagDefinition.Kind.MANUAL)
    return api_client(scopes=list(Scope.values)).key


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_generated_request_gets_a_server_error(case, wsgi_app, all_scopes_key):
    case.call_and_validate(app=wsgi_app, headers={"Authorization": f"Bearer {all_scopes_key}"},
                           checks=[not_a_server_error])
