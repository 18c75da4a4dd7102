"""Segment endpoints: CRUD with rule errors naming the node, catalogue, preview, diff, explain, refresh (202 and a
job), members, consent-honouring export with masking and audit, history and snapshot; each scope allowed and denied."""
import csv
import io

import pytest
from django.utils import timezone

from privacy.models import AuditRecord
from profiles.models import Consent, CustomerProfile
from segments.models import RefreshJob, Segment, SegmentEvent, SegmentMember
from segments.services import segment_refresh, segment_save

pytestmark = pytest.mark.django_db

READ = ["segments:read"]
WRITE = ["segments:read", "segments:write"]
WOMEN = {"field": "gender", "op": "eq", "value": "F"}
SHANGHAI = {"field": "city", "op": "eq", "value": "上海市"}


@pytest.fixture
def people():
    make = CustomerProfile.objects.create
    return {
        "ann": make(public_id="PANN", full_name="李安", gender="F", city="上海市", phone="+8613812875678",
                    email="ann@qq.com"),
        "bea": make(public_id="PBEA", full_name="王蓓", gender="F", city="北京市", phone="+8613900001111"),
        "cao": make(public_id="PCAO", full_name="曹操", gender="M", city="上海市"),
    }


@pytest.fixture
def women(people):
    segment = segment_save(segment=Segment(name="Women", slug="women", rule=WOMEN))
    segment_refresh(segment=segment)
    segment.refresh_from_db()
    return segment


def test_create_validates_the_rule_and_names_the_bad_node(api_client):
    client = api_client(scopes=WRITE)
    bad = {"name": "Bad", "slug": "bad", "rule": {"all": [WOMEN, {"field": "city", "op": "gt", "value": 3}]}}
    response = client.post("/api/v1/segments/", bad, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_rule"
    assert response.json()["details"]["path"].startswith("all[1]")
    assert not Segment.objects.filter(slug="bad").exists()

    response = client.post("/api/v1/segments/", {"name": "Women", "slug": "women", "rule": WOMEN}, format="json")
    assert response.status_code == 201
    assert response.json()["inputs"] == ["profiles"]
    assert Segment.objects.get(slug="women").rule == WOMEN


def test_write_scope_is_needed_to_create_change_or_delete(api_client, women):
    reader = api_client(scopes=READ)
    assert reader.post("/api/v1/segments/", {"name": "X", "slug": "x", "rule": WOMEN}, format="json").status_code == 403
    assert reader.patch("/api/v1/segments/women/", {"rule": SHANGHAI}, format="json").status_code == 403
    assert reader.delete("/api/v1/segments/women/").status_code == 403
    assert reader.post("/api/v1/segments/women/refresh/").status_code == 403
    women.refresh_from_db()
    assert women.rule == WOMEN and not Segment.objects.filter(slug="x").exists()
    assert RefreshJob.objects.filter(trigger="api").count() == 0
    assert api_client(scopes=["profiles:read"]).get("/api/v1/segments/").status_code == 403


def test_list_retrieve_update_and_delete(api_client, women):
    client = api_client(scopes=WRITE)
    assert [s["slug"] for s in client.get("/api/v1/segments/").json()["results"]] == ["women"]
    assert client.get("/api/v1/segments/women/").json()["member_count"] == 2

    response = client.patch("/api/v1/segments/women/", {"rule": {"all": [WOMEN, SHANGHAI]}}, format="json")
    assert response.status_code == 200
    assert Segment.objects.get(slug="women").rule == {"all": [WOMEN, SHANGHAI]}
    assert client.patch("/api/v1/segments/women/", {"holdout_percent": "120"}, format="json").status_code == 400

    segment_save(segment=Segment(name="Uses women", slug="uses-women", rule={"segment": "women"}))
    refused = client.delete("/api/v1/segments/women/")
    assert refused.status_code == 400 and "uses-women" in refused.json()["message"]
    assert client.delete("/api/v1/segments/uses-women/").status_code == 204
    assert client.delete("/api/v1/segments/women/").status_code == 204
    assert not Segment.objects.exists()


def test_catalogue_preview_and_diff(api_client, women):
    client = api_client(scopes=READ)
    fields = {f["name"]: f for f in client.get("/api/v1/segments/catalogue/").json()}
    assert "eq" in fields["city"]["ops"]

    preview = client.post("/api/v1/segments/preview/", {"rule": {"all": [WOMEN, SHANGHAI]}}, format="json").json()
    assert preview["count"] == 1 and [p["id"] for p in preview["sample"]] == ["PANN"]
    bad = client.post("/api/v1/segments/preview/", {"rule": {"any": [{"field": "nope", "op": "eq", "value": 1}]}},
                      format="json")
    assert bad.status_code == 400 and bad.json()["details"]["path"].startswith("any[0]")

    diff = client.post("/api/v1/segments/women/diff/", {"rule": SHANGHAI}, format="json").json()
    assert diff == {"would_enter": 1, "would_leave": 1, "would_stay": 1}  # Cao in, Bea out, Ann stays


def test_explain_for_a_profile(api_client, women, people):
    client = api_client(scopes=READ)
    explained = client.get("/api/v1/segments/women/explain/", {"profile": "PCAO"}).json()
    assert explained["member"] is False and explained["rule"]["result"] is False
    assert client.get("/api/v1/segments/women/explain/", {"profile": "NOPE"}).status_code == 404
    assert client.get("/api/v1/segments/women/explain/").status_code == 400


def test_refresh_answers_202_with_a_job_that_records_the_run(api_client, women, people,
                                                             django_capture_on_commit_callbacks):
    CustomerProfile.objects.filter(pk=people["cao"].pk).update(gender="F")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(scopes=WRITE).post("/api/v1/segments/women/refresh/")
    assert response.status_code == 202
    job = RefreshJob.objects.get(pk=response.json()["job_id"])
    assert job.segment == women and job.trigger == "api"
    # No broker in the tests' settings: the task ran in-process once the request's transaction committed.
    job.refresh_from_db()
    assert job.status == RefreshJob.Status.SUCCEEDED and job.entered == 1
    assert Segment.objects.get(pk=women.pk).member_count == 3


def test_members_with_holdout_flag(api_client, women):
    Segment.objects.filter(pk=women.pk).update(holdout_percent=100)
    segment_refresh(segment=Segment.objects.get(pk=women.pk))
    body = api_client(scopes=READ).get("/api/v1/segments/women/members/").json()
    assert sorted((m["id"], m["in_holdout"]) for m in body["results"]) == [("PANN", True), ("PBEA", True)]


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_export_honours_consent_and_masks_without_read_pii(api_client, women, people):
    Consent.objects.create(profile=people["ann"], channel="sms", granted=True, source="app", updated_at=timezone.now())
    Consent.objects.create(profile=people["bea"], channel="sms", granted=False, source="app", updated_at=timezone.now())
    response = api_client(scopes=READ).get("/api/v1/segments/women/members/export/", {"channel": "sms"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert _csv(response) == [{"id": "PANN", "full_name": "李*", "phone": "138****5678", "email": "a**@qq.com"}]
    assert not AuditRecord.objects.exists()
    assert api_client(scopes=READ).get("/api/v1/segments/women/members/export/",
                                       {"channel": "fax"}).status_code == 400


def test_export_with_read_pii_is_clear_and_audited(api_client, women, people):
    Consent.objects.create(profile=people["ann"], channel="email", granted=True, source="app", updated_at=timezone.now())
    client = api_client(scopes=READ + ["profiles:read_pii"])
    rows = _csv(client.get("/api/v1/segments/women/members/export/", {"channel": "email"}))
    # A leading + is a formula to a spreadsheet: the cell is quoted (privacy.csv_safe).
    assert rows == [{"id": "PANN", "full_name": "李安", "phone": "'+8613812875678", "email": "ann@qq.com"}]
    audit = AuditRecord.objects.get()
    assert audit.profile_public_id == "PANN" and audit.api_key == client.api_key
    assert sorted(audit.fields) == ["email", "full_name", "phone"]


def test_export_leaves_out_the_holdout(api_client, women, people):
    Segment.objects.filter(pk=women.pk).update(holdout_percent=100)
    segment_refresh(segment=Segment.objects.get(pk=women.pk))
    Consent.objects.create(profile=people["ann"], channel="sms", granted=True, source="app", updated_at=timezone.now())
    assert _csv(api_client(scopes=READ).get("/api/v1/segments/women/members/export/", {"channel": "sms"})) == []


def test_history_and_snapshot(api_client, women, people):
    CustomerProfile.objects.filter(pk=people["bea"].pk).update(gender="M")
    segment_refresh(segment=Segment.objects.get(pk=women.pk))
    client = api_client(scopes=READ)
    events = client.get("/api/v1/segments/women/history/").json()["results"]
    assert sorted((e["profile"], e["kind"]) for e in events[:2]) == [("PANN", "entered"), ("PBEA", "entered")]
    assert (events[2]["profile"], events[2]["kind"]) == ("PBEA", "exited")
    only_bea = client.get("/api/v1/segments/women/history/", {"profile": "PBEA"}).json()["results"]
    assert [e["kind"] for e in only_bea] == ["entered", "exited"]

    today = timezone.localdate().isoformat()
    snapshot = client.get("/api/v1/segments/women/snapshot/", {"date": today}).json()["results"]
    assert [m["id"] for m in snapshot] == ["PANN"]
    assert client.get("/api/v1/segments/women/snapshot/", {"date": "2020-01-01"}).json()["results"] == []
    assert client.get("/api/v1/segments/women/snapshot/", {"date": "yesterday"}).status_code == 400
    assert SegmentEvent.objects.count() == 3 and SegmentMember.objects.count() == 1


def test_activity_catalogue_lists_the_fields_of_each_kind(api_client):
    body = api_client(scopes=READ).get("/api/v1/segments/activity-catalogue/").json()
    assert set(body) == {"transactions", "card_transactions", "accounts", "holdings"}
    assert {f["name"] for f in body["card_transactions"]} >= {"amount", "merchant_category", "mcc"}


def test_put_replaces_a_segment_and_validates_its_rule(api_client, women):
    client = api_client(scopes=WRITE)
    replaced = client.put("/api/v1/segments/women/", {"name": "Shanghai", "slug": "women", "rule": SHANGHAI,
                                                      "holdout_percent": "10.00"}, format="json")
    assert replaced.status_code == 200
    assert (replaced.json()["name"], replaced.json()["rule"], replaced.json()["holdout_percent"]) == (
        "Shanghai", SHANGHAI, "10.00")
    women.refresh_from_db()
    assert (women.name, women.rule, women.inputs) == ("Shanghai", SHANGHAI, ["profiles"])

    bad = client.put("/api/v1/segments/women/", {"name": "Bad", "slug": "women",
                                                 "rule": {"any": [{"field": "city", "op": "gt", "value": 3}]}},
                     format="json")
    assert bad.status_code == 400 and bad.json()["details"]["path"].startswith("any[0]")
    incomplete = client.put("/api/v1/segments/women/", {"rule": WOMEN}, format="json")  # a PUT needs every field
    assert incomplete.status_code == 400 and set(incomplete.json()["details"]) == {"name", "slug"}
    women.refresh_from_db()
    assert (women.name, women.rule) == ("Shanghai", SHANGHAI)


MEMBERS_QUERIES = 2  # the segment, the page of members with their holdout flag (the key is cached)


def test_members_run_a_constant_number_of_queries(api_client, women, django_assert_max_num_queries):
    client = api_client(scopes=READ)
    client.get("/api/schema/")  # the key's first use is recorded once
    segment_save(segment=Segment(name="Everyone", slug="everyone", rule={"field": "gender", "op": "is_not_null"},
                                 holdout_percent=50))
    CustomerProfile.objects.bulk_create([CustomerProfile(public_id=f"PM{n:04d}", gender="M") for n in range(40)])
    segment_refresh(segment=Segment.objects.get(slug="everyone"))
    sizes = {}
    for slug in ("women", "everyone"):
        with django_assert_max_num_queries(MEMBERS_QUERIES):
            response = client.get(f"/api/v1/segments/{slug}/members/", {"page_size": 50})
        sizes[slug] = len(response.json()["results"])
    assert sizes == {"women": 2, "everyone": 43}
