"""Hostile input at the API's edge: deep JSON, NUL bytes, lone surrogates, oversized bodies and rules.

Given a key with every scope, when a crafted request arrives, then the answer is a 4xx with the JSON error body
(`code`, `message`, naming the limit where one applies) and nothing is written: never a 500, never HTML.
"""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from api.models import Scope
from profiles.models import Consent, CustomerProfile, FeedBatch
from segments.models import RefreshJob, Segment
from tags.models import TagAssignment, TagDefinition

pytestmark = pytest.mark.django_db

# The limits the README states (API, "Limits"; the rule language, "Limits").
MAX_JSON_DEPTH = 64
MAX_RULE_NODES = 500
WOMEN = {"field": "gender", "op": "eq", "value": "F"}


@pytest.fixture
def client(api_client):
    client = api_client(scopes=list(Scope.values))
    client.raise_request_exception = False  # a server error is a response here, as a real client would see it
    return client


@pytest.fixture
def zhang(db):
    return CustomerProfile.objects.create(public_id="PHOSTILE0001", full_name="张三", gender="F", city="上海市",
                                          phone="+8613812345678", record_count=1)


@pytest.fixture
def women(db):
    return Segment.objects.create(name="Women", slug="women", rule=WOMEN)


def _send(client, method: str, path: str, body: str, content_type="application/json"):
    return getattr(client, method)(path, data=body.encode("utf-8", "surrogatepass"), content_type=content_type)


def _deep(levels: int) -> str:
    return '{"rule": ' + "[" * levels + "]" * levels + "}"


def _json_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["code"] and body["message"]
    return body


# Every JSON endpoint that parses a body: (method, path) with the seeded profile and segment.
JSON_ENDPOINTS = [
    ("post", "/api/v1/segments/preview/"),
    ("post", "/api/v1/segments/women/diff/"),
    ("post", "/api/v1/segments/"),
    ("put", "/api/v1/segments/women/"),
    ("patch", "/api/v1/segments/women/"),
    ("post", "/api/v1/tags/"),
    ("patch", "/api/v1/tags/vip/"),
    ("post", "/api/v1/profiles/lookup/"),
    ("put", "/api/v1/profiles/PHOSTILE0001/consent/sms/"),
    ("post", "/api/v1/profiles/PHOSTILE0001/tags/"),
]


@pytest.fixture
def targets(zhang, women):
    TagDefinition.objects.create(code="vip", name="VIP", kind=TagDefinition.Kind.MANUAL)


# Finding 8: JSON nested 10,000 deep.

@pytest.mark.parametrize("method,path", JSON_ENDPOINTS)
def test_json_nested_ten_thousand_deep_is_refused_naming_the_limit(client, targets, method, path):
    response = _send(client, method, path, _deep(10_000))

    body = _json_error(response, 400)
    assert body["code"] == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in body["message"]
    assert body["details"] == {"max_depth": MAX_JSON_DEPTH}
    assert Segment.objects.get(slug="women").rule == WOMEN


def test_json_just_past_the_depth_limit_is_refused_and_at_the_limit_is_parsed(client, targets):
    # {"rule": [[...]]}: the body object is level 1, so MAX_JSON_DEPTH - 1 lists reach the limit exactly.
    at_limit = _send(client, "post", "/api/v1/segments/preview/", _deep(MAX_JSON_DEPTH - 1))
    past_limit = _send(client, "post", "/api/v1/segments/preview/", _deep(MAX_JSON_DEPTH))

    assert _json_error(at_limit, 400)["code"] == "invalid_rule"  # parsed: the rule language refuses a list
    assert _json_error(past_limit, 400)["code"] == "json_too_deep"


# Finding 9: NUL bytes and lone surrogates anywhere in a JSON string, a query string or a form field.

HOSTILE_STRINGS = ["a\u0000b", "\ud800", "x\udfffy"]


@pytest.mark.parametrize("value", HOSTILE_STRINGS, ids=["nul", "lone-high-surrogate", "lone-low-surrogate"])
@pytest.mark.parametrize("method,path,body", [
    ("post", "/api/v1/segments/preview/", lambda v: {"rule": {"field": "city", "op": "eq", "value": v}}),
    ("post", "/api/v1/segments/preview/", lambda v: {"rule": {"tag": v}}),
    ("post", "/api/v1/segments/preview/", lambda v: {"rule": {"segment": v}}),
    ("post", "/api/v1/segments/preview/", lambda v: {"rule": {"all": [WOMEN, {v: 1}]}}),
    ("post", "/api/v1/segments/", lambda v: {"name": v, "slug": "s1", "rule": WOMEN}),
    ("post", "/api/v1/profiles/lookup/", lambda v: {"phone": v}),
    ("post", "/api/v1/profiles/lookup/", lambda v: {"source": "core", "key": v}),
    ("post", "/api/v1/profiles/lookup/", lambda v: {"phone": "13812345678", "id_type": v}),  # a choice field
    ("post", "/api/v1/profiles/PHOSTILE0001/tags/", lambda v: {"code": v}),
    ("put", "/api/v1/profiles/PHOSTILE0001/consent/sms/", lambda v: {"granted": True, "source": v}),
])
def test_nul_and_lone_surrogates_in_json_strings_are_refused_at_the_edge(client, targets, method, path, body,
                                                                           value):
    response = _send(client, method, path, json.dumps(body(value)))

    error = _json_error(response, 400)
    assert error["code"] == "invalid_characters"
    assert not Segment.objects.filter(slug="s1").exists()
    assert not TagAssignment.objects.exists() and not Consent.objects.exists()


@pytest.mark.parametrize("query", ["phone=a%00b", "source=core&key=a%00", "email=%00",
                                   "id_type=%00&phone=13812345678"])
def test_nul_and_surrogates_in_a_query_string_are_refused(client, zhang, query):
    response = client.get(f"/api/v1/profiles/lookup/?{query}")

    assert _json_error(response, 400)["code"] == "invalid_characters"


def test_nul_in_a_query_parameter_of_a_list_or_explain_is_refused(client, zhang, women):
    for path in ["/api/v1/profiles/?city=a%00b", "/api/v1/segments/women/explain/?profile=P%00",
                 "/api/v1/segments/women/history/?profile=%00"]:
        assert _json_error(client.get(path), 400)["code"] == "invalid_characters", path


@pytest.mark.parametrize("moment,status", [("1507-08-25T22:14:00.700000-17:04", 200),
                                           ("9999-12-31T23:00:00-17:00", 400)])
def test_a_date_time_with_an_offset_postgresql_refuses_is_taken_in_utc_or_refused(client, zhang, moment, status):
    response = client.get("/api/v1/profiles/", {"updated_since": moment})

    assert response.status_code == status, response.content[:300]
    if status == 400:
        assert _json_error(response, 400)["details"]["updated_since"]


# Finding 12: every 4xx and 413 is the JSON error body.

def test_a_body_over_the_size_limit_is_a_json_413(client, targets, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"rule": {"field": "city", "op": "in", "value": ["上海市" * 10] * 100}})

    response = _send(client, "post", "/api/v1/segments/preview/", body)

    error = _json_error(response, 413)
    assert error["code"] == "request_too_large"
    assert error["details"] == {"max_bytes": 1000}


def test_a_fifty_megabyte_body_is_a_json_413(client, targets):
    body = '{"rule": {"field": "city", "op": "eq", "value": "' + "a" * (50 * 1024 * 1024) + '"}}'

    assert _json_error(_send(client, "post", "/api/v1/segments/preview/", body), 413)["code"] == "request_too_large"


def test_an_upload_larger_than_a_feed_may_be_is_refused_and_nothing_is_queued(client, settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path
    settings.CDP_FEED_MAX_BYTES = 100
    upload = SimpleUploadedFile("core.csv", b"customer_key,full_name\n" + b"C1,Zhang Wei\n" * 50)

    response = client.post("/api/v1/feeds/batches/upload/", {"source": "core", "file": upload}, format="multipart")

    error = _json_error(response, 400)
    assert "CDP_FEED_MAX_BYTES" in str(error["details"]["file"])
    assert not FeedBatch.objects.exists() and not list(tmp_path.iterdir())


def test_nul_in_an_upload_form_field_is_refused(client, settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path
    upload = SimpleUploadedFile("core.csv", b"customer_key\nC1\n")

    response = client.post("/api/v1/feeds/batches/upload/", {"source": "co\x00re", "file": upload},
                           format="multipart")

    assert _json_error(response, 400)["code"] == "invalid_characters"
    assert not FeedBatch.objects.exists()


def test_a_malformed_body_is_a_json_400(client, targets):
    assert _json_error(_send(client, "post", "/api/v1/segments/preview/", '{"rule": '), 400)["code"] == "parse_error"


# Finding 11: the size of a rule is bounded, and tag leaves are not a query each.

def test_a_rule_of_more_nodes_than_the_limit_is_refused_naming_the_limit(client, targets):
    rule = {"any": [{"field": "city", "op": "eq", "value": f"city {i}"} for i in range(MAX_RULE_NODES)]}

    error = _json_error(client.post("/api/v1/segments/preview/", {"rule": rule}, format="json"), 400)

    assert error["code"] == "invalid_rule"
    assert str(MAX_RULE_NODES) in error["message"]


def test_a_rule_of_many_tag_leaves_looks_the_tags_up_in_one_query(client, zhang, django_assert_max_num_queries):
    now = timezone.now()
    tags = TagDefinition.objects.bulk_create(
        [TagDefinition(code=f"t{i}", name=f"T{i}", kind=TagDefinition.Kind.MANUAL) for i in range(200)])
    TagAssignment.objects.create(profile=zhang, tag=tags[-1], source="manual", assigned_at=now)
    rule = {"any": [{"tag": tag.code} for tag in tags]}

    # Authentication, the key's scopes and rate, the tag lookup, the count and the sample: not one per leaf.
    with django_assert_max_num_queries(12):
        response = client.post("/api/v1/segments/preview/", {"rule": rule}, format="json")

    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_an_unknown_tag_among_many_is_named_by_its_path(client, zhang):
    TagDefinition.objects.bulk_create(
        [TagDefinition(code=f"t{i}", name=f"T{i}", kind=TagDefinition.Kind.MANUAL) for i in range(3)])
    rule = {"any": [{"tag": "t0"}, {"tag": "t1"}, {"tag": "nope"}, {"tag": "t2"}]}

    error = _json_error(client.post("/api/v1/segments/preview/", {"rule": rule}, format="json"), 400)

    assert error["details"] == {"path": "any[2].tag"}
    assert "nope" in error["message"]


# Finding 12: the schema matches the responses.

def test_a_refresh_job_of_a_tag_has_a_null_segment_as_the_schema_says(client, targets):
    from drf_spectacular.generators import SchemaGenerator
    schema = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    tag = TagDefinition.objects.create(code="rich", name="Rich", kind=TagDefinition.Kind.RULE, rule=WOMEN)
    job = RefreshJob.objects.create(tag=tag)

    body = client.get(f"/api/v1/jobs/refresh/{job.pk}/").json()

    assert body["segment"] is None
    assert schema["RefreshJob"]["properties"]["segment"].get("nullable") is True
    assert schema["RefreshJob"]["properties"]["tag"].get("nullable") is True


def test_a_patched_segment_answers_with_every_field_the_schema_requires(client, targets):
    from drf_spectacular.generators import SchemaGenerator
    required = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]["Segment"]["required"]

    body = client.patch("/api/v1/segments/women/", {"name": "Women too"}, format="json").json()

    assert set(required) <= set(body), set(required) - set(body)
    assert body["owner"] is None
