"""Admin for API keys (key shown once, revoke) and audit records (read-only)."""
import re

import pytest
from django.contrib.auth import get_user_model

from api.keys import api_key_create, api_key_verify
from api.models import ApiKey
from privacy.models import AuditRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    return client


def test_adding_a_key_shows_it_once(admin_client):
    response = admin_client.post("/admin/api/apikey/add/", {
        "name": "call-centre", "scopes": ["profiles:read", "profiles:write"], "rate": "50/s", "expires_in_days": "7",
    }, follow=True)
    assert response.status_code == 200
    shown = re.search(r"cdp_[0-9a-f]{8}_[A-Za-z0-9_\-]+", response.content.decode())
    api_key = api_key_verify(shown.group(0))
    assert (api_key.name, api_key.scopes, api_key.rate) == ("call-centre", ["profiles:read", "profiles:write"], "50/s")
    assert api_key.created_by == "root" and api_key.expires_at is not None
    change_page = admin_client.get(f"/admin/api/apikey/{api_key.pk}/change/").content.decode()
    assert shown.group(0) not in change_page and api_key.prefix in change_page


def test_revoke_action(admin_client):
    api_key, key = api_key_create(name="old", scopes=["jobs:read"])
    admin_client.post("/admin/api/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert api_key_verify(key) is None


def test_audit_records_are_read_only_and_searchable_by_profile(admin_client):
    AuditRecord.objects.create(profile_public_id="PAAA", fields=["phone"], request_id="r1", method="GET", path="/x")
    AuditRecord.objects.create(profile_public_id="PBBB", fields=["email"], request_id="r2", method="GET", path="/x")
    page = admin_client.get("/admin/privacy/auditrecord/?q=PAAA").content.decode()
    assert "PAAA" in page and "PBBB" not in page
    assert admin_client.get("/admin/privacy/auditrecord/add/").status_code == 403
    record = AuditRecord.objects.get(profile_public_id="PAAA")
    admin_client.post(f"/admin/privacy/auditrecord/{record.pk}/change/", {"fields": '["x"]'})
    admin_client.post(f"/admin/privacy/auditrecord/{record.pk}/delete/", {"post": "yes"})
    assert AuditRecord.objects.get(pk=record.pk).fields == ["phone"]
