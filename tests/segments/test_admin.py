"""The marketers' admin: builder preview, save, refresh now, members, consent-filtered export, explain, upload."""
import datetime as dt
import html
import json
import re
from xml.etree import ElementTree

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from profiles.models import Consent
from segments.models import RefreshJob, Segment
from segments.services import segment_refresh, segment_save
from tags.models import TagAssignment, TagDefinition

from .conftest import NOW

pytestmark = pytest.mark.django_db

SHANGHAI = {"field": "city", "op": "eq", "value": "Shanghai"}


def shanghai_segment(**fields) -> Segment:
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=SHANGHAI, **fields))
    segment_refresh(segment=segment)
    return segment


def preview(client, body):
    return client.post(reverse("admin:segments_segment_preview"), json.dumps(body), content_type="application/json")


def test_live_preview_counts_an_unsaved_rule_and_diffs_a_saved_one(admin_client, people):
    response = preview(admin_client, {"rule": {"field": "gender", "op": "eq", "value": "F"}})
    assert response.status_code == 200
    assert response.json()["count"] == 2 and len(response.json()["sample"]) == 2

    segment = shanghai_segment()
    response = preview(admin_client, {"rule": {"field": "record_count", "op": "lte", "value": 2},
                                      "segment": segment.pk})
    assert response.json()["diff"] == {"would_enter": 2, "would_leave": 1, "would_stay": 1}


def test_preview_of_a_bad_rule_names_the_node(admin_client, people):
    response = preview(admin_client, {"rule": {"any": [SHANGHAI, {"field": "gender", "op": "eq", "value": "Q"}]}})
    assert response.status_code == 400
    assert response.json()["path"] == "any[1].value"


def test_saving_a_segment_in_the_admin_validates_and_refreshes_it(admin_client, people,
                                                                   django_capture_on_commit_callbacks):
    form = {"name": "Shanghai", "slug": "shanghai", "description": "", "kind": "rule", "status": "active",
            "refresh_every_minutes": "", "refresh_cron": "", "owner": "", "holdout_percent": "0"}
    bad = admin_client.post(reverse("admin:segments_segment_add"),
                            {**form, "rule": json.dumps({"all": [{"field": "nope", "op": "eq", "value": 1}]})})
    assert bad.status_code == 200 and "all[0].field: unknown field" in bad.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        ok = admin_client.post(reverse("admin:segments_segment_add"), {**form, "rule": json.dumps(SHANGHAI)})
    assert ok.status_code == 302
    segment = Segment.objects.get(slug="shanghai")
    assert (segment.member_count, segment.owner.username, segment.inputs) == (2, "admin", ["profiles"])


def test_refresh_now_action_runs_a_job(admin_client, people, django_capture_on_commit_callbacks):
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=SHANGHAI))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:segments_segment_changelist"),
                          {"action": "refresh_now", "_selected_action": [segment.pk]})
    job = RefreshJob.objects.get(segment=segment)
    assert (job.status, job.entered, job.trigger) == ("succeeded", 2, "admin:admin")
    assert admin_client.get(reverse("admin:segments_refreshjob_changelist")).status_code == 200


def test_export_contains_only_members_whose_consent_allows_the_channel(admin_client, people):
    segment = shanghai_segment()  # Ann and Cai
    now = timezone.now()
    Consent.objects.create(profile=people["ann"], channel="sms", granted=True, source="core", updated_at=now)
    Consent.objects.create(profile=people["cai"], channel="sms", granted=False, source="core", updated_at=now)
    Consent.objects.create(profile=people["cai"], channel="email", granted=True, source="core", updated_at=now)
    Consent.objects.create(profile=people["bob"], channel="sms", granted=True, source="core", updated_at=now)

    def export(channel):
        response = admin_client.get(reverse("admin:segments_segment_export", args=[segment.pk]), {"channel": channel})
        lines = b"".join(response.streaming_content).decode().splitlines()
        return lines[0], {line.split(",")[0] for line in lines[1:]}

    assert export("sms") == ("profile_id,full_name,phone,email", {people["ann"].public_id})
    assert export("email")[1] == {people["cai"].public_id}
    assert export("push")[1] == set()
    assert admin_client.get(reverse("admin:segments_segment_export", args=[segment.pk]),
                            {"channel": "fax"}).status_code == 400


def test_export_leaves_out_the_holdout_group(admin_client, people):
    segment = shanghai_segment(holdout_percent=100)
    Consent.objects.create(profile=people["ann"], channel="sms", granted=True, source="core",
                           updated_at=timezone.now())
    response = admin_client.get(reverse("admin:segments_segment_export", args=[segment.pk]), {"channel": "sms"})
    assert b"".join(response.streaming_content).decode().splitlines()[1:] == []


def test_members_page_with_chart_and_explain(admin_client, people):
    segment = shanghai_segment()
    page = admin_client.get(reverse("admin:segments_segment_members", args=[segment.pk])).content.decode()
    assert people["ann"].public_id in page and people["bob"].public_id not in page
    assert 'class="segment-size-chart"' in page and "Download CSV" in page

    explained = admin_client.get(reverse("admin:segments_segment_explain", args=[segment.pk]),
                                 {"profile": people["bob"].public_id}).json()
    assert explained["member"] is False and explained["rule"]["value"] == "Beijing"


def size_chart(page: str) -> ElementTree.Element:
    return ElementTree.fromstring(re.search(r'<svg class="segment-size-chart".*?</svg>', page, re.S).group(0))


SVG = "{http://www.w3.org/2000/svg}"


def test_members_page_draws_a_single_size_point_with_date_and_count_axes(admin_client, people):
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=SHANGHAI))
    segment_refresh(segment=segment, now=NOW)  # one point: Ann and Cai on 2026-01-10 at noon
    page = admin_client.get(reverse("admin:segments_segment_members", args=[segment.pk])).content.decode()

    chart = size_chart(page)
    points = chart.findall(f".//{SVG}circle")
    assert [p.find(f"{SVG}title").text for p in points] == ["2026-01-10 12:00: 2 members"]
    labels = [t.text for t in chart.iter(f"{SVG}text")]
    assert "2026-01-10" in labels  # the time axis
    assert {"0", "1", "2"} <= set(labels)  # the count axis reaches the point's count


def test_members_page_chart_places_points_by_time_and_count(admin_client, people):
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=SHANGHAI))
    for days in (0, 1, 5):  # nothing changes: still one point per refresh
        segment_refresh(segment=segment, now=NOW + dt.timedelta(days=days))
    page = admin_client.get(reverse("admin:segments_segment_members", args=[segment.pk])).content.decode()

    points = size_chart(page).findall(f".//{SVG}circle")
    xs = [float(p.get("cx")) for p in points]
    assert len({p.get("cy") for p in points}) == 1  # the same count, the same height
    assert (xs[2] - xs[1]) == pytest.approx(4 * (xs[1] - xs[0]))  # the gap of 4 days is 4 times that of 1


def test_segment_change_form_has_the_builder_widget(admin_client, people):
    segment = shanghai_segment()
    page = admin_client.get(reverse("admin:segments_segment_change", args=[segment.pk])).content.decode()
    assert 'class="rule-builder"' in page and "segments/rule_builder.js" in page
    assert f'data-segment="{segment.pk}"' in page


def test_tag_bulk_upload_in_the_admin(admin_client, people):
    tag = TagDefinition.objects.create(code="vip", name="VIP")
    upload = SimpleUploadedFile("list.csv", f"profile_id\n{people['ann'].public_id}\nPNOPE\n".encode())
    response = admin_client.post(reverse("admin:tags_tagdefinition_upload", args=[tag.pk]), {"file": upload})
    assert response.status_code == 302
    assert list(TagAssignment.objects.filter(tag=tag).values_list("profile_id", "assigned_by")) == \
        [(people["ann"].pk, "admin")]
    assert admin_client.get(reverse("admin:tags_tagdefinition_changelist")).status_code == 200


def test_a_rule_tag_with_a_bad_rule_is_refused_in_the_admin(admin_client):
    response = admin_client.post(reverse("admin:tags_tagdefinition_add"), {
        "code": "t", "name": "T", "category": "", "description": "", "kind": "rule",
        "rule": json.dumps({"segment": "x"})})
    assert "segment: a tag rule cannot use segments" in response.content.decode()


def builder_catalogue(page: str) -> dict:
    return json.loads(html.unescape(re.search(r'data-catalogue="([^"]*)"', page).group(1)))


def test_the_builders_catalogue_has_the_activity_kinds_and_what_a_tag_rule_may_use(admin_client, people):
    shanghai_segment()
    TagDefinition.objects.create(code="vip", name="VIP")
    TagDefinition.objects.create(code="multi", name="Multi", kind=TagDefinition.Kind.RULE, rule=SHANGHAI)

    for_segment = builder_catalogue(admin_client.get(reverse("admin:segments_segment_add")).content.decode())
    assert [f["name"] for f in for_segment["activity"]["card_transactions"]][:2] == ["amount", "merchant_category"]
    assert for_segment["aggregates"] == ["count", "sum", "avg", "min", "max"]
    assert (sorted(for_segment["tags"]), for_segment["segments"]) == (["multi", "vip"], ["shanghai"])

    for_tag = builder_catalogue(admin_client.get(reverse("admin:tags_tagdefinition_add")).content.decode())
    assert (for_tag["tag_rule"], for_tag["tags"], for_tag["segments"]) == (True, ["vip"], [])
    assert set(for_tag["activity"]) == {"transactions", "card_transactions", "accounts", "holdings"}


def test_static_segment_list_upload_in_the_admin(admin_client, people):
    segment = segment_save(segment=Segment(name="List", slug="list", kind=Segment.Kind.STATIC))
    upload = SimpleUploadedFile("list.csv", f"profile_id\n{people['bob'].public_id}\n{people['dee'].public_id}\n"
                                .encode())
    response = admin_client.post(reverse("admin:segments_segment_upload", args=[segment.pk]), {"file": upload})
    assert response.status_code == 302
    segment.refresh_from_db()
    assert segment.member_count == 2
    page = admin_client.get(reverse("admin:segments_segment_members", args=[segment.pk])).content.decode()
    assert "Upload the list" in page and people["dee"].public_id in page


@pytest.mark.parametrize("body", ['{"rule": ' + "[" * 10_000 + "]" * 10_000 + "}",
                                  json.dumps({"rule": {"field": "city", "op": "eq", "value": "a\x00b"}})],
                         ids=["nested-10000-deep", "nul"])
def test_the_live_preview_refuses_deep_json_and_nul_characters_with_a_400(admin_client, body):
    admin_client.raise_request_exception = False

    response = admin_client.post(reverse("admin:segments_segment_preview"), body, content_type="application/json")

    assert response.status_code == 400 and response.json()["error"]
