"""Authentication, scopes, keys and throttling, on any endpoint."""
import json
import re
from datetime import timedelta
from io import StringIO

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from api import throttling
from api.apps import check_api_rate
from api.keys import api_key_verify, api_keys_revoke
from api.models import ApiKey
from api.rates import parse_rate

pytestmark = pytest.mark.django_db


def _api_urls(resolver=None, namespace=None):
    """Every URL pattern under /api/, reversed with placeholder arguments."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _api_urls(entry, entry.namespace or namespace)
        elif isinstance(entry, URLPattern) and entry.name:
            name = f"{namespace}:{entry.name}" if namespace else entry.name
            for placeholder in ("x", "1"):
                kwargs = {k: ("json" if k == "format" else placeholder) for k in entry.pattern.regex.groupindex}
                try:
                    url = reverse(name, kwargs=kwargs)
                except NoReverseMatch:
                    continue
                if url.startswith("/api/"):
                    yield url
                break


API_URLS = sorted(set(_api_urls()))


def test_the_api_has_urls():
    assert "/api/schema/" in API_URLS and "/api/docs/" in API_URLS


@pytest.mark.parametrize("url", API_URLS)
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_every_api_url_requires_authentication(url, method):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401, (method, url, response.status_code)
    if url not in ("/api/docs/", "/api/redoc/"):  # HTML pages; the schema answers in YAML, a superset of JSON
        assert yaml.safe_load(response.content)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("url", API_URLS)
def test_a_non_staff_session_is_not_authentication(url):
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("clerk", password="x"))
    assert client.get(url).status_code == 401


def test_a_wrong_revoked_or_expired_key_is_refused(api_client):
    client = api_client(scopes=["profiles:read"])
    assert client.get("/api/schema/").status_code == 200

    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION=client.key[:-3] + "abc")
    assert wrong.get("/api/schema/").status_code == 401
    for garbage in ("Bearer", "Bearer a b", "Bearer cdp__x", "Bearer cdp_\x00\x00_x", "Bearer cdp_0000000g_x",
                    "Bearer \u00e9t\u00e9", "Bearer " + "x" * 5000):
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=garbage)
        assert c.get("/api/schema/").status_code == 401, garbage

    assert api_keys_revoke(ids=[client.api_key.pk]) == 1
    assert client.get("/api/schema/").status_code == 401

    expired = api_client(scopes=["profiles:read"], expires_at=timezone.now() - timedelta(seconds=1))
    assert expired.get("/api/schema/").status_code == 401


def test_a_verified_key_is_read_once_and_every_change_through_the_platform_applies_at_once(api_client, admin_client):
    client = api_client(scopes=["profiles:read"])
    client.get("/api/schema/")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/profiles/").status_code == 200
    assert not [q for q in queries.captured_queries if "api_apikey" in q["sql"]]  # from the verification cache

    # Scopes edited in the admin and a revocation apply on the next request, cached or not.
    admin_client.post(f"/admin/api/apikey/{client.api_key.pk}/change/",
                      {"name": client.api_key.name, "scopes": ["segments:read"], "rate": ""})
    assert client.get("/api/v1/profiles/").status_code == 403
    assert client.get("/api/v1/segments/").status_code == 200
    api_keys_revoke(ids=[client.api_key.pk])
    assert client.get("/api/v1/segments/").status_code == 401


def test_a_key_deleted_in_the_admin_is_refused_at_once(api_client, admin_client):
    client = api_client(scopes=["profiles:read"])
    assert client.get("/api/v1/profiles/").status_code == 200  # now in the verification cache
    response = admin_client.post(f"/admin/api/apikey/{client.api_key.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not ApiKey.objects.filter(pk=client.api_key.pk).exists()
    assert client.get("/api/v1/profiles/").status_code == 401


def test_without_the_cache_a_change_made_elsewhere_applies_at_once(api_client, settings):
    # Another process revoking the key writes only the database; with caching off nothing stands in between.
    settings.CDP_API_KEY_CACHE_SECONDS = 0
    client = api_client(scopes=["profiles:read"])
    assert client.get("/api/schema/").status_code == 200
    ApiKey.objects.filter(pk=client.api_key.pk).update(revoked_at=timezone.now())
    assert client.get("/api/schema/").status_code == 401


def test_only_a_hash_of_the_key_is_stored_and_use_is_recorded(api_client):
    client = api_client(scopes=["profiles:read"])
    row = ApiKey.objects.get(pk=client.api_key.pk)
    assert client.key not in (row.key_hash, row.prefix) and row.prefix in client.key
    assert row.last_used_at is None
    client.get("/api/schema/")
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_create_api_key_command_prints_a_working_key_once():
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "--name", "mobile-app", "--scopes", "profiles:read,segments:read",
                 "--expires-in-days", "30", stdout=out, stderr=err)
    key = out.getvalue().strip()
    api_key = api_key_verify(key)
    assert api_key.name == "mobile-app"
    assert api_key.scopes == ["profiles:read", "segments:read"]
    assert timedelta(days=29) < api_key.expires_at - timezone.now() <= timedelta(days=30)
    assert key not in err.getvalue()


def test_create_api_key_refuses_an_unknown_scope():
    with pytest.raises(Exception, match="unknown scope"):
        call_command("create_api_key", "--name", "x", "--scopes", "profiles:everything", stdout=StringIO())
    assert not ApiKey.objects.exists()


class Clock:
    """The throttle's clock, set by the test: a fixed window never turns over in the middle of a test."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1_800_000_010.0)  # 10 s into a minute (and into an hour: 1,800,000,000 is a multiple of 3,600)
    monkeypatch.setattr(throttling, "time", clock)
    return clock


def test_throttling_answers_429_with_retry_after(api_client, clock):
    client = api_client(scopes=["profiles:read"], rate="3/min")
    other = api_client(scopes=["profiles:read"], rate="3/min")
    assert [client.get("/api/v1/profiles/").status_code for _ in range(3)] == [200, 200, 200]
    response = client.get("/api/v1/profiles/")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert response["Retry-After"] == "50"  # the window ends 50 s later
    assert other.get("/api/v1/profiles/").status_code == 200  # per key

    clock.now += 49.5
    assert client.get("/api/v1/profiles/").status_code == 429
    clock.now += 0.5  # the next minute: a new window
    assert [client.get("/api/v1/profiles/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_default_rate_comes_from_the_setting(api_client, settings, clock):
    settings.CDP_API_RATE = "2/h"
    client = api_client(scopes=["profiles:read"])
    assert [client.get("/api/schema/").status_code for _ in range(3)] == [200, 200, 429]
    clock.now += 3600
    assert client.get("/api/schema/").status_code == 200


def test_request_id_is_echoed_or_generated(api_client):
    client = api_client(scopes=["profiles:read"])
    assert client.get("/api/schema/", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    generated = client.get("/api/schema/", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_a_key_decides_even_beside_a_staff_session(staff_client):
    staff_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")
    assert staff_client.get("/api/v1/profiles/").status_code == 401


def test_a_staff_session_writing_to_the_api_needs_its_csrf_token(staff_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = client.post("/api/v1/tags/", {"code": "vip", "name": "VIP"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["message"]


def test_a_bearer_header_does_not_switch_off_csrf_outside_the_api(staff_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.post("/admin/logout/", HTTP_AUTHORIZATION="Bearer anything").status_code == 403
    assert client.get("/admin/", HTTP_AUTHORIZATION="Bearer anything").status_code == 200  # the session still counts


def test_the_response_format_follows_accept_and_format(api_client):
    client = api_client(scopes=["profiles:read"])
    assert client.get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")  # the first renderer
    assert client.get("/api/schema/", HTTP_ACCEPT="*/*")["Content-Type"].startswith("application/vnd.oai.openapi")
    for as_json in (client.get("/api/schema/", HTTP_ACCEPT="application/json"), client.get("/api/schema/?format=json")):
        assert "json" in as_json["Content-Type"] and json.loads(as_json.content)["openapi"].startswith("3.")
    assert client.get("/api/v1/profiles/", HTTP_ACCEPT="text/html")["Content-Type"].startswith("text/html")
    assert client.get("/api/v1/profiles/", HTTP_ACCEPT="image/png").status_code == 406


def test_staff_session_reads_the_docs(staff_client):
    for url in ("/api/docs/", "/api/redoc/"):
        response = staff_client.get(url)
        assert response.status_code == 200
        # Bundled assets, no CDN.
        assert b"drf_spectacular_sidecar" in response.content and b"cdn.jsdelivr" not in response.content


@pytest.mark.parametrize("rate,expected", [("100/s", (100, 1)), ("6000/min", (6000, 60)), ("5/hour", (5, 3600)),
                                           ("100/10s", (100, 10)), ("1/d", (1, 86400))])
def test_rates(rate, expected):
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "fast", "100", "100/x", "100/0s", "-1/s", "١٠٠/s"])
def test_bad_rates_are_refused_before_they_reach_a_request(rate, settings):
    with pytest.raises(ValueError):
        parse_rate(rate)
    settings.CDP_API_RATE = rate
    assert [e.id for e in check_api_rate()] == ["api.E001"]
    if rate:
        with pytest.raises(Exception, match="bad rate"):
            call_command("create_api_key", "--name", "x", "--scopes", "jobs:read", f"--rate={rate}", stdout=StringIO())
