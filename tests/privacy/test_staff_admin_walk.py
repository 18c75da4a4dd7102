"""The session-user half of the masking walk: every admin page that shows a profile or its records, opened by staff
without privacy.view_pii, holds no clear personal value of the loaded feeds; with it, the values and an audit record
per page (issue 24, build 1 and 2)."""
import datetime as dt
import html
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import formats, timezone

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


def clear_values(*, as_displayed: bool = False) -> set[str]:
    """Every personal value the feeds left in profiles and records: as stored (a date in ISO form), a phone also as
    dialled at home; `as_displayed` adds each date as the admin would format a date field."""
    values = set()
    for model in (CustomerProfile, SourceRecord):
        for row in model.objects.values(*PERSONAL):
            for name, value in row.items():
                if isinstance(value, dt.date):
                    values.add(value.isoformat())
                    if as_displayed:
                        values.add(formats.localize(value))
                elif value:
                    values.add(value)
                    if name == "phone" and value.startswith("+86"):
                        values.add(value[3:])
    assert len(values) > 15
    return values


def pages(client, segment) -> dict[str, tuple[str, int]]:
    """Each admin page that shows a profile, its records or members, by name: its body as a person reads it (JSON
    and HTML unescaped) and the number of audit records it wrote."""
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
    requests = {name: lambda url=url: client.get(url) for name, url in urls.items()}
    requests["export"] = lambda: client.get(reverse("admin:segments_segment_export", args=[segment.pk]),
                                            {"channel": "sms"})
    # A preview's sample shows personal values; its rule tests none (a rule that did would be a search by them, which
    # needs privacy.view_pii: tests/privacy/test_staff_permissions.py).
    requests["preview"] = lambda: client.post(reverse("admin:segments_segment_preview"),
                                              json.dumps({"rule": RULE["all"][0]}), content_type="application/json")
    seen = {}
    for name, request in requests.items():
        audited_before = AuditRecord.objects.count()
        response = request()
        assert response.status_code == 200, name
        body = (b"".join(response.streaming_content) if response.streaming else response.content).decode()
        if body.startswith("{"):
            body = json.dumps(json.loads(body), ensure_ascii=False)
        seen[name] = (html.unescape(body), AuditRecord.objects.count() - audited_before)
    return seen


def reader(*permissions: str):
    return grant(get_user_model().objects.create_user("reader", password="x", is_staff=True), *permissions)


def test_staff_without_view_pii_find_no_clear_personal_value_on_any_admin_page(client, loaded):
    client.force_login(reader(*READER_PERMISSIONS))
    values = clear_values(as_displayed=True)
    seen = pages(client, loaded)
    leaks = {name: sorted(v for v in values if v in body) for name, (body, _) in seen.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert not AuditRecord.objects.exists()


def test_staff_with_view_pii_see_the_values_and_each_page_showing_one_is_audited(client, loaded):
    user = reader(*READER_PERMISSIONS, "privacy.view_pii")
    client.force_login(user)
    values = clear_values()
    seen = pages(client, loaded)
    shown = {name: {v for v in values if v in body} for name, (body, _) in seen.items()}
    assert set().union(*shown.values()) == values
    unaudited = [name for name, (_, audited) in seen.items() if shown[name] and not audited]
    assert unaudited == []
    live = set(CustomerProfile.objects.filter(status="active").values_list("public_id", flat=True))
    assert set(AuditRecord.objects.values_list("profile_public_id", flat=True)) >= live
    assert set(AuditRecord.objects.values_list("user_id", flat=True)) == {user.pk}
    duplicate = PossibleDuplicate.objects.select_related("record_a", "record_b").get()
    for record in (duplicate.record_a, duplicate.record_b):  # the reviewer compares the two records' values
        assert {record.phone, record.email} <= shown[f"review {duplicate.pk}"]
