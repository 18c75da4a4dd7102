"""The session-user half of the masking walk: every admin page that shows a profile or its records, opened by staff
without privacy.view_pii, holds no clear personal value of the loaded feeds; with it, the values and an audit record
per page (issue 24, build 1 and 2)."""
import datetime as dt
import html
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from privacy.models import AuditRecord
from profiles.feeds import feed_load
from profiles.models import Consent, CustomerProfile, PossibleDuplicate, SourceRecord
from profiles.resolution import identity_resolve
from segments.models import Segment
from segments.services import segment_refresh, segment_save
from tests.api.conftest import grant
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db

PERSONAL = ("full_name", "phone", "email", "address", "birth_date")
RULE = {"all": [{"field": "city", "op": "eq", "value": "上海市"}] + [
    {"field": name, "op": "is_not_null"} for name in PERSONAL]}
READER_PERMISSIONS = ("profiles.view_customerprofile", "profiles.view_sourcerecord", "profiles.view_possibleduplicate",
                      "segments.view_segment", "tags.view_tagassignment", "privacy.export_members")


@pytest.fixture
def loaded(write_feed):
    """Two sources, one person in both (one profile of two records), two more people; a pair left for review."""
    core = [
        customer("C1", full_name="张伟明", gender="M", birth_date="1980-03-23", id_type="CN_RESIDENT",
                 id_number=cn_resident_id(dt.date(1980, 3, 23)), phone="13912875634", email="zhang.wm@example.com",
                 address="上海市浦东新区世纪大道100号", city="上海市", postcode="200120"),
        customer("C2", full_name="李秀英", gender="F", birth_date="1975-11-02", phone="13600436658",
                 email="li.xy@example.com", address="上海市徐汇区漕溪北路18号", city="上海市", postcode="200030"),
    ]
    card = [
        customer("K1", full_name="Zhang Weiming", birth_date="1980-03-23", id_type="CN_RESIDENT",
                 id_number=cn_resident_id(dt.date(1980, 3, 23)), phone="+86 139-1287-5634",
                 email="weiming.zhang@example.org", address="上海市浦东新区世纪大道100号1201室", city="上海市"),
        customer("K2", full_name="Wang Fangfang", birth_date="1992-07-14", phone="13788990011",
                 email="wang.ff@example.net", address="上海市静安区南京西路1266号", city="上海市"),
    ]
    for source, rows in (("core", core), ("card", card)):
        batch = feed_load(source=source, path=write_feed(rows))
        assert batch.status == "succeeded" and batch.rows_rejected == 0
    identity_resolve()
    records = list(SourceRecord.objects.order_by("pk"))
    PossibleDuplicate.objects.create(record_a=records[1], record_b=records[3], probability=0.5, evidence={})
    for profile in CustomerProfile.objects.filter(status="active"):
        Consent.objects.create(profile=profile, channel="sms", granted=True, source="app", updated_at=timezone.now())
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=RULE))
    segment_refresh(segment=segment)
    return Segment.objects.get(pk=segment.pk)


def clear_values() -> set[str]:
    """Every personal value the feeds left in profiles and records, as stored and, for a phone, as dialled."""
    values = set()
    for model in (CustomerProfile, SourceRecord):
        for row in model.objects.values(*PERSONAL):
            for name, value in row.items():
                if value:
                    values.add(value.isoformat() if isinstance(value, dt.date) else value)
                    if name == "phone" and value.startswith("+86"):
                        values.add(value[3:])
    assert len(values) > 15
    return values


def pages(client, segment) -> dict[str, str]:
    """Each admin page that shows a profile, its records or members, by name; its body as text."""
    urls = {"profiles": reverse("admin:profiles_customerprofile_changelist"),
            "records": reverse("admin:profiles_sourcerecord_changelist"),
            "review": reverse("admin:profiles_possibleduplicate_changelist"),
            "tagged": reverse("admin:tags_tagassignment_changelist"),
            "members": reverse("admin:segments_segment_members", args=[segment.pk])}
    for profile in CustomerProfile.objects.all():  # the change page holds lineage, timeline and records
        urls[f"profile {profile.public_id}"] = reverse("admin:profiles_customerprofile_change", args=[profile.pk])
        urls[f"explain {profile.public_id}"] = (reverse("admin:segments_segment_explain", args=[segment.pk])
                                                + f"?profile={profile.public_id}")
    for record in SourceRecord.objects.all():
        urls[f"record {record}"] = reverse("admin:profiles_sourcerecord_change", args=[record.pk])
    for duplicate in PossibleDuplicate.objects.all():
        urls[f"review {duplicate.pk}"] = reverse("admin:profiles_possibleduplicate_change", args=[duplicate.pk])
    bodies = {}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, name
        bodies[name] = response.content.decode()
    export = client.get(reverse("admin:segments_segment_export", args=[segment.pk]), {"channel": "sms"})
    bodies["export"] = b"".join(export.streaming_content).decode()
    preview = client.post(reverse("admin:segments_segment_preview"), json.dumps({"rule": RULE}),
                          content_type="application/json")
    bodies["preview"] = preview.content.decode()
    # JSON escapes non-ASCII and HTML escapes markup: read each body as a person would see it.
    return {name: html.unescape(json.dumps(json.loads(body), ensure_ascii=False) if body.startswith("{") else body)
            for name, body in bodies.items()}


def reader(*permissions: str):
    return grant(get_user_model().objects.create_user("reader", password="x", is_staff=True), *permissions)


def test_staff_without_view_pii_find_no_clear_personal_value_on_any_admin_page(client, loaded):
    client.force_login(reader(*READER_PERMISSIONS))
    values = clear_values()
    leaks = {name: sorted(v for v in values if v in body) for name, body in pages(client, loaded).items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert not AuditRecord.objects.exists()


def test_staff_with_view_pii_see_the_values_and_each_page_is_audited(client, loaded):
    user = reader(*READER_PERMISSIONS, "privacy.view_pii")
    client.force_login(user)
    values = clear_values()
    bodies = pages(client, loaded)
    shown = set().union(*({v for v in values if v in body} for body in bodies.values()))
    assert shown == values
    audited = AuditRecord.objects.filter(user=user)
    live = set(CustomerProfile.objects.filter(status="active").values_list("public_id", flat=True))
    assert set(audited.values_list("profile_public_id", flat=True)) >= live
    for name in ("profiles", "members", "export", "preview"):
        assert bodies[name] and audited.exists(), name
    assert not AuditRecord.objects.exclude(user=user).exists()
