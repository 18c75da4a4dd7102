"""People signed in to the admin or the browsable API: a scope through a Django permission, personal data clear
only with privacy.view_pii (audited as the person), never by being staff (issue 24, finding 4)."""
import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from privacy.models import AuditRecord
from profiles.models import CustomerProfile
from segments.models import Segment
from tags.models import TagDefinition
from tests.api.conftest import grant

pytestmark = pytest.mark.django_db

PHONE, BIRTH = "+8613912875634", dt.date(1980, 3, 23)


@pytest.fixture
def zhang():
    return CustomerProfile.objects.create(public_id="PZHANG", full_name="张伟", family_name="张", given_name="伟",
                                          phone=PHONE, email="zhang.wei@example.com", birth_date=BIRTH,
                                          address="北京市朝阳区建国路88号", city="北京市")


def signed_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def staff(*permissions: str):
    user = get_user_model().objects.create_user("marketer", password="x", is_staff=True)
    return grant(user, *permissions)


def test_being_staff_grants_no_api_scope(zhang):
    client = signed_in(staff())
    for url in ("/api/v1/profiles/", f"/api/v1/profiles/{zhang.public_id}/", "/api/v1/segments/",
                "/api/v1/feeds/batches/", "/api/v1/jobs/refresh/"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "scope" in response.json()["message"]
    assert not AuditRecord.objects.exists()


def test_staff_with_the_view_permission_reads_profiles_masked_and_unaudited(zhang):
    client = signed_in(staff("profiles.view_customerprofile"))
    body = client.get(f"/api/v1/profiles/{zhang.public_id}/").json()
    assert (body["full_name"], body["phone"], body["birth_date"]) == ("张*", "139****5634", "1980-**-**")
    assert PHONE not in client.get("/api/v1/profiles/").content.decode()
    assert not AuditRecord.objects.exists()


def test_staff_with_view_pii_reads_clear_and_each_read_is_audited_as_the_person(zhang):
    user = staff("profiles.view_customerprofile", "privacy.view_pii")
    body = signed_in(user).get(f"/api/v1/profiles/{zhang.public_id}/").json()
    assert (body["phone"], body["birth_date"]) == (PHONE, "1980-03-23")
    audit = AuditRecord.objects.get()
    assert (audit.user_id, audit.api_key_id, audit.profile_public_id) == (user.pk, None, zhang.public_id)
    assert {"phone", "birth_date"} <= set(audit.fields)


def test_a_write_scope_needs_its_permission(zhang):
    reader = signed_in(staff("segments.view_segment"))
    rule = {"field": "city", "op": "eq", "value": "北京市"}
    assert reader.get("/api/v1/segments/").status_code == 200
    assert reader.post("/api/v1/segments/", {"name": "B", "slug": "b", "rule": rule}, format="json").status_code == 403
    writer = signed_in(grant(get_user_model().objects.get(username="marketer"), "segments.change_segment"))
    assert writer.post("/api/v1/segments/", {"name": "B", "slug": "b", "rule": rule}, format="json").status_code == 201


def test_a_superuser_holds_every_permission_and_so_reads_clear(zhang):
    root = get_user_model().objects.create_superuser("root", password="x")
    assert signed_in(root).get(f"/api/v1/profiles/{zhang.public_id}/").json()["phone"] == PHONE
    assert AuditRecord.objects.get().user_id == root.pk


def test_the_admin_masks_the_birth_date_like_the_api_without_view_pii(client, zhang):
    client.force_login(staff("profiles.view_customerprofile"))
    page = client.get(f"/admin/profiles/customerprofile/{zhang.pk}/change/").content.decode()
    assert "1980-**-**" in page and "1980-03-23" not in page and "March 23, 1980" not in page
    assert "139****5634" in page and PHONE not in page and "建国路" not in page
    listing = client.get("/admin/profiles/customerprofile/").content.decode()
    assert zhang.public_id in listing and "March 23, 1980" not in listing and PHONE not in listing
    assert not AuditRecord.objects.exists()


def test_the_admin_shows_clear_values_with_view_pii_and_audits_the_page(client, zhang):
    user = staff("profiles.view_customerprofile", "privacy.view_pii")
    client.force_login(user)
    page = client.get(f"/admin/profiles/customerprofile/{zhang.pk}/change/").content.decode()
    assert "1980-03-23" in page and PHONE in page and "建国路88号" in page
    audit = AuditRecord.objects.get()
    assert (audit.user_id, audit.profile_public_id, audit.method) == (user.pk, zhang.public_id, "GET")
    assert set(audit.fields) == {"full_name", "family_name", "given_name", "birth_date", "phone", "email", "address"}


PHONE_RULE = {"all": [{"field": "phone", "op": "startswith", "value": PHONE[:-1]}, {"field": "city", "op": "eq",
                                                                                    "value": "北京市"}]}


def _admin_preview(client, rule):
    return client.post("/admin/segments/segment/preview/", json.dumps({"rule": rule}), content_type="application/json")


def test_the_admin_builder_refuses_a_search_by_a_personal_field_without_view_pii(zhang):
    marketer = signed_in(staff("segments.view_segment", "segments.add_segment", "tags.add_tagdefinition"))

    refused = _admin_preview(marketer, PHONE_RULE)
    saved = marketer.post("/admin/segments/segment/add/", {
        "name": "Phone guess", "slug": "phone-guess", "description": "", "kind": "rule", "status": "active",
        "refresh_every_minutes": "", "refresh_cron": "", "owner": "", "holdout_percent": "0",
        "rule": json.dumps(PHONE_RULE)})
    tagged = marketer.post("/admin/tags/tagdefinition/add/", {
        "code": "phone-guess", "name": "Phone guess", "category": "", "description": "", "kind": "rule",
        "rule": json.dumps(PHONE_RULE)})

    assert refused.status_code == 403 and "privacy.view_pii" in refused.json()["error"]
    assert PHONE not in refused.content.decode()
    assert saved.status_code == 200 and "privacy.view_pii" in saved.content.decode()  # the form again, with the error
    assert tagged.status_code == 200 and "privacy.view_pii" in tagged.content.decode()
    assert not Segment.objects.exists() and not TagDefinition.objects.filter(code="phone-guess").exists()
    # Rules on other fields preview as before.
    assert _admin_preview(marketer, {"field": "city", "op": "eq", "value": "北京市"}).json()["count"] == 1


def test_the_admin_builder_previews_a_search_by_a_personal_field_with_view_pii(zhang):
    marketer = signed_in(staff("segments.view_segment", "privacy.view_pii"))

    assert _admin_preview(marketer, PHONE_RULE).json()["count"] == 1
