"""The API's smoke path as a newcomer runs it: a key from the command, then list, retrieve, lookup and preview,
and the same key after its cache entry expires.

It runs on the suite's database (PostgreSQL) and, through `test_the_smoke_path_passes_on_sqlite`, again on SQLite,
the embedded default of `bin/demo`, so the two cannot drift apart.
"""
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from api.keys import LAST_USED_RESOLUTION
from api.models import ApiKey
from profiles.feeds import feed_load
from profiles.resolution import identity_resolve
from tests.factories import customer

PROJECT_DIR = Path(__file__).resolve().parents[2]
ON_SQLITE = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


@pytest.fixture
def loaded(db, write_feed):
    """Two customers loaded from a core feed and resolved into profiles, as bin/demo does."""
    feed = write_feed([
        customer("CIF001", full_name="张伟", gender="M", birth_date="1980-01-01", phone="13912875634",
                 email="zhang.wei@example.com", city="上海市"),
        customer("CIF002", full_name="李娜", gender="F", birth_date="1990-05-06", phone="13700002222", city="北京市"),
    ])
    assert feed_load(source="core", path=feed).status == "succeeded"
    identity_resolve()


def _client_with_new_key(scopes: str) -> Client:
    out = StringIO()
    call_command("create_api_key", "--name", "smoke", "--scopes", scopes, stdout=out, stderr=StringIO())
    # A live client: errors answer as a server would, not as exceptions raised into the test.
    return Client(HTTP_AUTHORIZATION=f"Bearer {out.getvalue().strip()}", raise_request_exception=False)


def _json(response, status: int = 200) -> dict:
    assert response["Content-Type"] == "application/json", (response.status_code, response.content[:300])
    assert response.status_code == status, response.json()
    return response.json()


def test_list_retrieve_lookup_and_preview_with_a_new_key(loaded):
    client = _client_with_new_key("profiles:read,profiles:read_pii,segments:read")  # a lookup by phone needs read_pii

    listed = _json(client.get("/api/v1/profiles/"))["results"]
    assert sorted(p["city"] for p in listed) == ["上海市", "北京市"]
    zhang = next(p for p in listed if p["city"] == "上海市")
    retrieved = _json(client.get(f"/api/v1/profiles/{zhang['id']}/"))
    by_key = _json(client.get("/api/v1/profiles/lookup/?source=core&key=CIF001"))
    by_phone = _json(client.post("/api/v1/profiles/lookup/", {"phone": "13912875634"},
                                 content_type="application/json"))
    preview = _json(client.post("/api/v1/segments/preview/",
                                {"rule": {"field": "gender", "op": "eq", "value": "F"}},
                                content_type="application/json"))

    assert retrieved["id"] == by_key["id"] == by_phone["id"] == zhang["id"]
    assert preview["count"] == 1 and preview["sample"][0]["city"] == "北京市"


def test_retrieve_and_lookup_give_the_timestamps_the_list_gives(loaded):
    client = _client_with_new_key("profiles:read")

    listed = _json(client.get("/api/v1/profiles/?city=上海市"))["results"][0]
    retrieved = _json(client.get(f"/api/v1/profiles/{listed['id']}/"))
    looked_up = _json(client.get("/api/v1/profiles/lookup/?source=core&key=CIF001"))

    for answer in (retrieved, looked_up):
        assert (answer["created_at"], answer["updated_at"]) == (listed["created_at"], listed["updated_at"])
    # In the local time zone (Asia/Shanghai), as every timestamp of the API.
    assert listed["created_at"].endswith("+08:00")


def test_a_key_keeps_working_after_its_cache_entry_expires(loaded):
    client = _client_with_new_key("profiles:read")
    assert _json(client.get("/api/v1/profiles/"))  # verifies the key from the database and caches it

    cache.clear()  # the cache entry expires (CDP_API_KEY_CACHE_SECONDS): the key is read from the database again
    assert _json(client.get("/api/v1/profiles/"))

    # Later still: last_used_at, as read back from the database, is old enough to be written again.
    stale = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiKey.objects.update(last_used_at=stale)
    cache.clear()
    assert _json(client.get("/api/v1/profiles/lookup/?source=core&key=CIF002"))
    assert ApiKey.objects.get().last_used_at > stale


def test_an_unexpected_error_answers_500_in_json(loaded, monkeypatch):
    client = _client_with_new_key("profiles:read")

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("api.profiles.views.profile_get_by_source_key", broken)
    body = _json(client.get("/api/v1/profiles/lookup/?source=core&key=CIF001"), status=500)

    assert body["code"] == "server_error" and "boom" not in str(body)


def test_an_error_outside_the_views_answers_500_in_json_under_api_only(db, monkeypatch):
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr("api.middleware.carries_api_key", broken)  # a middleware every request passes
    client = Client(raise_request_exception=False)

    assert _json(client.get("/api/v1/profiles/"), status=500)["code"] == "server_error"
    assert client.get("/admin/login/").status_code == 500  # Django's own page elsewhere


@pytest.mark.skipif(ON_SQLITE, reason="this is the run on SQLite")
def test_the_smoke_path_passes_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'cdp.sqlite3'}", CDP_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "5 passed, 1 skipped" in result.stdout, result.stdout[-2000:]
