"""Segment refresh: members, entered/exited history, snapshots, holdout, diff, cycles, dependency order, static."""
import datetime as dt

import pytest
from django.db.models import F

from profiles.models import CustomerProfile
from segments.models import RefreshJob, Segment, SegmentEvent, SegmentMember, SegmentSize
from segments.rules import RuleError
from segments.selectors import rule_diff, rule_preview, segment_explain, segment_members, segment_members_on
from segments.services import (segment_refresh, segment_save, segment_static_set_members, segments_refresh_all,
                               segments_refresh_for_inputs, tag_rule_refresh)
from segments.sql import holdout_bucket
from tags.models import TagAssignment, TagDefinition

from .conftest import NOW

pytestmark = pytest.mark.django_db

SHANGHAI = {"field": "city", "op": "eq", "value": "Shanghai"}


def make_segment(slug: str, rule: dict | None = None, **fields) -> Segment:
    return segment_save(segment=Segment(name=slug.title(), slug=slug, rule=rule, **fields))


def member_names(segment: Segment) -> set[str]:
    return {p.full_name.split()[0] for p in segment_members(segment=segment)}


def test_refresh_records_entries_and_exits_and_answers_who_was_in_on_a_day(people):
    segment = make_segment("shanghai", SHANGHAI)
    day1, day2 = NOW, NOW + dt.timedelta(days=1)

    job = segment_refresh(segment=segment, now=day1)
    assert (job.status, job.entered, job.exited, job.member_count) == ("succeeded", 2, 0, 2)
    assert member_names(segment) == {"Ann", "Cai"}

    # Cai moves to Beijing, Bob to Shanghai
    CustomerProfile.objects.filter(pk=people["cai"].pk).update(city="Beijing")
    CustomerProfile.objects.filter(pk=people["bob"].pk).update(city="Shanghai")
    job = segment_refresh(segment=segment, now=day2)
    assert (job.entered, job.exited) == (1, 1)

    segment.refresh_from_db()
    assert (segment.member_count, segment.current_version) == (2, 2)
    assert member_names(segment) == {"Ann", "Bob"}
    history = list(SegmentEvent.objects.filter(segment=segment).order_by("at", "kind", "profile_id")
                   .values_list("profile__full_name", "kind", "at"))
    assert history == [("Ann Lee", "entered", day1), ("Cai Xu", "entered", day1), ("Bob Wu", "entered", day2),
                       ("Cai Xu", "exited", day2)]
    assert {p.full_name for p in segment_members_on(segment=segment, day=day1.date())} == {"Ann Lee", "Cai Xu"}
    assert {p.full_name for p in segment_members_on(segment=segment, day=day2.date())} == {"Ann Lee", "Bob Wu"}
    assert not segment_members_on(segment=segment, day=(day1 - dt.timedelta(days=1)).date()).exists()
    # only the current version is kept; the chart has one point per change
    assert set(SegmentMember.objects.filter(segment=segment).values_list("version", flat=True)) == {2}
    assert list(SegmentSize.objects.filter(segment=segment).values_list("member_count", flat=True)) == [2, 2]


def test_a_refresh_that_changes_nothing_records_no_events(people):
    segment = make_segment("shanghai", SHANGHAI)
    segment_refresh(segment=segment, now=NOW)
    job = segment_refresh(segment=segment, now=NOW)
    assert (job.entered, job.exited, job.member_count) == (0, 0, 2)
    assert SegmentEvent.objects.filter(segment=segment).count() == 2


def test_every_refresh_records_a_size_point_even_when_nothing_changed(people):
    segment = make_segment("shanghai", SHANGHAI)
    later = NOW + dt.timedelta(hours=6)
    segment_refresh(segment=segment, now=NOW)
    segment_refresh(segment=segment, now=later)  # the same two members
    assert list(SegmentSize.objects.filter(segment=segment).order_by("at").values_list("at", "member_count")) == [
        (NOW, 2), (later, 2)]


def test_holdout_is_deterministic_stable_and_returned_with_membership(make_profile):
    for i in range(400):
        make_profile(full_name=f"P{i}", city="Shanghai")
    segment = make_segment("big", SHANGHAI, holdout_percent=10)

    segment_refresh(segment=segment)
    first = dict(segment_members(segment=segment).values_list("pk", "in_holdout"))
    segment_refresh(segment=segment)
    second = dict(segment_members(segment=segment).values_list("pk", "in_holdout"))

    assert first == second
    assert first == {pk: holdout_bucket(profile_id=pk, segment_id=segment.pk) < 1000 for pk in first}
    assert 20 <= sum(first.values()) <= 60  # about 10% of 400
    segment.refresh_from_db()
    assert segment.holdout_count == sum(first.values())
    # a bigger control group keeps everyone who was already in it
    Segment.objects.filter(pk=segment.pk).update(holdout_percent=20)
    segment.refresh_from_db()
    segment_refresh(segment=segment)
    third = dict(segment_members(segment=segment).values_list("pk", "in_holdout"))
    assert {pk for pk, h in first.items() if h} < {pk for pk, h in third.items() if h}


def test_preview_and_diff_of_a_changed_rule(people):
    segment = make_segment("shanghai", SHANGHAI)
    segment_refresh(segment=segment, now=NOW)

    preview = rule_preview(rule={"field": "gender", "op": "eq", "value": "F"}, now=NOW)
    assert preview["count"] == 2 and [p["full_name"] for p in preview["sample"]] == ["Ann Lee", "Cai Xu"]

    diff = rule_diff(segment=segment, rule={"field": "record_count", "op": "lte", "value": 2}, now=NOW)
    # new rule: Bob, Cai, Dee; current: Ann, Cai
    assert diff == {"would_enter": 2, "would_leave": 1, "would_stay": 1}


def test_segment_of_segments_refreshes_after_the_segments_it_uses(people):
    women = make_segment("women", {"field": "gender", "op": "eq", "value": "F"})
    # named so that alphabetical order would refresh it first
    both = make_segment("a-shanghai-women", {"all": [{"segment": "women"}, SHANGHAI]})
    CustomerProfile.objects.filter(pk=people["bob"].pk).update(gender="F", city="Shanghai")

    summary = segments_refresh_all(now=NOW)

    assert [j.segment.slug for j in summary.jobs] == ["women", "a-shanghai-women"]
    assert member_names(both) == {"Ann", "Bob", "Cai"} == member_names(women)


def test_cycles_between_segments_are_rejected(people):
    make_segment("a", SHANGHAI)
    make_segment("b", {"segment": "a"})
    make_segment("c", {"any": [{"segment": "b"}, SHANGHAI]})
    segment_a = Segment.objects.get(slug="a")
    segment_a.rule = {"all": [SHANGHAI, {"segment": "c"}]}
    with pytest.raises(RuleError) as error:
        segment_save(segment=segment_a)
    assert error.value.path == "all[1].segment" and "a -> c -> b -> a" in error.value.message
    with pytest.raises(RuleError):
        make_segment("self", {"segment": "self"})


def test_explain_for_a_segment_member(people):
    segment = make_segment("shanghai", SHANGHAI, holdout_percent=100)
    segment_refresh(segment=segment, now=NOW)
    explained = segment_explain(segment=segment, profile=people["cai"], now=NOW)
    assert (explained["member"], explained["in_holdout"]) == (True, True)
    assert (explained["rule"]["result"], explained["rule"]["value"]) == (True, "Shanghai")


def test_static_segment_from_an_uploaded_list(people, make_record):
    make_record(source="core", customer_key="CIF-B", profile=people["bob"])
    segment = make_segment("list", kind=Segment.Kind.STATIC)

    result = segment_static_set_members(segment=segment, customer_keys=[("core", "CIF-B"), ("core", "NONE")],
                                        public_ids=[people["dee"].public_id])

    assert (result.members, result.unknown) == (2, ["core:NONE"])
    assert member_names(segment) == {"Bob", "Dee"}
    assert segment.jobs.get().entered == 2


def test_rule_tags_are_refreshed_by_the_engine_and_used_by_segments(people):
    tag = TagDefinition.objects.create(code="many-records", name="Many records", kind="rule",
                                       rule={"field": "record_count", "op": "gte", "value": 2})
    segment = make_segment("tagged", {"tag": "many-records"})
    job = tag_rule_refresh(tag=tag, now=NOW)
    assert (job.entered, job.exited) == (2, 0)
    CustomerProfile.objects.filter(pk=people["cai"].pk).update(record_count=1)
    CustomerProfile.objects.filter(pk=people["dee"].pk).update(record_count=5)

    summary = segments_refresh_for_inputs(inputs={"profiles"}, now=NOW)

    tag_job, segment_job = summary.jobs
    assert (tag_job.tag_id, tag_job.entered, tag_job.exited) == (tag.pk, 1, 1)
    assert segment_job.segment_id == segment.pk
    assert set(TagAssignment.objects.filter(tag=tag).values_list("profile__full_name", flat=True)) == {"Ann Lee", "Dee"}
    assert member_names(segment) == {"Ann", "Dee"}


def test_after_a_load_only_segments_whose_inputs_changed_refresh(people):
    TagDefinition.objects.create(code="vip", name="VIP")
    by_city = make_segment("by-city", SHANGHAI)
    by_tag = make_segment("by-tag", {"tag": "vip"})
    uses_tag_segment = make_segment("uses-by-tag", {"segment": "by-tag"})

    summary = segments_refresh_for_inputs(inputs={"profiles"}, now=NOW)
    assert [j.segment_id for j in summary.jobs] == [by_city.pk]

    summary = segments_refresh_for_inputs(inputs={"tag:vip"}, now=NOW)
    # by-tag's membership did not change (nobody is a VIP), so what uses it need not refresh
    assert [j.segment_id for j in summary.jobs] == [by_tag.pk]
    assert not RefreshJob.objects.filter(segment=uses_tag_segment).exists()


def test_paused_segments_are_not_refreshed_in_bulk(people):
    make_segment("paused", SHANGHAI, status=Segment.Status.PAUSED)
    assert segments_refresh_all(now=NOW).jobs == []


def test_a_refresh_overtaken_by_a_newer_result_is_skipped_and_records_nothing(people, monkeypatch):
    from segments import sql
    segment = make_segment("shanghai", SHANGHAI)
    segment_refresh(segment=segment, now=NOW)
    CustomerProfile.objects.filter(pk=people["bob"].pk).update(city="Shanghai")
    write = sql.insert_members

    def overtaken(**kwargs):
        written = write(**kwargs)
        # Meanwhile another run switched the segment to a newer version than the one this run started from.
        Segment.objects.filter(pk=segment.pk).update(current_version=F("current_version") + 5)
        return written

    monkeypatch.setattr(sql, "insert_members", overtaken)
    job = segment_refresh(segment=segment, now=NOW + dt.timedelta(hours=1))

    assert job.status == "skipped" and job.error == "a newer result was already switched in"
    assert job.finished_at is not None and job.duration_seconds is not None and job.version is None
    assert (job.entered, job.exited) == (0, 0)
    assert SegmentEvent.objects.filter(segment=segment).count() == 2  # the first run's entries only
    segment.refresh_from_db()
    assert segment.current_version == 6 and segment.error_count == 0 and segment.last_error == ""
    assert not segment.is_calculating and segment.pending_version is None  # nothing of this run is pending
