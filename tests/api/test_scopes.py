"""Every operation of the OpenAPI schema, with real ids and a body that would change something: unauthenticated it
answers 401, with a key lacking its scope 403 (JSON, naming the scope), and neither changes a row, queues a task or
stores a file; with the scope alone it is let through (and a write then does change something).

The table below states the scope of each operation (the README's table); a test fails when the schema has an
operation the table lacks, so a new endpoint cannot ship without its denial being checked.
"""
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from api.models import ApiKey, Scope
from profiles.models import (
    Consent, CustomerProfile, FeedBatch, ProfileMetrics, RejectedRow, Source, SourceRecord,
)
from segments.models import Segment
from segments.services import segment_refresh, segment_save
from tags.models import TagAssignment, TagDefinition

pytestmark = pytest.mark.django_db

WOMEN = {"field": "gender", "op": "eq", "value": "F"}
SHANGHAI = {"field": "city", "op": "eq", "value": "上海市"}
P_READ, P_WRITE = Scope.PROFILES_READ.value, Scope.PROFILES_WRITE.value
S_READ, S_WRITE = Scope.SEGMENTS_READ.value, Scope.SEGMENTS_WRITE.value
JOBS, FEEDS = Scope.JOBS_READ.value, Scope.FEEDS_WRITE.value
RIGHTS = Scope.PRIVACY_RIGHTS.value


@dataclass
class Call:
    """One request: `path` and `query` may name the seeded objects as {profile}, {batch}, {job}, {today}."""

    scope: str
    path: str
    query: dict = field(default_factory=dict)
    body: dict | None = None
    multipart: bool = False
    writes: bool = False  # with the scope, the request changes something (so that "denied: unchanged" means a thing)


def _feed():
    return {"source": "core", "file": SimpleUploadedFile("core.csv", b"customer_key,full_name\nC9,Wang\n")}


CALLS = {
    ("GET", "/api/v1/profiles/"): Call(P_READ, "/api/v1/profiles/"),
    ("GET", "/api/v1/profiles/lookup/"): Call(P_READ, "/api/v1/profiles/lookup/", {"source": "core", "key": "CIF1"}),
    ("POST", "/api/v1/profiles/lookup/"): Call(P_READ, "/api/v1/profiles/lookup/",
                                               body={"source": "core", "key": "CIF1"}),
    ("GET", "/api/v1/profiles/{public_id}/"): Call(P_READ, "/api/v1/profiles/{profile}/"),
    ("GET", "/api/v1/profiles/{public_id}/source-records/"): Call(P_READ, "/api/v1/profiles/{profile}/source-records/"),
    ("GET", "/api/v1/profiles/{public_id}/tags/"): Call(P_READ, "/api/v1/profiles/{profile}/tags/"),
    ("POST", "/api/v1/profiles/{public_id}/tags/"): Call(P_WRITE, "/api/v1/profiles/{profile}/tags/",
                                                         body={"code": "called-back"}, writes=True),
    ("DELETE", "/api/v1/profiles/{public_id}/tags/{code}/"): Call(P_WRITE, "/api/v1/profiles/{profile}/tags/vip/",
                                                                  writes=True),
    ("GET", "/api/v1/profiles/{public_id}/segments/"): Call(P_READ, "/api/v1/profiles/{profile}/segments/"),
    ("GET", "/api/v1/profiles/{public_id}/metrics/"): Call(P_READ, "/api/v1/profiles/{profile}/metrics/"),
    ("GET", "/api/v1/profiles/{public_id}/lineage/"): Call(P_READ, "/api/v1/profiles/{profile}/lineage/"),
    ("GET", "/api/v1/profiles/{public_id}/consent/"): Call(P_READ, "/api/v1/profiles/{profile}/consent/"),
    ("PUT", "/api/v1/profiles/{public_id}/consent/{channel}/"): Call(
        P_WRITE, "/api/v1/profiles/{profile}/consent/sms/", body={"granted": False}, writes=True),
    ("PATCH", "/api/v1/profiles/{public_id}/consent/{channel}/"): Call(
        P_WRITE, "/api/v1/profiles/{profile}/consent/email/", body={"granted": True}, writes=True),
    ("GET", "/api/v1/profiles/{public_id}/timeline/"): Call(P_READ, "/api/v1/profiles/{profile}/timeline/"),
    ("GET", "/api/v1/segments/"): Call(S_READ, "/api/v1/segments/"),
    ("POST", "/api/v1/segments/"): Call(S_WRITE, "/api/v1/segments/", body={"name": "X", "slug": "x", "rule": WOMEN},
                                        writes=True),
    ("GET", "/api/v1/segments/{slug}/"): Call(S_READ, "/api/v1/segments/women/"),
    ("PUT", "/api/v1/segments/{slug}/"): Call(S_WRITE, "/api/v1/segments/women/",
                                              body={"name": "Shanghai", "slug": "women", "rule": SHANGHAI},
                                              writes=True),
    ("PATCH", "/api/v1/segments/{slug}/"): Call(S_WRITE, "/api/v1/segments/women/", body={"rule": SHANGHAI},
                                                writes=True),
    ("DELETE", "/api/v1/segments/{slug}/"): Call(S_WRITE, "/api/v1/segments/women/", writes=True),
    ("GET", "/api/v1/segments/catalogue/"): Call(S_READ, "/api/v1/segments/catalogue/"),
    ("GET", "/api/v1/segments/activity-catalogue/"): Call(S_READ, "/api/v1/segments/activity-catalogue/"),
    ("POST", "/api/v1/segments/preview/"): Call(S_READ, "/api/v1/segments/preview/", body={"rule": WOMEN}),
    ("POST", "/api/v1/segments/{slug}/diff/"): Call(S_READ, "/api/v1/segments/women/diff/", body={"rule": SHANGHAI}),
    ("GET", "/api/v1/segments/{slug}/explain/"): Call(S_READ, "/api/v1/segments/women/explain/",
                                                      {"profile": "{profile}"}),
    ("POST", "/api/v1/segments/{slug}/refresh/"): Call(S_WRITE, "/api/v1/segments/women/refresh/", writes=True),
    ("GET", "/api/v1/segments/{slug}/members/"): Call(S_READ, "/api/v1/segments/women/members/"),
    ("GET", "/api/v1/segments/{slug}/members/export/"): Call(S_READ, "/api/v1/segments/women/members/export/",
                                                             {"channel": "sms"}),
    ("GET", "/api/v1/segments/{slug}/history/"): Call(S_READ, "/api/v1/segments/women/history/"),
    ("GET", "/api/v1/segments/{slug}/snapshot/"): Call(S_READ, "/api/v1/segments/women/snapshot/",
                                                       {"date": "{today}"}),
    ("GET", "/api/v1/tags/"): Call(S_READ, "/api/v1/tags/"),
    ("POST", "/api/v1/tags/"): Call(S_WRITE, "/api/v1/tags/", body={"code": "new", "name": "New"}, writes=True),
    ("GET", "/api/v1/tags/{code}/"): Call(S_READ, "/api/v1/tags/spare/"),
    ("PUT", "/api/v1/tags/{code}/"): Call(S_WRITE, "/api/v1/tags/spare/",
                                          body={"code": "spare", "name": "Renamed", "kind": "manual"}, writes=True),
    ("PATCH", "/api/v1/tags/{code}/"): Call(S_WRITE, "/api/v1/tags/spare/", body={"name": "Renamed"}, writes=True),
    ("DELETE", "/api/v1/tags/{code}/"): Call(S_WRITE, "/api/v1/tags/spare/", writes=True),
    ("GET", "/api/v1/feeds/batches/"): Call(JOBS, "/api/v1/feeds/batches/"),
    ("GET", "/api/v1/feeds/batches/{id}/"): Call(JOBS, "/api/v1/feeds/batches/{batch}/"),
    ("GET", "/api/v1/feeds/batches/{id}/rejects/"): Call(JOBS, "/api/v1/feeds/batches/{batch}/rejects/"),
    ("POST", "/api/v1/feeds/batches/upload/"): Call(FEEDS, "/api/v1/feeds/batches/upload/", multipart=True,
                                                    writes=True),
    ("GET", "/api/v1/jobs/load/"): Call(JOBS, "/api/v1/jobs/load/"),
    ("GET", "/api/v1/jobs/load/{id}/"): Call(JOBS, "/api/v1/jobs/load/{batch}/"),
    ("GET", "/api/v1/jobs/refresh/"): Call(JOBS, "/api/v1/jobs/refresh/"),
    ("GET", "/api/v1/jobs/refresh/{id}/"): Call(JOBS, "/api/v1/jobs/refresh/{job}/"),
    ("GET", "/api/v1/privacy/subjects/{public_id}/"): Call(RIGHTS, "/api/v1/privacy/subjects/{profile}/"),
    ("POST", "/api/v1/privacy/subjects/{public_id}/erase/"): Call(RIGHTS, "/api/v1/privacy/subjects/{profile}/erase/",
                                                                 body={"reason": "DSR-1"}, writes=True),
}


def _schema_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}


def test_the_table_covers_every_operation_of_the_schema():
    assert _schema_operations() == set(CALLS)


@pytest.fixture
def world(settings, tmp_path):
    """A profile with a source record, a manual tag, a consent and metrics; tags to add and change; a segment with members
    and a refresh job; a feed batch with a rejected row."""
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "feeds"
    ann = CustomerProfile.objects.create(public_id="PSCOPE01", full_name="李安", gender="F", city="上海市",
                                         phone="+8613812875678", email="ann@qq.com", record_count=1)
    CustomerProfile.objects.create(public_id="PSCOPE02", full_name="王蓓", gender="F", city="北京市")
    core = Source.objects.get(code="core")
    batch = FeedBatch.objects.create(source=core, file_name="core.csv", status=FeedBatch.Status.SUCCEEDED,
                                     rows_read=2, rows_created=1, rows_rejected=1)
    RejectedRow.objects.create(batch=batch, row_number=2, reason="birth_date: not a date", raw={"customer_key": "C2"})
    SourceRecord.objects.create(source=core, customer_key="CIF1", profile=ann, row_digest="x", first_batch=batch,
                                last_batch=batch, loaded_at=timezone.now(), needs_resolution=False)
    vip = TagDefinition.objects.create(code="vip", name="VIP")
    TagDefinition.objects.create(code="called-back", name="Called back")
    TagDefinition.objects.create(code="spare", name="Spare")
    TagAssignment.objects.create(profile=ann, tag=vip, source="manual", assigned_at=timezone.now())
    Consent.objects.create(profile=ann, channel="sms", granted=True, source="core", updated_at=timezone.now())
    ProfileMetrics.objects.create(profile=ann, as_of=timezone.localdate(), lifecycle_stage="active",
                                  value_tier="mid", computed_at=timezone.now())
    women = segment_save(segment=Segment(name="Women", slug="women", rule=WOMEN))
    job = segment_refresh(segment=women)
    assert women.__class__.objects.get(pk=women.pk).member_count == 2
    return {"profile": ann.public_id, "batch": batch.pk, "job": job.pk, "today": timezone.localdate().isoformat(),
            "upload_dir": settings.CDP_FEED_UPLOAD_DIR}


def _state() -> dict:
    """Every row of every table the platform owns (API keys without the time of last use, which a request of a
    valid key may write whatever it is allowed to do)."""
    state = {}
    for app_label in ("profiles", "tags", "segments", "api"):
        for model in apps.get_app_config(app_label).get_models():
            rows = model.objects.order_by("pk").values()
            if model is ApiKey:
                rows = rows.values(*[f.attname for f in model._meta.concrete_fields if f.name != "last_used_at"])
            state[model._meta.label] = list(rows)
    return state


def _send(client: APIClient, call: Call, method: str, world: dict):
    path = call.path.format(**world)
    query = {k: v.format(**world) for k, v in call.query.items()}
    send = getattr(client, method.lower())
    if call.multipart:
        return send(path, _feed(), format="multipart")
    if call.body is not None:
        return send(path, call.body, format="json")
    return send(path, query)


def _key(api_client, scopes) -> APIClient:
    client = api_client(scopes=scopes)
    client.get("/api/schema/")  # a key's first request records its use; that write is not the endpoint's
    return client


OPERATIONS = sorted(CALLS)


@pytest.mark.parametrize("method,template", OPERATIONS, ids=[f"{m} {t}" for m, t in OPERATIONS])
def test_without_authentication_or_the_scope_the_request_is_refused_and_changes_nothing(
        method, template, world, api_client, django_capture_on_commit_callbacks):
    call = CALLS[(method, template)]
    without_scope = _key(api_client, [s for s in Scope.values if s != call.scope])
    before = _state()

    with django_capture_on_commit_callbacks() as queued:
        anonymous = _send(APIClient(), call, method, world)
        denied = _send(without_scope, call, method, world)

    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    assert denied.status_code == 403
    assert denied.json() == {"code": "permission_denied", "message": f"This endpoint needs the scope {call.scope!r}."}
    assert _state() == before
    assert queued == []  # no task sent once the request's transaction commits
    assert not world["upload_dir"].exists() or not any(world["upload_dir"].iterdir())


@pytest.mark.parametrize("method,template", OPERATIONS, ids=[f"{m} {t}" for m, t in OPERATIONS])
def test_the_scope_alone_lets_the_request_through(method, template, world, api_client,
                                                  django_capture_on_commit_callbacks):
    call = CALLS[(method, template)]
    client = _key(api_client, [call.scope])
    before = _state()

    with django_capture_on_commit_callbacks() as queued:
        response = _send(client, call, method, world)

    assert 200 <= response.status_code < 300, (response.status_code, getattr(response, "content", b"")[:300])
    if call.writes:
        assert _state() != before or queued, "an allowed write changed nothing: the denial test would prove nothing"
    else:
        assert _state() == before and queued == []
