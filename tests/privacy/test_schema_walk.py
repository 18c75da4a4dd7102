"""No door of the API shows a loaded customer's personal data clear to a key without profiles:read_pii.

Feeds with known personal values are loaded from two sources and resolved; around them, a segment and a rule tag
whose rules test personal fields (saved by a key allowed to), a manual tag, consent and metrics. Then every GET
operation of the OpenAPI schema, with its path parameters filled from those rows, and the read-style POSTs (lookup,
preview, diff) are called by a key holding every scope except the personal-data ones (profiles:read_pii, privacy:rights), as JSON and as the browsable API's
HTML pages (which a key may ask for with `?format=api`), and no response body may hold a clear value (phone, e-mail,
full name, birth date, address, id number) in any of the forms the feeds gave or the platform stores. The same walk with every scope finds each value somewhere, so the walk reaches the data.
"""
import datetime as dt
import html
import json
import urllib.parse

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from api.keys import api_key_create
from api.models import PERSONAL_DATA_SCOPES, Scope
from profiles.feeds import feed_load
from profiles.metrics import profile_metrics_recompute
from profiles.models import Consent, CustomerProfile, FeedBatch
from profiles.resolution import identity_resolve
from segments.models import RefreshJob, Segment
from segments.services import segment_refresh, segment_save, tag_definition_save, tag_rule_refresh
from tags.models import TagAssignment, TagDefinition
from tests.factories import cn_resident_id, customer

pytestmark = pytest.mark.django_db

CUSTOMERS = [
    {"key": "W1", "full_name": "李安然", "birth": dt.date(1958, 3, 23), "phone": "136 0043 6658",
     "e164": "+8613600436658", "email": "Li.Anran@Example.com", "address": "上海市浦东新区世纪大道1000号金茂大厦",
     "city": "上海市"},
    {"key": "W2", "full_name": "Chen Jiahui", "birth": dt.date(1991, 11, 5), "phone": "+86-139-1287-5634",
     "e164": "+8613912875634", "email": "jiahui.chen@qq.com", "address": "北京市朝阳区建国路88号华贸中心",
     "city": "北京市"},
]
PERSONAL_RULE = {"all": [{"field": "city", "op": "eq", "value": "上海市"},
                         {"field": "phone", "op": "startswith", "value": "+861360043665"}]}
CITY_RULE = {"field": "city", "op": "in", "value": ["上海市", "北京市"]}
# The POSTs that read: each with a body a reader would send.
READ_POSTS = {
    "/api/v1/profiles/lookup/": [{"source": "core", "key": "W1"}, {"phone": CUSTOMERS[0]["e164"]},
                                 {"email": CUSTOMERS[1]["email"]}],
    "/api/v1/segments/preview/": [{"rule": CITY_RULE}, {"rule": PERSONAL_RULE}],
    "/api/v1/segments/{slug}/diff/": [{"rule": CITY_RULE}, {"rule": PERSONAL_RULE}],
}


def _clear_values(person: dict) -> set[str]:
    """Every form in which a customer's personal data could leave: as the feed gave it and as stored."""
    id_number = cn_resident_id(person["birth"])
    email = person["email"]
    return {person["full_name"], person["birth"].isoformat(), person["birth"].strftime("%Y%m%d"), person["phone"],
            person["e164"], person["e164"][3:], email, email.lower(), email.split("@")[0].lower(), person["address"],
            id_number, id_number[6:]}


@pytest.fixture
def loaded(write_feed, settings, tmp_path):
    """Two sources' feeds of the same customers, resolved into profiles, with what the API's paths name."""
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "uploads"
    batches = []
    for source, prefix in (("core", ""), ("card", "K")):
        rows = [customer(prefix + p["key"], full_name=p["full_name"], gender="F", birth_date=p["birth"].isoformat(),
                         id_type="CN_RESIDENT", id_number=cn_resident_id(p["birth"]), phone=p["phone"],
                         email=p["email"], address=p["address"], city=p["city"]) for p in CUSTOMERS]
        batch = feed_load(source=source, path=write_feed(rows, name=f"{source}.csv"))
        assert (batch.status, batch.rows_rejected) == (FeedBatch.Status.SUCCEEDED, 0)
        batches.append(batch)
    identity_resolve()
    profiles = list(CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE))
    assert len(profiles) == 2 and all(p.record_count == 2 for p in profiles)
    profile_metrics_recompute()
    now = timezone.now()
    vip = TagDefinition.objects.create(code="vip", name="VIP", kind=TagDefinition.Kind.MANUAL)
    for profile in profiles:
        TagAssignment.objects.create(profile=profile, tag=vip, source="manual", assigned_at=now)
        Consent.objects.create(profile=profile, channel="sms", granted=True, source="core", updated_at=now)
    guessed = tag_definition_save(tag=TagDefinition(code="guessed", name="Guessed", kind=TagDefinition.Kind.RULE,
                                                    rule=PERSONAL_RULE))
    tag_rule_refresh(tag=guessed)
    segments = []
    for slug, rule in (("guessed-phone", PERSONAL_RULE), ("two-cities", CITY_RULE)):
        segment = segment_save(segment=Segment(name=slug, slug=slug, rule=rule))
        segment_refresh(segment=segment)
        segments.append(slug)
    assert Segment.objects.get(slug="guessed-phone").member_count == 1
    return {"public_id": [p.public_id for p in profiles], "slug": segments, "code": ["vip", "guessed"],
            "batch": [b.pk for b in batches], "job": list(RefreshJob.objects.values_list("pk", flat=True)),
            "today": timezone.localdate().isoformat()}


def _calls(loaded: dict) -> list[tuple[str, str, str, dict | None]]:
    """(operation, method, url, body) for every GET of the schema and every read-style POST, on every loaded row."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    calls = []
    for template, operations in schema["paths"].items():
        for method in operations:
            if method == "get":
                bodies = [None]
            elif method == "post" and template in READ_POSTS:
                bodies = READ_POSTS[template]
            else:
                continue
            for url in _urls(template, method, loaded):
                calls += [(f"{method.upper()} {template}", method, url, body) for body in bodies]
    return calls


def _urls(template: str, method: str, loaded: dict) -> list[str]:
    ids = loaded["job"] if "/jobs/refresh/" in template else loaded["batch"]
    urls = [template.replace("{id}", str(i)) for i in ids] if "{id}" in template else [template]
    for name in ("public_id", "slug", "code"):
        if "{" + name + "}" in template:
            urls = [url.replace("{" + name + "}", value) for url in urls for value in loaded[name]]
    if template.endswith("/explain/"):
        urls = [f"{url}?profile={public_id}" for url in urls for public_id in loaded["public_id"]]
    elif template.endswith("/snapshot/"):
        urls = [f"{url}?date={loaded['today']}" for url in urls]
    elif template.endswith("/members/export/"):
        urls = [f"{url}?channel=sms" for url in urls]
    elif template == "/api/v1/profiles/lookup/" and method == "get":
        urls = [f"{template}?source=card&key=KW2", f"{template}?phone={CUSTOMERS[1]['e164'][3:]}"]
    return urls


def _walk(scopes: list[str], loaded: dict, *, browsable: bool = False) -> dict[str, list[tuple[str, int, str]]]:
    """Each operation's responses: (url, status, body as text, JSON and HTML unescaped). `browsable`: the pages of
    the browsable API (`?format=api`), which a key may ask for too."""
    _, key = api_key_create(name="walker", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    responses: dict[str, list[tuple[str, int, str]]] = {}
    for operation, method, url, body in _calls(loaded):
        if browsable:
            url += ("&" if "?" in url else "?") + "format=api"
        response = client.post(url, body, format="json") if method == "post" else client.get(url)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        text = content.decode()
        if response.get("Content-Type", "").startswith("application/json"):
            text = json.dumps(json.loads(text), ensure_ascii=False)
        elif browsable:
            # The page repeats the request's own query in its links (a lookup's phone): the caller's, not the data's.
            text = html.unescape(text)
            for name, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query):
                text = text.replace(f"{name}={value}", "")
        responses.setdefault(operation, []).append((url, response.status_code, text))
    return responses


@pytest.mark.parametrize("browsable", [False, True], ids=["json", "browsable-api"])
def test_no_response_shows_a_clear_personal_value_to_a_key_without_read_pii(loaded, browsable):
    responses = _walk([s for s in Scope.values if s not in PERSONAL_DATA_SCOPES], loaded, browsable=browsable)

    schema = SchemaGenerator().get_schema(request=None, public=True)
    gets = {f"GET {path}" for path, operations in schema["paths"].items() if "get" in operations}
    assert gets | {f"POST {path}" for path in READ_POSTS} == set(responses)
    clear = set().union(*(_clear_values(p) for p in CUSTOMERS))
    leaks = [(url, value) for calls in responses.values() for url, _, text in calls for value in clear
             if value.lower() in text.lower()]
    assert leaks == []
    # The walk reached the data: every GET answered 200; a search by a personal field was refused.
    statuses = {(operation, url): status for operation, calls in responses.items() for url, status, _ in calls}
    refused = {call for call, status in statuses.items() if status == 403}
    assert all(status in (200, 403) for status in statuses.values()), statuses
    assert {operation for operation, _ in refused} == {
        "GET /api/v1/profiles/lookup/", "POST /api/v1/profiles/lookup/", "POST /api/v1/segments/preview/",
        "POST /api/v1/segments/{slug}/diff/", "GET /api/v1/privacy/subjects/{public_id}/"}


def test_the_same_walk_with_read_pii_finds_every_value_so_the_walk_reaches_the_data(loaded):
    responses = _walk(list(Scope.values), loaded)

    bodies = "\n".join(text for calls in responses.values() for _, status, text in calls if status == 200)
    for person in CUSTOMERS:
        shown = {person["full_name"], person["birth"].isoformat(), person["e164"], person["email"].lower(),
                 person["address"]}
        assert {value for value in shown if value not in bodies} == set()
