"""System tags mirror the derived attributes: synced set-based, moved when the attribute changes, usable in rules,
not settable by people."""
import datetime as dt

import pytest
from django.utils import timezone

from profiles.models import CustomerProfile, ProfileMetrics
from segments.rules import rule_queryset, rule_validate
from tags.models import TagAssignment, TagDefinition
from tags.services import TagError, system_tags_sync, tag_add

pytestmark = pytest.mark.django_db


def _with_metrics(public_id: str, stage: str, tier: str) -> CustomerProfile:
    profile = CustomerProfile.objects.create(public_id=public_id)
    ProfileMetrics.objects.create(profile=profile, as_of=dt.date(2026, 6, 30), lifecycle_stage=stage,
                                  value_tier=tier, computed_at=timezone.now())
    return profile


def holders(code: str) -> set[str]:
    return set(TagAssignment.objects.filter(tag__code=code).values_list("profile__public_id", flat=True))


def test_sync_mirrors_and_moves_the_tags():
    _with_metrics("P1", "dormant", "high")
    _with_metrics("P2", "active", "high")
    CustomerProfile.objects.create(public_id="P3")  # no metrics: no system tag
    assert system_tags_sync() == {"lifecycle-dormant", "lifecycle-active", "value-high"}
    assert holders("lifecycle-dormant") == {"P1"} and holders("value-high") == {"P1", "P2"}
    assert TagDefinition.objects.get(code="value-high").kind == TagDefinition.Kind.SYSTEM

    ProfileMetrics.objects.filter(profile__public_id="P1").update(lifecycle_stage="churned")
    assert system_tags_sync() == {"lifecycle-dormant", "lifecycle-churned"}
    assert holders("lifecycle-dormant") == set() and holders("lifecycle-churned") == {"P1"}
    assert system_tags_sync() == set()  # nothing changed, nothing written
    assert TagAssignment.objects.get(tag__code="lifecycle-churned").source == TagAssignment.Source.SYSTEM


def test_rules_use_system_tags_and_people_cannot_set_them():
    p1 = _with_metrics("P1", "dormant", "low")
    _with_metrics("P2", "active", "low")
    system_tags_sync()
    rule = {"tag": "lifecycle-dormant"}
    rule_validate(rule)
    assert list(rule_queryset(rule).values_list("public_id", flat=True)) == ["P1"]
    with pytest.raises(TagError):
        tag_add(tag=TagDefinition.objects.get(code="value-low"), profile=p1, assigned_by="someone")
