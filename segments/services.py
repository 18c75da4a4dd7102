"""Writes of the segment engine: save a segment, refresh segments and rule tags, static lists.

A refresh (the versioned pattern of STYLE.md, Jobs):
1. under a per-segment lock, delete rows of versions a killed run left behind;
2. INSERT … SELECT the new result as version N+1 (committed; readers still use version N);
3. in one transaction: record who entered and left (set difference of N+1 and N), and switch current_version from
   N to N+1 with one conditional UPDATE; if it no longer is N, a newer result exists and this run gives up;
4. delete version N.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from celery.schedules import crontab
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from cdp import metrics
from profiles.models import CustomerProfile
from tags.models import TagAssignment, TagDefinition
from tags.selectors import profile_ids_for_keys, profile_ids_for_public_ids

from . import sql
from .models import RefreshJob, Segment, SegmentEvent, SegmentMember, SegmentSize, StaticSegmentEntry
from .rules import RuleContext, RuleError, referenced_segments, rule_inputs, rule_is_time_relative, rule_queryset, \
    rule_validate

log = logging.getLogger(__name__)


class StaleRefresh(Exception):
    """Another refresh switched the segment while this one computed: its result is not the newest."""


def cron_schedule(expression: str) -> crontab:
    """A five-field cron expression as a Celery crontab; ValueError if it is not one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a cron schedule has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                   day_of_week=day_of_week)


def segment_rule_check(*, rule, slug: str | None) -> None:
    """Validate a rule for the segment `slug` (None: a new one); raises RuleError naming the bad node."""
    rule_validate(rule, RuleContext(segment_slug=slug))


def segment_save(*, segment: Segment) -> Segment:
    """Validate and save a segment, deriving what its refresh depends on."""
    if segment.kind == Segment.Kind.RULE:
        if not segment.rule:
            raise RuleError("a rule segment needs a rule")
        segment_rule_check(rule=segment.rule, slug=segment.slug)
        segment.inputs = sorted(rule_inputs(segment.rule))
        segment.is_time_relative = rule_is_time_relative(segment.rule)
    else:
        segment.rule, segment.inputs, segment.is_time_relative = None, ["static"], False
    if segment.refresh_cron:
        cron_schedule(segment.refresh_cron)
    if not Decimal(0) <= Decimal(segment.holdout_percent) <= Decimal(100):
        raise ValueError("holdout_percent must be between 0 and 100")
    segment.save()
    return segment


def segment_delete(*, segment: Segment) -> None:
    """Delete a segment with its membership and history, unless another segment's rule uses it (RuleError)."""
    users = sorted(other.slug for other in Segment.objects.filter(kind=Segment.Kind.RULE).exclude(pk=segment.pk)
                   if other.rule and segment.slug in referenced_segments(other.rule))
    if users:
        raise RuleError(f"segment {segment.slug!r} is used by {', '.join(users)}; change their rules first")
    segment.delete()


def _result_queryset(segment: Segment, ctx: RuleContext):
    if segment.kind == Segment.Kind.STATIC:
        entries = StaticSegmentEntry.objects.filter(segment_id=segment.pk, profile=OuterRef("pk"))
        return CustomerProfile.objects.filter(status=CustomerProfile.Status.ACTIVE).filter(Exists(entries))
    return rule_queryset(segment.rule, ctx)


JOB_INTERRUPTED = "interrupted: the worker stopped before it finished"


def refresh_jobs_reset_stuck(*, running_longer_than: float) -> int:
    """Fail the refresh jobs 'running' for longer than any refresh may run (`running_longer_than`, the hard time
    limit of the refresh tasks): their worker died. Their segments are no longer calculating; the rows of the
    unfinished version go with the next refresh's cleanup. Returns how many jobs."""
    now = timezone.now()
    stuck = RefreshJob.objects.filter(status=RefreshJob.Status.RUNNING,
                                      started_at__lt=now - dt.timedelta(seconds=running_longer_than))
    segment_ids = set(stuck.exclude(segment=None).values_list("segment_id", flat=True))
    count = stuck.update(status=RefreshJob.Status.FAILED, error=JOB_INTERRUPTED, finished_at=now)
    running = RefreshJob.objects.filter(segment=OuterRef("pk"), status=RefreshJob.Status.RUNNING)
    Segment.objects.filter(pk__in=segment_ids).exclude(Exists(running)).update(is_calculating=False,
                                                                              pending_version=None)
    return count


def _finish_job(job: RefreshJob, status: str, started: float, **fields) -> RefreshJob:
    fields.update(status=status, finished_at=timezone.now(), duration_seconds=round(time.perf_counter() - started, 3))
    RefreshJob.objects.filter(pk=job.pk).update(**fields)
    job.refresh_from_db()
    metrics.refresh_job_observe(job)
    return job


def segment_refresh(*, segment: Segment, job: RefreshJob | None = None, trigger: str = "manual",
                    now=None) -> RefreshJob:
    """Recompute a segment's members in SQL and switch to them atomically; returns the job record of the run."""
    job = job or RefreshJob.objects.create(segment=segment, trigger=trigger)
    started = time.perf_counter()
    RefreshJob.objects.filter(pk=job.pk).update(status=RefreshJob.Status.RUNNING, started_at=timezone.now())
    try:
        with sql.advisory_lock("segment", segment.pk):
            # Holding the lock, no other run of this segment is alive: a job still "running" died with its worker.
            RefreshJob.objects.filter(segment=segment, status=RefreshJob.Status.RUNNING).exclude(pk=job.pk).update(
                status=RefreshJob.Status.FAILED, error=JOB_INTERRUPTED, finished_at=timezone.now())
            segment.refresh_from_db()
            old = segment.current_version
            new = old + 1
            SegmentMember.objects.filter(segment=segment).exclude(version=old).delete()
            Segment.objects.filter(pk=segment.pk).update(pending_version=new, is_calculating=True)
            ctx = RuleContext(now=now or timezone.now())
            basis_points = int(Decimal(segment.holdout_percent) * 100)
            with transaction.atomic():
                members = sql.insert_members(queryset=_result_queryset(segment, ctx), segment_id=segment.pk,
                                             version=new, holdout_basis_points=basis_points)
            entered, exited = _switch(segment, old=old, new=new, members=members, job=job, at=ctx.now)
            SegmentMember.objects.filter(segment=segment, version=old).delete()
    except StaleRefresh:
        # The newer result stands; this run is no longer pending (its rows go with the next run's cleanup).
        Segment.objects.filter(pk=segment.pk, pending_version=new).update(pending_version=None, is_calculating=False)
        return _finish_job(job, RefreshJob.Status.SKIPPED, started, error="a newer result was already switched in")
    except Exception as exc:
        Segment.objects.filter(pk=segment.pk).update(is_calculating=False, last_error=repr(exc)[:2000],
                                                     error_count=F("error_count") + 1)
        _finish_job(job, RefreshJob.Status.FAILED, started, error=repr(exc)[:2000])
        raise
    # error="": a retried job that failed an earlier attempt ends without that attempt's error.
    return _finish_job(job, RefreshJob.Status.SUCCEEDED, started, version=new, entered=entered, exited=exited,
                       member_count=members, error="")


@transaction.atomic
def _switch(segment: Segment, *, old: int, new: int, members: int, job: RefreshJob, at) -> tuple[int, int]:
    entered = sql.record_changes(segment_id=segment.pk, old_version=old, new_version=new,
                                 kind=SegmentEvent.Kind.ENTERED, at=at, job_id=job.pk)
    exited = sql.record_changes(segment_id=segment.pk, old_version=old, new_version=new,
                                kind=SegmentEvent.Kind.EXITED, at=at, job_id=job.pk)
    holdout = SegmentMember.objects.filter(segment=segment, version=new, in_holdout=True).count()
    switched = Segment.objects.filter(pk=segment.pk, current_version=old).update(
        current_version=new, pending_version=None, is_calculating=False, member_count=members, holdout_count=holdout,
        last_refreshed_at=at, last_error="", error_count=0,
    )
    if not switched:
        raise StaleRefresh()  # rolls back the events recorded above
    SegmentSize.objects.create(segment=segment, at=at, member_count=members)
    return entered, exited


def tag_definition_save(*, tag: TagDefinition) -> TagDefinition:
    """Validate and save a tag definition: a rule tag needs a rule over fields and manual or system tags only."""
    if tag.kind == TagDefinition.Kind.RULE:
        if not tag.rule:
            raise RuleError("a rule tag needs a rule")
        rule_validate(tag.rule, RuleContext(allow_segments=False))
    else:
        tag.rule = None
    tag.save()
    return tag


def tag_definition_delete(*, tag: TagDefinition) -> None:
    """Delete a tag and its assignments, unless a segment or rule tag uses it (RuleError naming them)."""
    needle = f"tag:{tag.code}"
    users = sorted([s.slug for s in Segment.objects.filter(kind=Segment.Kind.RULE) if s.rule and needle in
                    rule_inputs(s.rule)] + [t.code for t in TagDefinition.objects.filter(kind=TagDefinition.Kind.RULE)
                                            .exclude(pk=tag.pk) if t.rule and needle in rule_inputs(t.rule)])
    if users:
        raise RuleError(f"tag {tag.code!r} is used by {', '.join(users)}; change their rules first")
    tag.delete()


def tag_rule_refresh(*, tag: TagDefinition, trigger: str = "manual", now=None) -> RefreshJob:
    """Recompute a rule tag's assignments with the segment engine: add the new, remove the gone, in one transaction."""
    job = RefreshJob.objects.create(tag=tag, trigger=trigger, status=RefreshJob.Status.RUNNING,
                                    started_at=timezone.now())
    started = time.perf_counter()
    ctx = RuleContext(now=now or timezone.now(), allow_segments=False)
    try:
        rule_validate(tag.rule, ctx)
        with sql.advisory_lock("tag", tag.pk), transaction.atomic():
            matching = rule_queryset(tag.rule, ctx)
            exited, _ = TagAssignment.objects.filter(tag=tag).exclude(profile__in=matching.values("id")).delete()
            entered = sql.insert_rule_tag_assignments(queryset=matching, tag_id=tag.pk, at=ctx.now)
            TagDefinition.objects.filter(pk=tag.pk).update(last_refreshed_at=ctx.now, last_error="")
    except Exception as exc:
        TagDefinition.objects.filter(pk=tag.pk).update(last_error=repr(exc)[:2000])
        _finish_job(job, RefreshJob.Status.FAILED, started, error=repr(exc)[:2000])
        raise
    return _finish_job(job, RefreshJob.Status.SUCCEEDED, started, entered=entered, exited=exited,
                       member_count=TagAssignment.objects.filter(tag=tag).count())


# --- many at once ----------------------------------------------------------------------------------------------

def segments_in_dependency_order(segments) -> list[Segment]:
    """Segments ordered so that each comes after the segments its rule uses (cycles are rejected on save)."""
    by_slug = {s.slug: s for s in segments}
    ordered: list[Segment] = []
    placed: set[str] = set()

    def place(segment: Segment) -> None:
        if segment.slug in placed:
            return
        placed.add(segment.slug)
        for slug in sorted(referenced_segments(segment.rule) if segment.rule else ()):
            if slug in by_slug:
                place(by_slug[slug])
        ordered.append(segment)

    for segment in sorted(by_slug.values(), key=lambda s: s.slug):
        place(segment)
    return ordered


@dataclass
class RefreshSummary:
    jobs: list

    def as_dict(self) -> dict:
        return {"jobs": [{"id": j.pk, "segment": j.segment_id, "tag": j.tag_id, "status": j.status,
                          "entered": j.entered, "exited": j.exited} for j in self.jobs]}


def _refresh_in_order(*, tags, segments, changed: set[str] | None, trigger: str, now,
                      due: frozenset[str] = frozenset(), due_tags: frozenset[str] = frozenset()) -> RefreshSummary:
    """Refresh rule tags, then segments in dependency order. With `changed` (inputs that changed), only the due
    tags and segments and what depends on the changed inputs, directly or through a tag or segment this run changed."""
    jobs = []
    for tag in tags:
        if changed is None or tag.code in due_tags or changed & set(rule_inputs(tag.rule)):
            job = tag_rule_refresh(tag=tag, trigger=trigger, now=now)
            jobs.append(job)
            if changed is not None and (job.entered or job.exited):
                changed.add(f"tag:{tag.code}")
    for segment in segments_in_dependency_order(segments):
        if changed is None or segment.slug in due or changed & set(segment.inputs):
            job = segment_refresh(segment=segment, trigger=trigger, now=now)
            jobs.append(job)
            if changed is not None and (job.entered or job.exited):
                changed.add(f"segment:{segment.slug}")
    return RefreshSummary(jobs)


def _rule_tags():
    return TagDefinition.objects.filter(kind=TagDefinition.Kind.RULE, rule__isnull=False)


def segments_refresh_all(*, trigger: str = "manual", now=None) -> RefreshSummary:
    return _refresh_in_order(tags=_rule_tags(), segments=Segment.objects.filter(status=Segment.Status.ACTIVE),
                             changed=None, trigger=trigger, now=now)


def segments_refresh_for_inputs(*, inputs: set[str], trigger: str = "feed_load", now=None) -> RefreshSummary:
    """After a load: refresh only the rule tags and segments that depend on `inputs` (e.g. {"profiles"})."""
    return _refresh_in_order(tags=_rule_tags(), segments=Segment.objects.filter(status=Segment.Status.ACTIVE),
                             changed=set(inputs), trigger=trigger, now=now)


def segment_is_due(segment: Segment, *, now) -> bool:
    last = segment.last_refreshed_at
    if last is None:
        return True
    if segment.is_time_relative and timezone.localtime(last).date() < timezone.localtime(now).date():
        return True  # relative dates moved on at midnight: never serve yesterday's answer
    if segment.refresh_every_minutes and (now - last).total_seconds() >= segment.refresh_every_minutes * 60:
        return True
    if segment.refresh_cron:
        schedule = cron_schedule(segment.refresh_cron)
        schedule.nowfun = lambda: now
        return schedule.remaining_estimate(last).total_seconds() <= 0
    return False


def segments_refresh_due(*, now=None, trigger: str = "schedule") -> RefreshSummary:
    """Refresh the segments whose schedule is due, the rule tags not refreshed today, and what uses those tags."""
    now = now or timezone.now()
    today = timezone.localtime(now).date()
    tags = list(_rule_tags())
    due_tags = frozenset(t.code for t in tags if t.last_refreshed_at is None
                         or timezone.localtime(t.last_refreshed_at).date() < today)
    active = list(Segment.objects.filter(status=Segment.Status.ACTIVE))
    due = frozenset(s.slug for s in active if segment_is_due(s, now=now))
    return _refresh_in_order(tags=tags, segments=active, changed=set(), trigger=trigger, now=now, due=due,
                             due_tags=due_tags)


# --- static segments -------------------------------------------------------------------------------------------

@dataclass
class StaticListResult:
    members: int
    unknown: list


def segment_static_set_members(*, segment: Segment, customer_keys=(), public_ids=()) -> StaticListResult:
    """Replace a static segment's list (profiles by source and customer key, or by public id), then refresh it."""
    if segment.kind != Segment.Kind.STATIC:
        raise ValueError(f"segment {segment.slug!r} is not static")
    by_key, unknown_keys = profile_ids_for_keys(customer_keys=customer_keys)
    by_public_id, unknown_ids = profile_ids_for_public_ids(public_ids=public_ids)
    ids = sorted(by_key | by_public_id)
    with transaction.atomic():
        StaticSegmentEntry.objects.filter(segment=segment).delete()
        StaticSegmentEntry.objects.bulk_create([StaticSegmentEntry(segment=segment, profile_id=i) for i in ids],
                                               batch_size=5000)
    segment_refresh(segment=segment, trigger="static_upload")
    return StaticListResult(members=len(ids), unknown=[f"{s}:{k}" for s, k in unknown_keys] + unknown_ids)
