"""System tags mirror the derived attributes: synced set-based, moved when the attribute changes, usable in rules,
not settable by people; after an activity load, the task chain recomputes the metrics, syncs the tags and refreshes
the segments that use them."""
import datetime as dt

import pytest
from django.utils import timezone

from profiles.metrics import profile_metrics_recompute
from profiles.models import CustomerProfile, ProfileMetrics
from profiles.tasks import load_feed_task
from segments.models import RefreshJob, Segment
from segments.rules import rule_queryset, rule_validate
from segments.selectors import segment_members
from segments.services import segment_refresh, segment_save
from tags.models import TagAssignment, TagDefinition
from tags.services import TagError, system_tags_sync, tag_add
from tests.profiles.test_metrics import Bank

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


def test_an_activity_load_recomputes_metrics_then_moves_the_system_tags_and_the_segments_using_them(write_feed):
    bank = Bank()
    customer = CustomerProfile.objects.create(public_id="PQUIET")
    bank.customer(customer, "core", "Q1")
    bank.account("Q1", "savings", "60000", dt.date(2020, 1, 1))
    bank.txn("Q1", timezone.now() - dt.timedelta(days=300), "-10", "payment")  # quiet for 300 days: dormant
    profile_metrics_recompute()
    system_tags_sync()
    dormant = segment_save(segment=Segment(name="Dormant", slug="dormant", rule={"tag": "lifecycle-dormant"}))
    active = segment_save(segment=Segment(name="Active", slug="active", rule={"tag": "lifecycle-active"}))
    for segment in (dormant, active):
        segment_refresh(segment=segment)
    assert holders("lifecycle-dormant") == {"PQUIET"} and Segment.objects.get(slug="dormant").member_count == 1

    # A payment yesterday arrives: the load's task recomputes the metrics, which sends the refresh after a load.
    feed = write_feed([{"txn_key": "T9", "customer_key": "Q1", "account_key": "A1",
                        "occurred_at": (timezone.now() - dt.timedelta(days=1)).isoformat(), "amount": "-25",
                        "currency": "CNY", "kind": "payment", "channel": "app"}],
                      header=["txn_key", "customer_key", "account_key", "occurred_at", "amount", "currency", "kind",
                              "channel"])
    load_feed_task("core", str(feed), kind="transactions")  # Celery runs in-process in the tests

    assert ProfileMetrics.objects.get(profile=customer).lifecycle_stage == "active"
    assert holders("lifecycle-dormant") == set() and holders("lifecycle-active") == {"PQUIET"}
    assert [p.public_id for p in segment_members(segment=active)] == ["PQUIET"]
    assert list(segment_members(segment=dormant)) == []
    after_load = RefreshJob.objects.filter(trigger="feed_load")
    assert {(j.segment.slug, j.entered, j.exited) for j in after_load} == {("active", 1, 0), ("dormant", 0, 1)}
