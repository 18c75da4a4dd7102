"""Retention (README, "Retention"): what is older than its window goes, what is younger stays, and nothing that
lineage or the membership history of the window needs goes with it."""
import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from cdp.celery import app
from privacy.models import AuditRecord
from privacy.retention import retention_enforce
from privacy.tasks import retention_enforce_task
from profiles.feeds import feed_load
from profiles.models import CustomerProfile, FeedBatch, RejectedRow, Source, SourceRecord
from profiles.resolution import identity_resolve
from profiles.selectors import profile_lineage
from segments.models import RefreshJob, Segment, SegmentEvent, SegmentSize
from segments.selectors import segment_members_on
from tests.factories import customer
from tests.segments.test_tasks_worker import wait_for, worker  # noqa: F401 (a fixture: a Celery worker on Redis)

pytestmark = pytest.mark.django_db

NOW = timezone.make_aware(dt.datetime(2026, 6, 1, 12, 0))


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture(autouse=True)
def windows(settings):
    settings.CDP_RETENTION_AUDIT_DAYS = 1000
    settings.CDP_RETENTION_SEGMENT_HISTORY_DAYS = 700
    settings.CDP_RETENTION_REFRESH_JOB_DAYS = 90
    settings.CDP_RETENTION_REJECTED_ROW_DAYS = 30
    settings.CDP_RETENTION_FEED_BATCH_DAYS = 365
    settings.CDP_RETENTION_CHUNK_ROWS = 2  # several chunks even for these few rows


def audit(at: dt.datetime, public_id: str) -> AuditRecord:
    record = AuditRecord.objects.create(profile_public_id=public_id, fields=["phone"], request_id="r", method="GET",
                                        path="/api/v1/profiles/")
    AuditRecord.objects.filter(pk=record.pk).update(at=at)
    return record


def test_audit_records_older_than_the_window_go_and_younger_stay():
    for n in range(5):
        audit(days_ago(1000 + n + 0.01), f"POLD{n}")
    audit(days_ago(999.99), "PYOUNG")

    report = retention_enforce(now=NOW)

    assert report.deleted["audit_records"] == 5
    assert list(AuditRecord.objects.values_list("profile_public_id", flat=True)) == ["PYOUNG"]


def test_a_dry_run_counts_and_deletes_nothing():
    for n in range(3):
        audit(days_ago(1001), f"POLD{n}")

    report = retention_enforce(now=NOW, dry_run=True)

    assert report.deleted["audit_records"] == 3
    assert AuditRecord.objects.count() == 3


def test_a_window_of_zero_days_keeps_everything(settings):
    settings.CDP_RETENTION_AUDIT_DAYS = 0
    audit(days_ago(100_000), "PANCIENT")

    assert retention_enforce(now=NOW).deleted["audit_records"] == 0
    assert AuditRecord.objects.count() == 1


def _event(segment, profile, kind, at, job=None):
    return SegmentEvent.objects.create(segment=segment, profile=profile, kind=kind, at=at, job=job)


def test_segment_history_before_the_window_goes_but_membership_on_every_day_of_the_window_stays_exact():
    segment = Segment.objects.create(name="Rich", slug="rich", kind=Segment.Kind.STATIC)
    left, stayed, left_later, joined_later = (CustomerProfile.objects.create(public_id=f"P{n}") for n in range(4))
    _event(segment, left, "entered", days_ago(900))
    _event(segment, left, "exited", days_ago(800))
    _event(segment, stayed, "entered", days_ago(900))
    _event(segment, stayed, "exited", days_ago(850))
    _event(segment, stayed, "entered", days_ago(800))  # a member when the window begins
    _event(segment, left_later, "entered", days_ago(750))
    _event(segment, left_later, "exited", days_ago(100))
    _event(segment, joined_later, "entered", days_ago(50))
    days = [(NOW - dt.timedelta(days=d)).date() for d in (699, 400, 99, 49, 0)]
    before = {day: set(segment_members_on(segment=segment, day=day)) for day in days}
    SegmentSize.objects.create(segment=segment, at=days_ago(701), member_count=1)
    SegmentSize.objects.create(segment=segment, at=days_ago(699), member_count=2)

    report = retention_enforce(now=NOW)

    assert report.deleted["segment_events"] == 4
    assert {(e.profile_id, e.kind) for e in SegmentEvent.objects.filter(at__lt=days_ago(700))} == {
        (stayed.pk, "entered"), (left_later.pk, "entered")}
    assert {day: set(segment_members_on(segment=segment, day=day)) for day in days} == before
    assert before[days[0]] == {stayed, left_later}
    assert list(SegmentSize.objects.values_list("member_count", flat=True)) == [2]


def test_refresh_jobs_finished_before_the_window_go_and_their_events_forget_them():
    segment = Segment.objects.create(name="Rich", slug="rich", kind=Segment.Kind.STATIC)
    profile = CustomerProfile.objects.create(public_id="P1")
    old = RefreshJob.objects.create(segment=segment, status="succeeded")
    RefreshJob.objects.filter(pk=old.pk).update(started_at=days_ago(91), finished_at=days_ago(91) + dt.timedelta(
        seconds=5))
    young = RefreshJob.objects.create(segment=segment, status="succeeded")
    RefreshJob.objects.filter(pk=young.pk).update(started_at=days_ago(89), finished_at=days_ago(89))
    stuck = RefreshJob.objects.create(segment=segment, status="running")  # not finished: not ours to delete
    RefreshJob.objects.filter(pk=stuck.pk).update(queued_at=days_ago(200))
    entry = _event(segment, profile, "entered", days_ago(91) + dt.timedelta(seconds=2), job=old)
    exit_ = _event(segment, profile, "exited", days_ago(89), job=young)

    report = retention_enforce(now=NOW)

    assert report.deleted["refresh_jobs"] == 1
    assert set(RefreshJob.objects.values_list("pk", flat=True)) == {young.pk, stuck.pk}
    entry.refresh_from_db()
    exit_.refresh_from_db()
    assert (entry.job_id, exit_.job_id) == (None, young.pk)


def _backdate(batch: FeedBatch, days: float) -> None:
    FeedBatch.objects.filter(pk=batch.pk).update(started_at=days_ago(days))


def test_rejected_rows_and_batches_go_but_a_batch_that_loaded_records_stays_for_their_lineage(write_feed):
    loaded = feed_load(source="core", path=write_feed([
        customer("C1", full_name="Ann Lee", phone="13800138000"), customer("C2", birth_date="not a date")]))
    assert (loaded.status, loaded.rows_rejected) == ("succeeded", 1)
    _backdate(loaded, 400)
    core = Source.objects.get(code="core")
    empty = FeedBatch.objects.create(source=core, file_name="empty.csv", status="failed")
    RejectedRow.objects.create(batch=empty, row_number=1, reason="bad", raw={"phone": "x"})
    _backdate(empty, 366)
    recent = FeedBatch.objects.create(source=core, file_name="recent.csv", status="failed")
    RejectedRow.objects.create(batch=recent, row_number=1, reason="bad", raw={"phone": "y"})
    _backdate(recent, 29)
    queued = FeedBatch.objects.create(source=core, file_name="queued.csv", status="queued")
    _backdate(queued, 500)

    report = retention_enforce(now=NOW)

    assert (report.deleted["rejected_rows"], report.deleted["feed_batches"]) == (2, 1)
    assert set(FeedBatch.objects.values_list("pk", flat=True)) == {loaded.pk, recent.pk, queued.pk}
    assert list(RejectedRow.objects.values_list("batch_id", flat=True)) == [recent.pk]
    record = SourceRecord.objects.get(customer_key="C1")
    assert (record.first_batch_id, record.last_batch_id) == (loaded.pk, loaded.pk)


def test_a_batch_a_profile_lineage_names_stays(write_feed):
    first = feed_load(source="core", path=write_feed([customer("C1", full_name="Ann Lee", phone="13800138000")]))
    identity_resolve()
    profile = CustomerProfile.objects.get()
    second = feed_load(source="core", path=write_feed([customer("C1", full_name="Ann Lee", phone="13900139000")]))
    # the record now names only the second batch; the profile's lineage is not resolved again yet
    assert SourceRecord.objects.filter(last_batch=second).exists()
    for batch in (first, second):
        _backdate(batch, 400)

    retention_enforce(now=NOW)

    assert {entry.batch.pk for entry in profile_lineage(profile=profile)} == {first.pk}


def test_the_nightly_beat_entry_enforces_retention(settings):
    settings.CDP_RETENTION_AUDIT_DAYS = 10
    audit(timezone.now() - dt.timedelta(days=11), "POLD")
    audit(timezone.now() - dt.timedelta(days=9), "PYOUNG")
    entry = app.conf.beat_schedule["privacy-retention-nightly"]
    app.loader.import_default_modules()  # what a worker does at start: the tasks of every installed app

    result = app.tasks[entry["task"]].apply(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))

    assert result.successful()
    assert result.result["audit_records"] == 1
    assert list(AuditRecord.objects.values_list("profile_public_id", flat=True)) == ["PYOUNG"]


def test_the_command_prints_the_counts(capsys):
    audit(timezone.now() - dt.timedelta(days=1001), "POLD")

    call_command("enforce_retention", "--dry-run")
    assert "audit_records: would delete 1" in capsys.readouterr().out
    assert AuditRecord.objects.count() == 1

    call_command("enforce_retention")
    assert "audit_records: deleted 1" in capsys.readouterr().out
    assert AuditRecord.objects.count() == 0


# serialized_rollback: the flush after the test then leaves the database as the next such test expects it.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_runs_the_retention_task(worker, settings):
    settings.CDP_RETENTION_AUDIT_DAYS = 10
    audit(timezone.now() - dt.timedelta(days=11), "POLD")
    audit(timezone.now() - dt.timedelta(days=9), "PYOUNG")

    retention_enforce_task.delay()

    wait_for(lambda: not AuditRecord.objects.filter(profile_public_id="POLD").exists())
    assert list(AuditRecord.objects.values_list("profile_public_id", flat=True)) == ["PYOUNG"]
