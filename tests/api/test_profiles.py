"""Profile endpoints: reads, filters, lookup, sub-resources, masking and audit, writes and their scopes."""
import datetime as dt
import itertools

import pytest
from django.db import connection
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from privacy.models import AuditRecord
from profiles.models import Consent, CustomerProfile, FeedBatch, ProfileMetrics, Source, SourceRecord
from profiles.normalize import keyed_hash
from segments.models import Segment, SegmentMember
from tags.models import TagAssignment, TagDefinition
from tests.api.conftest import grant
from tests.factories import cn_resident_id

pytestmark = pytest.mark.django_db

ID_NUMBER = cn_resident_id(dt.date(1980, 1, 1))  # 110105 19800101 123 + check digit
_keys = itertools.count(1)
READ = ["profiles:read"]
PII = ["profiles:read", "profiles:read_pii"]
WRITE = ["profiles:read", "profiles:write"]


def _profile(**fields) -> CustomerProfile:
    return CustomerProfile.objects.create(public_id=f"PA{next(_keys):08d}", **fields)


def _record(profile, source="core", **fields) -> SourceRecord:
    src = Source.objects.get(code=source)
    batch = FeedBatch.objects.create(source=src, file_name=f"{source}.csv", status=FeedBatch.Status.SUCCEEDED)
    return SourceRecord.objects.create(source=src, customer_key=fields.pop("customer_key", f"K{next(_keys)}"),
                                       profile=profile, row_digest="x", first_batch=batch, last_batch=batch,
                                       loaded_at=timezone.now(), needs_resolution=False, **fields)


@pytest.fixture
def zhang():
    """张伟 with two source records, a manual tag, a segment (in the holdout), metrics, lineage and one consent."""
    today = timezone.localdate()
    profile = _profile(full_name="张伟", family_name="张", given_name="伟", gender="M", birth_date=dt.date(1980, 1, 1),
                       id_type="CN_RESIDENT", id_number_hash=keyed_hash(ID_NUMBER, "id"),
                       id_number_masked="110***********" + ID_NUMBER[-4:], phone="+8613912875634",
                       email="zhang.wei@example.com", address="北京市朝阳区建国路88号", city="北京市", postcode="100020",
                       record_count=2)
    core = _record(profile, "core", customer_key="CIF001", full_name="张伟", phone="+8613912875634",
                   birth_date=dt.date(1980, 1, 1), id_type="CN_RESIDENT", id_number_masked=profile.id_number_masked)
    _record(profile, "card", customer_key="CARD9", full_name="张伟", pan_bin="622202", pan_last4="4321",
            pan_token="tok", attributes={"card_status": "active"})
    CustomerProfile.objects.filter(pk=profile.pk).update(name_record=core, name_batch=core.last_batch)
    vip = TagDefinition.objects.create(code="vip", name="VIP")
    TagAssignment.objects.create(profile=profile, tag=vip, source="manual", assigned_at=timezone.now())
    seniors = Segment.objects.create(name="Seniors", slug="seniors", current_version=2)
    SegmentMember.objects.create(segment=seniors, version=2, profile=profile, in_holdout=True)
    SegmentMember.objects.create(segment=seniors, version=1, profile=_profile(), in_holdout=False)  # stale version
    ProfileMetrics.objects.create(profile=profile, as_of=today, lifecycle_stage="active", value_tier="high",
                                  aum=1_000_000, computed_at=timezone.now())
    Consent.objects.create(profile=profile, channel="sms", granted=True, source="core",
                           updated_at=timezone.now() - dt.timedelta(days=3))
    return profile


@pytest.fixture
def absorbed(zhang):
    return _profile(full_name="张伟", status="merged", merged_into=zhang, merged_at=timezone.now())


def url(profile_or_id, suffix=""):
    public_id = getattr(profile_or_id, "public_id", profile_or_id)
    return f"/api/v1/profiles/{public_id}/{suffix}"


# --- retrieve, masking, audit ----------------------------------------------------------------------------------

def test_retrieve_masks_personal_fields_without_read_pii_and_writes_no_audit(api_client, zhang):
    body = api_client(scopes=READ).get(url(zhang)).json()
    assert body == {
        "id": zhang.public_id, "full_name": "张*", "family_name": "张", "given_name": "*",
        "gender": "M", "birth_date": "1980-**-**", "id_type": "CN_RESIDENT",
        "id_number_masked": "110***********" + ID_NUMBER[-4:], "phone": "139****5634",
        "email": "z*******@example.com", "address": "北京市朝****", "city": "北京市", "postcode": "100020",
        "lifecycle_stage": "active", "value_tier": "high", "record_count": 2,
        "created_at": body["created_at"], "updated_at": body["updated_at"], "resolved_from": None,
    }
    assert not AuditRecord.objects.exists()


def test_retrieve_with_read_pii_returns_clear_values_and_audits_them(api_client, zhang):
    client = api_client(scopes=PII)
    response = client.get(url(zhang), HTTP_X_REQUEST_ID="req-42")
    body = response.json()
    assert (body["full_name"], body["phone"], body["email"], body["birth_date"], body["address"]) == (
        "张伟", "+8613912875634", "zhang.wei@example.com", "1980-01-01", "北京市朝阳区建国路88号")
    assert body["id_number_masked"] == "110***********" + ID_NUMBER[-4:]  # never stored in clear
    audit = AuditRecord.objects.get()
    assert audit.api_key == client.api_key and audit.user is None
    assert audit.profile_public_id == zhang.public_id
    assert audit.fields == ["address", "birth_date", "email", "family_name", "full_name", "given_name", "phone"]
    assert (audit.request_id, audit.method, audit.path) == ("req-42", "GET", url(zhang))


def test_staff_session_sees_clear_values_and_is_audited_as_the_user(staff_client, staff_user, zhang):
    grant(staff_user, "profiles.view_customerprofile", "privacy.view_pii")
    assert staff_client.get(url(zhang)).json()["phone"] == "+8613912875634"
    audit = AuditRecord.objects.get()
    assert audit.user == staff_user and audit.api_key is None


def test_a_key_or_user_named_by_audit_records_cannot_be_deleted(api_client, staff_client, staff_user, zhang):
    client = api_client(scopes=PII)
    client.get(url(zhang))
    grant(staff_user, "profiles.view_customerprofile", "privacy.view_pii")
    staff_client.get(url(zhang))
    for who in (client.api_key, staff_user):
        with pytest.raises(ProtectedError):
            who.delete()
    assert AuditRecord.objects.count() == 2


def test_an_absorbed_id_answers_with_the_survivor_and_says_so(api_client, zhang, absorbed):
    response = api_client(scopes=READ).get(url(absorbed))
    assert response.status_code == 200
    assert response.json()["id"] == zhang.public_id
    assert response.json()["resolved_from"] == absorbed.public_id
    assert response["X-Resolved-From"] == absorbed.public_id
    assert response["Content-Location"].endswith(url(zhang))
    # Sub-resources of an absorbed id are the survivor's too.
    tags = api_client(scopes=READ).get(url(absorbed, "tags/"))
    assert [t["code"] for t in tags.json()] == ["vip"] and tags["X-Resolved-From"] == absorbed.public_id


def test_unknown_profile_is_a_json_404(api_client, db):
    client = api_client(scopes=READ)
    for path in ("PNOPE/", "PNOPE/tags/", "PNOPE/metrics/", "PNOPE/consent/"):
        response = client.get(f"/api/v1/profiles/{path}")
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# --- query counts: a constant number whatever the response holds ---------------------------------------------

def _count_queries(client, path, **extra) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path, **extra)
        assert response.status_code == 200, (path, response.content[:300])
    return len(ctx.captured_queries)


def _steady_client(api_client, scopes):
    client = api_client(scopes=scopes)
    client.get("/api/schema/")  # the first request of a key reads and caches it and records its use
    client.get("/api/v1/profiles/lookup/?source=core&key=-")  # and the first lookup by key caches the source's id
    return client


@pytest.fixture
def small(db):
    """A profile with one of everything the profile endpoints return."""
    from tests.profiles.test_metrics import Bank
    profile = _profile(full_name="李四", phone="+8613900001111", record_count=1)
    record = _record(profile, "core", customer_key="CIF002", full_name="李四", phone="+8613900001111")
    CustomerProfile.objects.filter(pk=profile.pk).update(name_record=record, name_batch=record.last_batch)
    tag = TagDefinition.objects.create(code="small", name="small")
    TagAssignment.objects.create(profile=profile, tag=tag, source="manual", assigned_at=timezone.now())
    segment = Segment.objects.create(name="Small", slug="small", current_version=1)
    SegmentMember.objects.create(segment=segment, version=1, profile=profile)
    ProfileMetrics.objects.create(profile=profile, as_of=timezone.localdate(), computed_at=timezone.now())
    Consent.objects.create(profile=profile, channel="sms", granted=True, source="core", updated_at=timezone.now())
    Bank().txn("CIF002", timezone.now() - dt.timedelta(days=1), "-10", "payment")
    return profile


@pytest.fixture
def large(zhang):
    """张伟 with many of everything: records in every source, tags, segments (and stale versions of them),
    lineage of every group, every consent, metrics with their JSON filled, and activity of every kind."""
    from tests.profiles.test_metrics import Bank
    bank = Bank()
    for n in range(6):
        record = _record(zhang, ("core", "card", "wealth")[n % 3], customer_key=f"L{n}", full_name="张伟",
                         phone="+8613912875634", email="zhang.wei@example.com", address="北京市朝阳区建国路88号")
        bank.account(f"L{n}", "savings", "1000", dt.date(2020, 1, n + 1))
        bank.txn(f"L{n}", timezone.now() - dt.timedelta(days=n + 1), "-10", "payment")
        bank.card(f"L{n}", timezone.now() - dt.timedelta(days=n + 1), "20")
        bank.holding(f"L{n}", "fund", "5000")
        bank.risk(f"L{n}", "C3", dt.date(2026, 1, n + 1))
        tag = TagDefinition.objects.create(code=f"t{n}", name=f"t{n}")
        TagAssignment.objects.create(profile=zhang, tag=tag, source="manual", assigned_at=timezone.now())
        segment = Segment.objects.create(name=f"S{n}", slug=f"s{n}", current_version=3)
        SegmentMember.objects.create(segment=segment, version=3, profile=zhang, in_holdout=n % 2 == 0)
        SegmentMember.objects.create(segment=segment, version=2, profile=zhang)
    for attribute, record in zip(("gender", "birth_date", "phone", "email", "address"),
                                 SourceRecord.objects.filter(profile=zhang)):
        CustomerProfile.objects.filter(pk=zhang.pk).update(
            **{f"{attribute}_record": record, f"{attribute}_batch": record.last_batch})
    for channel in ("email", "push", "phone"):
        Consent.objects.create(profile=zhang, channel=channel, granted=False, source="app", updated_at=timezone.now())
    ProfileMetrics.objects.filter(profile=zhang).update(
        txn_counts_90d={"payment": 6}, product_types=["fund", "savings"], churn_signals={"activity_drop": 0},
        next_best_products=["insurance"])
    CustomerProfile.objects.filter(pk=zhang.pk).update(record_count=SourceRecord.objects.filter(profile=zhang).count())
    return zhang


# The profile (one fixed query, whether it has metrics or not), the audit insert of the clear values; the key comes
# from the verification cache once the first request has read it.
DETAIL_QUERIES = 2


def test_retrieve_and_lookup_run_a_constant_number_of_queries(api_client, small, large,
                                                            django_assert_max_num_queries):
    client = _steady_client(api_client, PII)
    bare = _profile(full_name="王五", phone="+8613700002222")  # no metrics, no records: the LEFT JOIN finds nothing
    assert client.get(url(bare)).json()["lifecycle_stage"] is None
    rich = client.get(url(large)).json()
    assert (rich["record_count"], rich["lifecycle_stage"], rich["value_tier"]) == (8, "active", "high")
    for path in (url(large), url(small), url(bare), "/api/v1/profiles/lookup/?source=core&key=CIF001",
                 "/api/v1/profiles/lookup/?source=core&key=CIF002", "/api/v1/profiles/lookup/?phone=13912875634",
                 "/api/v1/profiles/lookup/?phone=13700002222"):
        with django_assert_max_num_queries(DETAIL_QUERIES):
            assert _count_queries(client, path) == DETAIL_QUERIES, path


# Queries of each sub-resource: the profile, then what the sub-resource reads (an audit insert for the clear personal
# values of the source records; lineage reads the records and the batches its profile names).
SUB_RESOURCE_QUERIES = {"source-records/": 3, "tags/": 2, "segments/": 2, "metrics/": 2, "lineage/": 3,
                        "consent/": 2, "timeline/": 3}


@pytest.mark.parametrize("suffix", sorted(SUB_RESOURCE_QUERIES))
def test_each_sub_resource_runs_a_constant_number_of_queries(api_client, small, large, suffix,
                                                             django_assert_max_num_queries):
    client = _steady_client(api_client, PII)
    few, many = client.get(url(small, suffix)).json(), client.get(url(large, suffix)).json()
    if isinstance(few, list) and suffix != "consent/":  # consent lists every channel, decided or not
        assert len(many) >= 3 * len(few) >= 3, (suffix, len(few), len(many))
    expected = SUB_RESOURCE_QUERIES[suffix]
    for profile in (small, large):
        with django_assert_max_num_queries(expected):
            assert _count_queries(client, url(profile, suffix)) == expected


# The page (profiles with their lifecycle stage and value tier in one query), the audit insert.
LIST_QUERIES = 2


def test_list_runs_a_constant_number_of_queries_whatever_the_page_holds(api_client, small, large,
                                                                       django_assert_max_num_queries):
    client = _steady_client(api_client, PII)
    page_of_one = "/api/v1/profiles/?page_size=2&city=北京市"
    for n in range(30):
        p = _profile(full_name=f"王{n}", city="上海市", phone=f"+86139000{n:05d}", email=f"w{n}@qq.com")
        _record(p, "core")
        ProfileMetrics.objects.create(profile=p, as_of=timezone.localdate(), lifecycle_stage="new", value_tier="low",
                                      computed_at=timezone.now())
    full_page = "/api/v1/profiles/?page_size=30&city=上海市"
    assert len(client.get(page_of_one).json()["results"]) == 1
    assert len(client.get(full_page).json()["results"]) == 30
    for path in (page_of_one, full_page):
        with django_assert_max_num_queries(LIST_QUERIES):
            assert _count_queries(client, path) == LIST_QUERIES, path


# --- list and filters ------------------------------------------------------------------------------------------

def _years_ago(day: dt.date, years: int) -> dt.date:
    """The same day `years` before; 29 February, in a year without one, is the 28th (its birthday is then)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


@pytest.fixture(params=["today", "2028-02-29", "2027-03-01"])
def today(request, monkeypatch) -> dt.date:
    """The real date, and the days around a leap day on which ages are easy to get wrong."""
    if request.param == "today":
        return timezone.localdate()
    day = dt.date.fromisoformat(request.param)
    monkeypatch.setattr(timezone, "localdate", lambda *args, **kwargs: day)
    return day


@pytest.fixture
def crowd(zhang, absorbed, today):
    li = _profile(full_name="李娜", gender="F", city="上海市", birth_date=_years_ago(today, 30))
    wang = _profile(full_name="王芳", gender="F", city="北京市", birth_date=_years_ago(today, 61) + dt.timedelta(days=1))
    ProfileMetrics.objects.create(profile=li, as_of=today, lifecycle_stage="new", value_tier="mid",
                                  computed_at=timezone.now())
    return {"zhang": zhang, "li": li, "wang": wang, "absorbed": absorbed}


def _ids(response):
    assert response.status_code == 200, response.content
    return [p["id"] for p in response.json()["results"]]


def test_list_returns_live_profiles_masked_and_filters(api_client, crowd):
    client = api_client(scopes=READ)
    zhang, li, wang = crowd["zhang"].public_id, crowd["li"].public_id, crowd["wang"].public_id
    everyone = _ids(client.get("/api/v1/profiles/"))
    assert crowd["absorbed"].public_id not in everyone and {zhang, li, wang} <= set(everyone)
    assert client.get("/api/v1/profiles/?city=北京市").json()["results"][0]["full_name"] == "张*"
    cases = {
        "city=北京市": [zhang, wang],
        "gender=F": [li, wang],
        "age_min=40": [zhang, wang],
        "age_min=61": [],  # 王芳 turns 61 tomorrow: she is 60 (on 29 February 2028, born 1 March 1967)
        "age_min=60&age_max=60": [wang],
        "age_max=30": [li],
        "age_max=29": [],
        "tag=vip": [zhang],
        "segment=seniors": [zhang],
        "lifecycle_stage=new": [li],
        "value_tier=high": [zhang],
        "city=北京市&gender=M": [zhang],
        f"updated_since={(timezone.now() + dt.timedelta(hours=1)).isoformat().replace('+', '%2B')}": [],
    }
    for query, expected in cases.items():
        assert _ids(client.get(f"/api/v1/profiles/?{query}")) == expected, query


def test_list_with_read_pii_audits_each_profile_of_the_page(api_client, crowd):
    client = api_client(scopes=PII)
    ids = _ids(client.get("/api/v1/profiles/?city=北京市"))
    assert sorted(AuditRecord.objects.values_list("profile_public_id", flat=True)) == sorted(ids)


MASKED_ZHANG = {"full_name": "张*", "family_name": "张", "given_name": "*", "birth_date": "1980-**-**",
                "phone": "139****5634", "email": "z*******@example.com", "address": "北京市朝****"}
CLEAR_ZHANG = {"full_name": "张伟", "family_name": "张", "given_name": "伟", "birth_date": "1980-01-01",
               "phone": "+8613912875634", "email": "zhang.wei@example.com", "address": "北京市朝阳区建国路88号"}


def _personal(body: dict) -> dict:
    return {name: body[name] for name in MASKED_ZHANG}


def test_list_masks_every_personal_field_without_read_pii(api_client, crowd):
    results = api_client(scopes=READ).get("/api/v1/profiles/?city=北京市").json()["results"]
    by_id = {p["id"]: p for p in results}
    assert _personal(by_id[crowd["zhang"].public_id]) == MASKED_ZHANG
    wang = by_id[crowd["wang"].public_id]
    assert (wang["full_name"], wang["birth_date"]) == ("王*", f"{crowd['wang'].birth_date.year}-**-**")
    assert by_id[crowd["zhang"].public_id]["id_number_masked"] == "110***********" + ID_NUMBER[-4:]
    assert not AuditRecord.objects.exists()


def test_list_with_read_pii_returns_clear_values(api_client, crowd):
    results = api_client(scopes=PII).get("/api/v1/profiles/?city=北京市").json()["results"]
    by_id = {p["id"]: p for p in results}
    assert _personal(by_id[crowd["zhang"].public_id]) == CLEAR_ZHANG
    assert by_id[crowd["wang"].public_id]["birth_date"] == crowd["wang"].birth_date.isoformat()
    assert by_id[crowd["zhang"].public_id]["id_number_masked"] == "110***********" + ID_NUMBER[-4:]


def _lookup(client, method: str, query: dict):
    if method == "post":
        return client.post("/api/v1/profiles/lookup/", query, format="json")
    return client.get("/api/v1/profiles/lookup/", query)


@pytest.mark.parametrize("method", ["get", "post"])
def test_lookup_masks_without_read_pii_and_returns_clear_values_with_it(api_client, zhang, method):
    masked = _lookup(api_client(scopes=READ), method, {"source": "core", "key": "CIF001"}).json()
    assert masked["id"] == zhang.public_id and _personal(masked) == MASKED_ZHANG
    assert not AuditRecord.objects.exists()

    clear = _lookup(api_client(scopes=PII), method, {"phone": "13912875634"}).json()
    assert clear["id"] == zhang.public_id and _personal(clear) == CLEAR_ZHANG
    assert clear["id_number_masked"] == "110***********" + ID_NUMBER[-4:]
    assert AuditRecord.objects.get().profile_public_id == zhang.public_id


def test_list_pages_with_a_cursor(api_client, crowd):
    client = api_client(scopes=READ)
    seen, next_url = [], "/api/v1/profiles/?page_size=2"
    while next_url:
        page = client.get(next_url).json()
        assert len(page["results"]) <= 2
        seen += [p["id"] for p in page["results"]]
        next_url = page["next"]
    assert len(seen) == len(set(seen)) == CustomerProfile.objects.filter(status="active").count()


@pytest.mark.parametrize("query", ["age_min=abc", "age_max=-1", "gender=X", "updated_since=yesterday",
                                   "cursor=garbage", "age_min=1e400"])
def test_bad_filters_are_json_400s_not_500s(api_client, crowd, query):
    response = api_client(scopes=READ).get(f"/api/v1/profiles/?{query}")
    assert response.status_code in (400, 404) and "code" in response.json(), (query, response.content)


# --- lookup ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "source=core&key=CIF001", "source=card&key=CARD9", "phone=139 1287 5634", "phone=%2B86-139-1287-5634",
    "email=Zhang.Wei@Example.COM", f"id_number={ID_NUMBER.lower()}", f"id_number={ID_NUMBER}&id_type=CN_RESIDENT",
    f"id_number={ID_NUMBER[:6] + ID_NUMBER[8:17]}",  # its 15-digit first-generation form
])
def test_lookup_finds_the_profile_by_normalised_identifier(api_client, zhang, query):
    response = api_client(scopes=PII).get(f"/api/v1/profiles/lookup/?{query}")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == zhang.public_id and response.json()["phone"] == "+8613912875634"


def test_lookup_by_post_body_and_of_an_absorbed_record(api_client, zhang, absorbed):
    client = api_client(scopes=PII)
    _record(absorbed, "wealth", customer_key="WM1")  # a record still pointing at the absorbed profile
    response = client.post("/api/v1/profiles/lookup/", {"id_number": ID_NUMBER}, format="json")
    assert response.json()["id"] == zhang.public_id
    assert client.post("/api/v1/profiles/lookup/", {"source": "wealth", "key": "WM1"},
                       format="json").json()["id"] == zhang.public_id
    assert AuditRecord.objects.filter(profile_public_id=zhang.public_id).count() == 2
    assert not AuditRecord.objects.filter(path__contains=ID_NUMBER).exists()


def test_lookup_by_key_follows_a_renamed_source_at_once(api_client, zhang):
    client = api_client(scopes=READ)
    assert client.get("/api/v1/profiles/lookup/?source=card&key=CARD9").status_code == 200  # caches card's id
    card = Source.objects.get(code="card")
    card.code = "cards"
    card.save()
    assert client.get("/api/v1/profiles/lookup/?source=card&key=CARD9").status_code == 404
    assert client.get("/api/v1/profiles/lookup/?source=cards&key=CARD9").json()["id"] == zhang.public_id


@pytest.mark.parametrize("query,status", [
    ("source=core&key=NOPE", 404), ("phone=13800000000", 404), ("email=test@test.com", 404),
    ("id_number=000000000000000000", 404), ("phone=not-a-phone", 404), ("", 400), ("source=core", 400),
    ("phone=13912875634&email=a@b.cn", 400), ("key=CIF001", 400), ("id_type=FOO&id_number=1", 400),
])
def test_lookup_without_a_single_match(api_client, zhang, query, status):
    response = api_client(scopes=PII).get(f"/api/v1/profiles/lookup/?{query}")
    assert response.status_code == status and response.json()["code"], query


def test_lookup_matching_several_profiles_is_a_409_naming_them(api_client, zhang):
    twin = _profile(full_name="张伟", phone="+8613912875634")
    response = api_client(scopes=PII).get("/api/v1/profiles/lookup/?phone=13912875634")
    assert response.status_code == 409
    assert response.json()["details"] == {"profiles": sorted([zhang.public_id, twin.public_id])}


# --- sub-resources ---------------------------------------------------------------------------------------------

def test_source_records_mask_and_show_cards_as_bin_and_last4(api_client, zhang):
    records = api_client(scopes=READ).get(url(zhang, "source-records/")).json()
    assert [(r["source"], r["customer_key"]) for r in records] == [("core", "CIF001"), ("card", "CARD9")]
    core, card = records
    assert (core["full_name"], core["phone"], core["birth_date"]) == ("张*", "139****5634", "1980-**-**")
    assert (card["pan_bin"], card["pan_last4"], card["attributes"]) == ("622202", "4321", {"card_status": "active"})
    assert "pan_token" not in card
    assert not AuditRecord.objects.exists()


def test_source_records_with_read_pii_are_audited_once(api_client, zhang):
    records = api_client(scopes=PII).get(url(zhang, "source-records/")).json()
    assert records[0]["phone"] == "+8613912875634"
    assert AuditRecord.objects.get().fields == ["birth_date", "full_name", "phone"]


def test_tags_segments_metrics_lineage_consent(api_client, zhang):
    client = api_client(scopes=READ)
    tags = client.get(url(zhang, "tags/")).json()
    assert [(t["code"], t["kind"], t["source"]) for t in tags] == [("vip", "manual", "manual")]
    assert client.get(url(zhang, "segments/")).json() == [{"slug": "seniors", "name": "Seniors", "in_holdout": True}]
    metrics = client.get(url(zhang, "metrics/")).json()
    assert (metrics["lifecycle_stage"], metrics["value_tier"], metrics["aum"]) == ("active", "high", "1000000.00")
    lineage = client.get(url(zhang, "lineage/")).json()
    assert [(x["attribute"], x["golden_fields"], x["source"], x["customer_key"]) for x in lineage] == [
        ("name", ["full_name", "family_name", "given_name"], "core", "CIF001")]
    consent = client.get(url(zhang, "consent/")).json()
    assert [(c["channel"], c["granted"], c["source"]) for c in consent] == [
        ("sms", True, "core"), ("email", None, None), ("push", None, None), ("phone", None, None)]
    assert not AuditRecord.objects.exists()


def test_metrics_of_a_profile_without_metrics_is_404(api_client, db):
    assert api_client(scopes=READ).get(url(_profile(), "metrics/")).status_code == 404


# --- writes ----------------------------------------------------------------------------------------------------

def test_consent_update_per_channel(api_client, zhang):
    client = api_client(scopes=WRITE)
    response = client.put(url(zhang, "consent/email/"), {"granted": True, "source": "mobile-app"}, format="json")
    assert response.status_code == 200
    assert (response.json()["channel"], response.json()["granted"], response.json()["source"]) == (
        "email", True, "mobile-app")
    response = client.patch(url(zhang, "consent/sms/"), {"granted": False}, format="json")
    assert (response.json()["granted"], response.json()["source"]) == (False, "api")
    sms = Consent.objects.get(profile=zhang, channel="sms")
    assert not sms.granted and timezone.now() - sms.updated_at < dt.timedelta(minutes=1)
    assert client.put(url(zhang, "consent/fax/"), {"granted": True}, format="json").status_code == 404
    assert client.put(url(zhang, "consent/sms/"), {"granted": "maybe"}, format="json").status_code == 400
    assert client.put(url(zhang, "consent/sms/"), {}, format="json").json()["code"] == "invalid"


def test_tag_add_and_remove(api_client, zhang):
    client = api_client(scopes=WRITE)
    TagDefinition.objects.create(code="called-back", name="Called back")
    response = client.post(url(zhang, "tags/"), {"code": "called-back"}, format="json")
    assert response.status_code == 201
    assert (response.json()["code"], response.json()["source"]) == ("called-back", "api")
    assert response.json()["assigned_by"] == f"api-key:{client.api_key.name}"
    assert client.post(url(zhang, "tags/"), {"code": "called-back"}, format="json").status_code == 200
    assert client.delete(url(zhang, "tags/called-back/")).status_code == 204
    assert client.delete(url(zhang, "tags/called-back/")).status_code == 404
    assert not TagAssignment.objects.filter(tag__code="called-back").exists()


def test_tag_add_refuses_unknown_and_non_manual_tags(api_client, zhang):
    client = api_client(scopes=WRITE)
    TagDefinition.objects.create(code="seniors-rule", name="r", kind="rule", rule={"tag": "vip"})
    response = client.post(url(zhang, "tags/"), {"code": "nope"}, format="json")
    assert response.status_code == 400 and response.json()["details"] == {"code": ["no tag 'nope'"]}
    response = client.post(url(zhang, "tags/"), {"code": "seniors-rule"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_tag"
    assert client.delete(url(zhang, "tags/seniors-rule/")).json()["code"] == "invalid_tag"
    assert TagAssignment.objects.filter(profile=zhang).count() == 1


def test_writes_to_an_absorbed_id_act_on_the_survivor(api_client, zhang, absorbed):
    client = api_client(scopes=WRITE)
    TagDefinition.objects.create(code="called-back", name="Called back")

    added = client.post(url(absorbed, "tags/"), {"code": "called-back"}, format="json")
    removed = client.delete(url(absorbed, "tags/vip/"))
    consent = client.put(url(absorbed, "consent/email/"), {"granted": True, "source": "branch"}, format="json")

    assert (added.status_code, removed.status_code, consent.status_code) == (201, 204, 200)
    for response in (added, removed, consent):
        assert response["X-Resolved-From"] == absorbed.public_id
        assert response["Content-Location"].endswith(url(zhang))
    assert list(TagAssignment.objects.filter(profile=zhang).values_list("tag__code", flat=True)) == ["called-back"]
    assert dict(Consent.objects.filter(profile=zhang).values_list("channel", "granted")) == {"sms": True,
                                                                                           "email": True}
    # The absorbed profile keeps nothing of its own: it only ever answers for the survivor.
    assert not TagAssignment.objects.filter(profile=absorbed).exists()
    assert not Consent.objects.filter(profile=absorbed).exists()
    assert [t["code"] for t in client.get(url(absorbed, "tags/")).json()] == ["called-back"]


# --- scopes ----------------------------------------------------------------------------------------------------

READS = ["", "source-records/", "tags/", "segments/", "metrics/", "lineage/", "consent/"]


@pytest.mark.parametrize("suffix", READS)
def test_reads_need_profiles_read(api_client, zhang, suffix):
    response = api_client(scopes=["segments:read", "profiles:write"]).get(url(zhang, suffix))
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert api_client(scopes=READ).get(url(zhang, suffix)).status_code == 200


def test_list_and_lookup_need_profiles_read(api_client, zhang):
    client = api_client(scopes=["profiles:write"])
    assert client.get("/api/v1/profiles/").status_code == 403
    assert client.get("/api/v1/profiles/lookup/?source=core&key=CIF001").status_code == 403
    assert client.post("/api/v1/profiles/lookup/", {"source": "core", "key": "CIF001"}).status_code == 403


def test_writes_need_profiles_write_and_change_nothing_when_denied(api_client, zhang):
    client = api_client(scopes=PII)
    TagDefinition.objects.create(code="called-back", name="Called back")
    assert client.post(url(zhang, "tags/"), {"code": "called-back"}, format="json").status_code == 403
    assert client.delete(url(zhang, "tags/vip/")).status_code == 403
    assert client.put(url(zhang, "consent/sms/"), {"granted": False}, format="json").status_code == 403
    assert client.patch(url(zhang, "consent/email/"), {"granted": True}, format="json").status_code == 403
    assert list(TagAssignment.objects.filter(profile=zhang).values_list("tag__code", flat=True)) == ["vip"]
    assert list(Consent.objects.filter(profile=zhang).values_list("channel", "granted")) == [("sms", True)]


def test_profiles_are_read_only_resources(api_client, zhang):
    client = api_client(scopes=WRITE)
    assert client.post("/api/v1/profiles/", {}, format="json").status_code == 405
    assert client.delete(url(zhang)).status_code == 405
    assert CustomerProfile.objects.filter(pk=zhang.pk).exists()


@pytest.mark.parametrize("path", [
    "/api/v1/profiles/%00/", "/api/v1/profiles/P%00X/tags/", "/api/v1/profiles/?city=%00",
    "/api/v1/profiles/?tag=%00", "/api/v1/profiles/?segment=a%00", "/api/v1/profiles/lookup/?source=core&key=%00",
    "/api/v1/profiles/lookup/?phone=%00", "/api/v1/profiles/lookup/?email=a%00@b.cn",
    "/api/v1/profiles/lookup/?id_number=%00%00%00%00", "/api/v1/profiles/" + "P" * 5000 + "/",
    "/api/v1/profiles/lookup/?id_number=" + "9" * 5000, "/api/v1/profiles/?city=" + "x" * 5000,
])
def test_hostile_input_is_a_4xx_never_a_5xx(api_client, zhang, path):
    response = api_client(scopes=READ).get(path)
    assert 400 <= response.status_code < 500 or response.status_code == 200, path
    assert "code" in response.json() or "results" in response.json()


def test_timeline_lists_events_newest_first_and_pages(api_client):
    from tests.profiles.test_metrics import Bank, at
    bank = Bank()
    owner = _profile(full_name="张伟")
    bank.customer(owner, "card", "K7")
    bank.card("K7", at(2026, 2, 11), "88")
    bank.card("K7", at(2026, 3, 1), "12")
    client = api_client(scopes=READ)
    events = client.get(f"/api/v1/profiles/{owner.public_id}/timeline/").json()
    assert [(e["event"], e["amount"]) for e in events if e["event"] == "card_transaction"] == [
        ("card_transaction", "12.00"), ("card_transaction", "88.00")]
    older = client.get(f"/api/v1/profiles/{owner.public_id}/timeline/",
                       {"before": "2026-03-01T00:00:00+08:00", "limit": 1}).json()
    assert [e["amount"] for e in older] == ["88.00"]
    assert client.get(f"/api/v1/profiles/{owner.public_id}/timeline/", {"limit": 0}).status_code == 400
    assert api_client(scopes=["segments:read"]).get(f"/api/v1/profiles/{owner.public_id}/timeline/").status_code \
        == 403
