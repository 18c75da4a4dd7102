"""Tag definition endpoints: CRUD, rule tags validated with the node path, deletion refused while a rule uses the tag,
and the segment scopes."""
import pytest

from segments.models import Segment
from segments.services import segment_save
from tags.models import TagDefinition

pytestmark = pytest.mark.django_db

READ = ["segments:read"]
WRITE = ["segments:read", "segments:write"]


def test_create_list_and_change_tags(api_client):
    client = api_client(scopes=WRITE)
    created = client.post("/api/v1/tags/", {"code": "vip", "name": "VIP", "kind": "manual"}, format="json")
    assert created.status_code == 201
    rule = {"field": "city", "op": "eq", "value": "上海市"}
    assert client.post("/api/v1/tags/", {"code": "sh", "name": "Shanghai", "kind": "rule", "rule": rule},
                       format="json").status_code == 201
    assert [t["code"] for t in client.get("/api/v1/tags/").json()["results"]] == ["vip", "sh"]
    assert [t["code"] for t in client.get("/api/v1/tags/", {"kind": "rule"}).json()["results"]] == ["sh"]
    assert client.patch("/api/v1/tags/vip/", {"name": "Very important"}, format="json").json()["name"] == \
        "Very important"


def test_a_rule_tag_with_a_bad_rule_is_refused_naming_the_node(api_client):
    client = api_client(scopes=WRITE)
    bad = {"code": "x", "name": "X", "kind": "rule", "rule": {"all": [{"segment": "women"}]}}
    response = client.post("/api/v1/tags/", bad, format="json")
    assert response.status_code == 400 and response.json()["details"]["path"] == "all[0].segment"
    no_rule = client.post("/api/v1/tags/", {"code": "y", "name": "Y", "kind": "rule"}, format="json")
    assert no_rule.status_code == 400
    assert not TagDefinition.objects.exists()


def test_a_tag_used_by_a_segment_cannot_be_deleted(api_client):
    TagDefinition.objects.create(code="vip", name="VIP")
    segment_save(segment=Segment(name="VIPs", slug="vips", rule={"tag": "vip"}))
    client = api_client(scopes=WRITE)
    refused = client.delete("/api/v1/tags/vip/")
    assert refused.status_code == 400 and "vips" in refused.json()["message"]
    Segment.objects.all().delete()
    assert client.delete("/api/v1/tags/vip/").status_code == 204
    assert not TagDefinition.objects.exists()


def test_reading_needs_segments_read_and_writing_segments_write(api_client):
    TagDefinition.objects.create(code="vip", name="VIP")
    assert api_client(scopes=["profiles:read"]).get("/api/v1/tags/").status_code == 403
    reader = api_client(scopes=READ)
    assert reader.get("/api/v1/tags/vip/").status_code == 200
    assert reader.post("/api/v1/tags/", {"code": "new", "name": "New"}, format="json").status_code == 403
    assert reader.delete("/api/v1/tags/vip/").status_code == 403
    assert list(TagDefinition.objects.values_list("code", flat=True)) == ["vip"]


def test_put_replaces_a_tag_definition_and_validates_a_rule(api_client):
    TagDefinition.objects.create(code="sh", name="Shanghai", kind="rule", category="Place",
                                 rule={"field": "city", "op": "eq", "value": "上海市"})
    client = api_client(scopes=WRITE)
    beijing = {"field": "city", "op": "eq", "value": "北京市"}
    replaced = client.put("/api/v1/tags/sh/", {"code": "sh", "name": "Beijing", "kind": "rule", "category": "City",
                                               "rule": beijing}, format="json")
    assert replaced.status_code == 200
    tag = TagDefinition.objects.get(code="sh")
    assert (tag.name, tag.category, tag.rule) == ("Beijing", "City", beijing)

    bad = client.put("/api/v1/tags/sh/", {"code": "sh", "name": "X", "kind": "rule", "rule": {"segment": "women"}},
                     format="json")
    assert bad.status_code == 400 and bad.json()["details"]["path"] == "segment"
    as_manual = client.put("/api/v1/tags/sh/", {"code": "sh", "name": "Now manual", "kind": "manual",
                                                "rule": beijing}, format="json")
    assert as_manual.status_code == 200 and as_manual.json()["rule"] is None  # only rule tags keep a rule
    assert TagDefinition.objects.get(code="sh").kind == "manual"


@pytest.mark.parametrize("value, path", [("NaN", "all[0].value"), ("1e999", "all[0].value")])
def test_a_rule_tag_with_a_value_no_number_can_hold_is_refused_naming_the_node(api_client, value, path):
    raw = '{"code": "x", "name": "X", "kind": "rule", "rule": {"all": [{"field": "age", "op": "gt", "value": %s}]}}'
    response = api_client(scopes=WRITE).post("/api/v1/tags/", raw % value, content_type="application/json")
    assert response.status_code == 400 and response.json()["details"]["path"] == path
    assert not TagDefinition.objects.exists()
