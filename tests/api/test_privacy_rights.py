"""/api/v1/privacy/subjects/{id}/: subject access and erasure need the scope privacy:rights (a person also needs the
Django permission); access is audited, erasure logged; bad input is a JSON 400."""
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from privacy.models import AuditRecord, ErasureLog
from profiles.models import CustomerProfile, FeedBatch, Source, SourceRecord

pytestmark = pytest.mark.django_db

RIGHTS = "privacy:rights"


@pytest.fixture
def ann():
    profile = CustomerProfile.objects.create(public_id="PRIGHTS1", full_name="李安", phone="+8613812875678",
                                             record_count=1)
    core = Source.objects.get(code="core")
    batch = FeedBatch.objects.create(source=core, file_name="core.csv", status=FeedBatch.Status.SUCCEEDED)
    SourceRecord.objects.create(source=core, customer_key="CIF1", profile=profile, row_digest="x", first_batch=batch,
                                last_batch=batch, loaded_at=timezone.now(), needs_resolution=False,
                                full_name="李安", phone="+8613812875678")
    return profile


def test_subject_access_with_the_scope_returns_everything_and_audits_the_key(api_client, ann):
    client = api_client(scopes=[RIGHTS])

    response = client.get(f"/api/v1/privacy/subjects/{ann.public_id}/")

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["profile"]["phone"] == "+8613812875678"
    assert [(r["source__code"], r["customer_key"]) for r in body["source_records"]] == [("core", "CIF1")]
    audit = AuditRecord.objects.get(profile_public_id=ann.public_id)
    assert audit.api_key_id == client.api_key.pk and "phone" in audit.fields


def test_personal_data_scope_does_not_open_the_rights(api_client, ann):
    client = api_client(scopes=["profiles:read", "profiles:read_pii", "profiles:write"])

    assert client.get(f"/api/v1/privacy/subjects/{ann.public_id}/").status_code == 403
    assert client.post(f"/api/v1/privacy/subjects/{ann.public_id}/erase/", {"reason": "x"},
                       format="json").status_code == 403
    assert CustomerProfile.objects.filter(pk=ann.pk).exists() and not AuditRecord.objects.exists()


def test_erase_needs_a_reason_then_erases_and_logs_the_key(api_client, ann):
    client = api_client(scopes=[RIGHTS])
    url = f"/api/v1/privacy/subjects/{ann.public_id}/erase/"

    missing = client.post(url, {}, format="json")
    blank = client.post(url, {"reason": "  "}, format="json")
    assert (missing.status_code, blank.status_code) == (400, 400) and "reason" in missing.json()["details"]
    assert CustomerProfile.objects.filter(pk=ann.pk).exists()

    response = client.post(url, {"reason": "DSR-2026-7"}, format="json")

    assert response.status_code == 200
    assert response.json()["counts"]["source_records"] == 1
    assert ErasureLog.objects.get().erased_by == f"api:{client.api_key}"
    assert not CustomerProfile.objects.filter(pk=ann.pk).exists()
    assert client.get(f"/api/v1/privacy/subjects/{ann.public_id}/").status_code == 404


def test_staff_need_the_django_permission(staff_client, staff_user, ann):
    url = f"/api/v1/privacy/subjects/{ann.public_id}/"
    assert staff_client.get(url).status_code == 403
    assert staff_client.post(url + "erase/", {"reason": "DSR-1"}, format="json").status_code == 403

    staff_user.user_permissions.add(Permission.objects.get(codename="subject_access"))

    assert staff_client.get(url).status_code == 200
    assert AuditRecord.objects.get().user_id == staff_user.pk
    assert staff_client.post(url + "erase/", {"reason": "DSR-1"}, format="json").status_code == 403
    assert CustomerProfile.objects.filter(pk=ann.pk).exists()
