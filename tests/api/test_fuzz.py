"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): no input may produce a 5xx, and every
documented response matches its schema (a field the schema calls non-null or required is so in the answer).

The schema is generated in-process from the code (drf-spectacular), so every endpoint that is documented is fuzzed,
and requests go to the WSGI app directly. The caller holds every scope, so each operation gets past the permission
check into the view. The database holds one of everything the paths name (a profile with records, tags, consent,
metrics and an absorbed twin; a rule segment with members and history; manual and rule tags; a feed batch with a
rejected row; refresh and load jobs) under fixed keys. The schema carries those keys as the path parameters'
examples, and hooks draw path parameters, the `profile` of explain and history, lookups, tag codes, rules and upload
sources from them as often as from the generated values, so most requests reach a real row rather than a 404. Each
example runs in a savepoint rolled back afterwards: a generated DELETE does not take the seeds from the next one.
"""
import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.models import Scope
from cdp.wsgi import application
from profiles.models import Consent, CustomerProfile, FeedBatch, ProfileMetrics, RejectedRow, Source, SourceRecord
from segments.models import RefreshJob, Segment
from segments.services import segment_refresh, segment_save, tag_rule_refresh
from tags.models import TagAssignment, TagDefinition

# The keys of the seeded rows, fixed (explicit primary keys too), so that the schema can carry them as examples.
SEEDS = {"public_id": "PFUZZ0000001", "absorbed_id": "PFUZZ0000002", "slug": "women", "manual_tag": "vip",
         "rule_tag": "shanghai", "channel": "sms", "batch": 900001, "job": 900001}


def _with_seeded_examples(document: dict) -> dict:
    """Each path parameter's example is a seeded row, so the examples and coverage phases reach it too."""
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["example"] = _seeded_path_parameters(path, {parameter["name"]: None})[0][
                        parameter["name"]]
    return document


def _seeded_path_parameters(operation_path: str, generated: dict) -> list[dict]:
    """The generated parameters with every name replaced by a seeded row's key; for a profile, also its absorbed
    id (which answers for the survivor)."""
    chosen = dict(generated)
    for name in generated:
        if name == "id":
            chosen[name] = SEEDS["job" if "/jobs/refresh/" in operation_path else "batch"]
        elif name == "code":
            chosen[name] = SEEDS["manual_tag" if operation_path.startswith("/api/v1/profiles/") else "rule_tag"]
        elif name in SEEDS:
            chosen[name] = SEEDS[name]
    if "public_id" in generated:
        return [chosen, {**chosen, "public_id": SEEDS["absorbed_id"]}]
    return [chosen]


schema = schemathesis.openapi.from_dict(_with_seeded_examples(SchemaGenerator().get_schema(request=None,
                                                                                          public=True)))


@schema.hook("flatmap_path_parameters")
def seeded_or_generated_path(context, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    return st.sampled_from([*_seeded_path_parameters(context.operation.path, path_parameters), path_parameters])


@schema.hook("flatmap_query")
def seeded_or_generated_query(context, query):
    if context.operation.path == "/api/v1/profiles/lookup/":
        return st.sampled_from([{"source": "core", "key": "CIF1"}, {"phone": "13812345678"}, query])
    if not query or "profile" not in query:
        return st.just(query)
    return st.sampled_from([{**query, "profile": SEEDS["public_id"]}, {**query, "profile": SEEDS["absorbed_id"]},
                            query])


WOMEN = {"field": "gender", "op": "eq", "value": "F"}
# Bodies whose generated values almost never name a known row or make a valid rule: a known one, as often as not;
# and values a generator rarely draws (a NUL, a lone surrogate).
KNOWN_BODY_VALUES = {
    "/api/v1/profiles/lookup/": [{"source": "core", "key": "CIF1"}, {"email": "ZS@qq.com"}, {"phone": "1\x00"}],
    "/api/v1/profiles/{public_id}/tags/": [{"code": SEEDS["manual_tag"]}, {"code": "called-back"}],
    "/api/v1/segments/preview/": [{"rule": WOMEN}, {"rule": {"tag": SEEDS["rule_tag"]}},
                                  {"rule": {"field": "city", "op": "eq", "value": "a\x00b"}},
                                  {"rule": {"tag": "\ud800"}}],
    "/api/v1/segments/{slug}/diff/": [{"rule": {"not": WOMEN}}, {"rule": {"segment": SEEDS["slug"]}}],
    "/api/v1/feeds/batches/upload/": [{"source": "core"}, {"source": "wealth", "kind": "holdings"}],
}


@schema.hook("flatmap_body")
def seeded_or_generated_body(context, body):
    known = KNOWN_BODY_VALUES.get(context.operation.path)
    if not known or not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from([*({**body, **values} for values in known), body])


@pytest.fixture
def wsgi_app():
    """The real WSGI handler, but, as in Django's test client, without closing the test's database connection at
    the end of each request (that would end the test's transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(settings, tmp_path):
    """One row of everything a path names, under the keys of SEEDS."""
    settings.CDP_FEED_UPLOAD_DIR = tmp_path  # generated uploads land in the test's own folder
    now = timezone.now()
    zhang = CustomerProfile.objects.create(public_id=SEEDS["public_id"], full_name="张三", gender="F", city="上海市",
                                           phone="+8613812345678", email="zs@qq.com", record_count=1)
    absorbed = CustomerProfile.objects.create(public_id=SEEDS["absorbed_id"], full_name="张三", status="merged",
                                              merged_into=zhang, merged_at=now)
    core = Source.objects.get(code="core")
    batch = FeedBatch.objects.create(pk=SEEDS["batch"], source=core, file_name="core.csv",
                                     status=FeedBatch.Status.SUCCEEDED, rows_read=2, rows_created=1, rows_rejected=1)
    RejectedRow.objects.create(batch=batch, row_number=2, reason="birth_date: not a date", raw={"customer_key": "C2"})
    SourceRecord.objects.create(source=core, customer_key="CIF1", profile=zhang, row_digest="x", first_batch=batch,
                                last_batch=batch, loaded_at=now, needs_resolution=False, full_name="张三")
    vip = TagDefinition.objects.create(code=SEEDS["manual_tag"], name="VIP", kind=TagDefinition.Kind.MANUAL)
    TagDefinition.objects.create(code="called-back", name="Called back", kind=TagDefinition.Kind.MANUAL)
    TagAssignment.objects.create(profile=zhang, tag=vip, source="manual", assigned_at=now)
    rule_tag = TagDefinition.objects.create(code=SEEDS["rule_tag"], name="Shanghai", kind=TagDefinition.Kind.RULE,
                                            rule={"field": "city", "op": "eq", "value": "上海市"})
    tag_rule_refresh(tag=rule_tag)
    Consent.objects.create(profile=zhang, channel="sms", granted=True, source="core", updated_at=now)
    ProfileMetrics.objects.create(profile=zhang, as_of=timezone.localdate(), lifecycle_stage="active",
                                  value_tier="mid", computed_at=now)
    women = segment_save(segment=Segment(name="Women", slug=SEEDS["slug"], rule=WOMEN))
    job = segment_refresh(segment=women, job=RefreshJob.objects.create(pk=SEEDS["job"], segment=women))
    assert job.member_count == 1 and RefreshJob.objects.count() == 2


@pytest.fixture
def all_scopes_key(api_client, seeded):
    return api_client(scopes=list(Scope.values)).key


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_generated_request_gets_a_server_error(case, wsgi_app, all_scopes_key):
    savepoint = transaction.savepoint()
    try:
        case.call_and_validate(app=wsgi_app, headers={"Authorization": f"Bearer {all_scopes_key}"},
                               checks=[not_a_server_error, response_schema_conformance])
    finally:
        transaction.savepoint_rollback(savepoint)
