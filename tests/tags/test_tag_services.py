from datetime import timedelta

import pytest
from django.utils import timezone

from tags.models import TagAssignment, TagDefinition
from tags.selectors import profile_tags
from tags.services import TagError, parse_profile_list, tag_add, tag_remove, tags_bulk_assign

pytestmark = pytest.mark.django_db


@pytest.fixture
def vip():
    return TagDefinition.objects.create(code="vip", name="VIP", category="service")


def test_add_and_remove_a_manual_tag(make_profile, vip):
    profile = make_profile()

    assert tag_add(tag=vip, profile=profile, assigned_by="alice") is True
    assert tag_add(tag=vip, profile=profile, assigned_by="bob") is False  # already tagged: kept as it was

    assignment = TagAssignment.objects.get(tag=vip, profile=profile)
    assert (assignment.source, assignment.assigned_by) == ("manual", "alice")
    assert tag_remove(tag=vip, profile=profile) is True
    assert not TagAssignment.objects.filter(tag=vip).exists()


def test_rule_and_system_tags_cannot_be_set_by_hand(make_profile):
    profile = make_profile()
    for kind in ("rule", "system"):
        tag = TagDefinition.objects.create(code=f"t-{kind}", name=kind, kind=kind)
        with pytest.raises(TagError):
            tag_add(tag=tag, profile=profile, assigned_by="alice")


def test_bulk_assign_by_customer_keys_and_public_ids(make_profile, make_record, vip):
    a, b, c, absorbed_survivor = make_profile(), make_profile(), make_profile(), make_profile()
    absorbed = make_profile(status="merged", merged_into=absorbed_survivor)
    make_record(source="core", customer_key="CIF1", profile=a)
    make_record(source="card", customer_key="H9", profile=b)
    tag_add(tag=vip, profile=c, assigned_by="earlier")

    result = tags_bulk_assign(
        tag=vip, assigned_by="alice",
        customer_keys=[("core", "CIF1"), ("card", "H9"), ("core", "NOPE")],
        public_ids=[c.public_id, absorbed.public_id, "PUNKNOWN"],
    )

    assert (result.assigned, result.already_tagged) == (3, 1)
    assert sorted(result.unknown) == ["PUNKNOWN", "core:NOPE"]
    tagged = set(TagAssignment.objects.filter(tag=vip).values_list("profile_id", flat=True))
    assert tagged == {a.pk, b.pk, c.pk, absorbed_survivor.pk}


def test_an_expired_tag_is_no_longer_in_force(make_profile, vip):
    profile = make_profile()
    tag_add(tag=vip, profile=profile, assigned_by="alice", expires_at=timezone.now() - timedelta(minutes=1))
    assert profile_tags(profile=profile) == []


def test_uploaded_lists_name_profiles_by_id_or_by_source_key():
    assert parse_profile_list("\ufeffprofile_id\nP1\nP2\n") == ([], ["P1", "P2"])
    assert parse_profile_list("source,customer_key\ncore,C1\n") == ([("core", "C1")], [])
    with pytest.raises(TagError):
        parse_profile_list("name\nx\n")
