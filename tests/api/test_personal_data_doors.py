"""Side doors to personal data (issue 24, findings 1 and 5): explain masks the values of personal fields without
profiles:read_pii and audits them clear with it; searching by a personal field (a lookup by phone, e-mail or id
number, a segment or rule tag whose rule tests a personal field) needs profiles:read_pii, because an answer for
guessed values recovers what the masks hide; the catalogue says which fields are personal."""
import datetime as dt

import pytest

from privacy.models import AuditRecord
from profiles.models import CustomerProfile
from profiles.normalize import keyed_hash
from segments.models import Segment
from segments.services import segment_refresh, segment_save
from tags.models import TagDefinition
from tests.factories import cn_resident_id

pytestmark = pytest.mark.django_db

PHONE, BIRTH, EMAIL = "+8613600436658", dt.date(1958, 3, 23), "li.an@example.com"
ID_NUMBER = cn_resident_id(BIRTH)
SEGMENTS = ["segments:read", "segments:write"]
PII = ["profiles:read_pii"]
FORBIDDEN = {"code": "permission_denied"}


@pytest.fixture
def ann():
    return CustomerProfile.objects.create(
        public_id="PANN0001", full_name="李安", family_name="李", given_name="安", gender="F", birth_date=BIRTH,
        phone=PHONE, email=EMAIL, address="上海市浦东新区世纪大道1000号", city="上海市",
        id_type="CN_RESIDENT", id_number_hash=keyed_hash(ID_NUMBER, "id"), id_number_masked="110***1234")


@pytest.fixture
def personal_segment(ann):
    """A segment whose rule tests personal fields (saved by someone allowed to), refreshed as a job refreshes it."""
    rule = {"all": [{"field": "city", "op": "eq", "value": "上海市"},
                    {"field": "phone", "op": "startswith", "value": PHONE[:-1]},
                    {"field": "birth_date", "op": "between", "value": ["1958-03-01", "1958-03-31"]},
                    {"field": "full_name", "op": "eq", "value": "李安"}]}
    segment = segment_save(segment=Segment(name="One person", slug="one-person", rule=rule))
    job = segment_refresh(segment=segment)
    assert job.member_count == 1  # a rule on personal fields keeps refreshing: a refresh is a job, not a caller
    return segment


def _explain(client):
    return client.get("/api/v1/segments/one-person/explain/", {"profile": "PANN0001"})


def _leaf_values(explained: dict) -> list:
    return [(child["value"], child["node"]["value"]) for child in explained["rule"]["children"]]


# --- finding 1: explain ------------------------------------------------------------------------------------------

def test_explain_without_read_pii_masks_every_personal_value_and_writes_no_audit(api_client, personal_segment):
    response = _explain(api_client(scopes=["segments:read"]))

    assert response.status_code == 200
    assert response.json()["member"] is True
    assert _leaf_values(response.json()) == [
        ("上海市", "上海市"),
        ("136****6658", "********3665"),  # the prefix compared with is masked too: it is nearly the phone
        ("1958-**-**", ["1958-**-**", "1958-**-**"]),
        ("李*", "李*"),
    ]
    body = response.content.decode()
    assert PHONE not in body and "13600436658" not in body and "1958-03-23" not in body and "李安" not in body
    assert not AuditRecord.objects.exists()


def test_explain_with_read_pii_is_clear_and_audited_before_it_is_returned(api_client, personal_segment):
    client = api_client(scopes=["segments:read", *PII])

    response = _explain(client)

    assert _leaf_values(response.json()) == [
        ("上海市", "上海市"), (PHONE, PHONE[:-1]), ("1958-03-23", ["1958-03-01", "1958-03-31"]), ("李安", "李安")]
    record = AuditRecord.objects.get()
    assert (record.api_key_id, record.profile_public_id) == (client.api_key.pk, "PANN0001")
    assert record.fields == ["birth_date", "full_name", "phone"]
    assert (record.method, record.path) == ("GET", "/api/v1/segments/one-person/explain/")


def test_a_stored_rule_on_personal_fields_reads_masked_without_read_pii(api_client, personal_segment):
    masked = api_client(scopes=["segments:read"]).get("/api/v1/segments/one-person/").json()["rule"]
    clear = api_client(scopes=["segments:read", *PII]).get("/api/v1/segments/one-person/").json()["rule"]

    assert masked["all"][1] == {"field": "phone", "op": "startswith", "value": "********3665"}
    assert masked["all"][0] == clear["all"][0] == {"field": "city", "op": "eq", "value": "上海市"}
    assert clear == personal_segment.rule


# --- finding 5: asking recovers a masked value -------------------------------------------------------------------

@pytest.mark.parametrize("query", [{"phone": PHONE}, {"phone": "13600436658"}, {"email": EMAIL},
                                   {"id_number": ID_NUMBER}])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_lookup_by_a_personal_identifier_needs_read_pii(api_client, ann, query, method):
    reader = api_client(scopes=["profiles:read"])
    send = reader.post if method == "post" else reader.get
    refused = send("/api/v1/profiles/lookup/", query, **({"format": "json"} if method == "post" else {}))
    missing = send("/api/v1/profiles/lookup/", {name: "13600000000" if name == "phone" else "x@example.com"
                                                if name == "email" else "110105195803230000" for name in query},
                   **({"format": "json"} if method == "post" else {}))

    # The same answer whether the value is a customer's or not: nothing to learn by guessing.
    assert refused.status_code == missing.status_code == 403
    assert refused.json() == missing.json()
    assert refused.json()["message"] == (f"A lookup on the personal fields {next(iter(query))} needs the scope "
                                         "'profiles:read_pii'.")

    allowed = api_client(scopes=["profiles:read", *PII])
    found = allowed.post("/api/v1/profiles/lookup/", query, format="json")
    assert found.status_code == 200 and found.json()["phone"] == PHONE
    assert AuditRecord.objects.filter(profile_public_id="PANN0001").count() == 1


def test_a_lookup_by_a_source_key_needs_only_profiles_read(api_client, ann):
    assert api_client(scopes=["profiles:read"]).get("/api/v1/profiles/lookup/", {"source": "core", "key": "NONE"}) \
        .status_code == 404


PHONE_PREFIX = {"all": [{"field": "city", "op": "eq", "value": "上海市"},
                        {"field": "phone", "op": "startswith", "value": PHONE[:-1]}]}


@pytest.mark.parametrize("rule", [
    PHONE_PREFIX,
    {"field": "birth_date", "op": "eq", "value": "1958-03-23"},
    {"not": {"any": [{"field": "email", "op": "contains", "value": "li.an@"}]}},
    {"field": "full_name", "op": "eq", "value": "李安"},
    {"field": "given_name", "op": "in", "value": ["安"]},
    {"field": "address", "op": "contains", "value": "世纪大道1000号"},
    {"field": "family_name", "op": "is_not_null"},
])
def test_preview_and_diff_of_a_rule_on_a_personal_field_need_read_pii(api_client, personal_segment, rule):
    reader = api_client(scopes=["segments:read"])

    preview = reader.post("/api/v1/segments/preview/", {"rule": rule}, format="json")
    diff = reader.post("/api/v1/segments/one-person/diff/", {"rule": rule}, format="json")

    assert preview.status_code == diff.status_code == 403
    assert preview.json()["code"] == diff.json()["code"] == FORBIDDEN["code"]
    assert "profiles:read_pii" in preview.json()["message"] and "count" not in preview.json()
    allowed = api_client(scopes=["segments:read", *PII])
    assert allowed.post("/api/v1/segments/preview/", {"rule": rule}, format="json").status_code == 200
    assert allowed.post("/api/v1/segments/one-person/diff/", {"rule": rule}, format="json").status_code == 200


def test_rules_on_other_fields_and_on_saved_segments_need_no_personal_scope(api_client, personal_segment):
    reader = api_client(scopes=["segments:read"])
    rule = {"all": [{"field": "city", "op": "eq", "value": "上海市"}, {"field": "age", "op": "gte", "value": 60},
                    {"segment": "one-person"}, {"field": "id_type", "op": "eq", "value": "CN_RESIDENT"}]}
    assert reader.post("/api/v1/segments/preview/", {"rule": rule}, format="json").status_code == 200


def test_saving_a_segment_or_rule_tag_on_a_personal_field_needs_read_pii(api_client, ann, personal_segment):
    writer = api_client(scopes=SEGMENTS)
    segment = {"name": "Guess", "slug": "guess", "rule": PHONE_PREFIX}
    tag = {"code": "guess", "name": "Guess", "kind": "rule", "rule": PHONE_PREFIX}

    assert writer.post("/api/v1/segments/", segment, format="json").status_code == 403
    assert writer.post("/api/v1/tags/", tag, format="json").status_code == 403
    assert writer.patch("/api/v1/segments/one-person/", {"rule": PHONE_PREFIX}, format="json").status_code == 403
    assert not Segment.objects.filter(slug="guess").exists() and not TagDefinition.objects.filter(code="guess").exists()
    assert Segment.objects.get(slug="one-person").rule == personal_segment.rule
    # Other changes to a segment whose rule tests personal fields are a writer's to make.
    assert writer.patch("/api/v1/segments/one-person/", {"name": "Renamed"}, format="json").status_code == 200

    allowed = api_client(scopes=[*SEGMENTS, *PII])
    assert allowed.post("/api/v1/segments/", segment, format="json").status_code == 201
    assert allowed.post("/api/v1/tags/", tag, format="json").status_code == 201
    masked_tag = writer.get("/api/v1/tags/guess/").json()["rule"]
    assert masked_tag["all"][1]["value"] == "********3665"


def test_the_catalogue_says_which_fields_are_personal(api_client):
    fields = {f["name"]: f for f in api_client(scopes=["segments:read"]).get("/api/v1/segments/catalogue/").json()}
    assert {name for name, f in fields.items() if f["personal"]} == {
        "full_name", "family_name", "given_name", "birth_date", "phone", "email", "address"}
    assert fields["city"]["personal"] is False and fields["age"]["personal"] is False
