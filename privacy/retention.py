"""Retention: what accumulates without bound is deleted once older than its window (README, "Retention").

Every category is deleted in chunks of at most `CDP_RETENTION_CHUNK_ROWS` rows, each chunk its own transaction, so a
backlog of millions never holds one long transaction or its locks; a run interrupted midway has deleted whole chunks
and the next run finishes the rest. A window of 0 days keeps that category forever.
"""
import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from profiles import sql
from profiles.models import (
    Account, CardTransaction, CustomerProfile, FeedBatch, FxRate, Holding, RejectedRow, RiskAssessment, SourceRecord,
    Transaction,
)
from segments.models import RefreshJob, Segment, SegmentEvent, SegmentSize

from .models import AuditRecord

# The categories in the order a run deletes them, each with its setting's name (days).
RETENTION_SETTINGS = {
    "audit_records": "CDP_RETENTION_AUDIT_DAYS",
    "segment_events": "CDP_RETENTION_SEGMENT_HISTORY_DAYS",
    "segment_sizes": "CDP_RETENTION_SEGMENT_HISTORY_DAYS",
    "refresh_jobs": "CDP_RETENTION_REFRESH_JOB_DAYS",
    "rejected_rows": "CDP_RETENTION_REJECTED_ROW_DAYS",
    "feed_batches": "CDP_RETENTION_FEED_BATCH_DAYS",
}

_AUDIT = AuditRecord._meta.db_table
_EVENT = SegmentEvent._meta.db_table
_SIZE = SegmentSize._meta.db_table
_JOB = RefreshJob._meta.db_table
_REJECTED = RejectedRow._meta.db_table
_BATCH = FeedBatch._meta.db_table
_FINISHED_JOB = (RefreshJob.Status.SUCCEEDED, RefreshJob.Status.FAILED, RefreshJob.Status.SKIPPED)
_FINISHED_BATCH = (FeedBatch.Status.SUCCEEDED, FeedBatch.Status.FAILED)


@dataclass
class RetentionReport:
    """Rows deleted (or, in a dry run, that would be) per category, and the cut-off of each."""

    dry_run: bool = False
    deleted: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, dt.datetime | None] = field(default_factory=dict)


def retention_cutoffs(*, now: dt.datetime) -> dict[str, dt.datetime | None]:
    """Per category, the time before which its rows go (None: kept forever)."""
    cutoffs = {}
    for category, setting in RETENTION_SETTINGS.items():
        days = getattr(settings, setting)
        cutoffs[category] = now - dt.timedelta(days=days) if days > 0 else None
    return cutoffs


def retention_enforce(*, now: dt.datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """Delete what is older than its window; `dry_run` counts what would go and deletes nothing."""
    report = RetentionReport(dry_run=dry_run, cutoffs=retention_cutoffs(now=now or timezone.now()))
    chunk = settings.CDP_RETENTION_CHUNK_ROWS
    steps = {
        "audit_records": _audit_records, "segment_events": _segment_events, "segment_sizes": _segment_sizes,
        "refresh_jobs": _refresh_jobs, "rejected_rows": _rejected_rows, "feed_batches": _feed_batches,
    }
    for category, step in steps.items():
        cutoff = report.cutoffs[category]
        # As the database compares it (SQLite: naive UTC text).
        report.deleted[category] = 0 if cutoff is None else step(
            connection.ops.adapt_datetimefield_value(cutoff), chunk, dry_run)
    return report


def _in_chunks(select_ids: str, params: list, delete: str, chunk: int, dry_run: bool, *, first: str = "") -> int:
    """Run `delete` (a statement with `IN ({ids})`, after `first` if given) over the ids `select_ids` picks, `chunk`
    at a time, each chunk in a transaction of its own; `select_ids` picks the oldest first, and never what is gone."""
    if dry_run:
        return sql.fetch_all(f"SELECT COUNT(*) FROM ({select_ids}) x", params)[0][0]
    total = 0
    while True:
        with transaction.atomic():
            ids = [row[0] for row in sql.fetch_all(f"{select_ids} LIMIT %s", [*params, chunk])]
            if ids and first:
                sql.execute(first.format(ids=", ".join(["%s"] * len(ids))), ids)
            if ids:
                total += sql.execute(delete.format(ids=", ".join(["%s"] * len(ids))), ids)
        if len(ids) < chunk:
            return total


def _audit_records(cutoff, chunk, dry_run) -> int:
    return _in_chunks(f"SELECT id FROM {_AUDIT} WHERE at < %s ORDER BY at, id", [cutoff],
                      f"DELETE FROM {_AUDIT} WHERE id IN ({{ids}})", chunk, dry_run)


def _segment_events(cutoff, chunk, dry_run) -> int:
    """Events before the window, but a profile's last event before it when that is an entry: "who was in X on D"
    counts entries against exits, so it stays exact for every day of the window. Oldest first, so an event is
    judged while every later one is still there."""
    total = 0
    for segment_id in Segment.objects.order_by("pk").values_list("pk", flat=True):
        select = (
            f"SELECT e.id FROM {_EVENT} e WHERE e.segment_id = %s AND e.at < %s AND (e.kind = %s OR EXISTS ("
            f"SELECT 1 FROM {_EVENT} later WHERE later.segment_id = e.segment_id AND later.profile_id = e.profile_id "
            f"AND later.at < %s AND (later.at > e.at OR (later.at = e.at AND later.id > e.id)))) ORDER BY e.at, e.id")
        total += _in_chunks(select, [segment_id, cutoff, SegmentEvent.Kind.EXITED, cutoff],
                            f"DELETE FROM {_EVENT} WHERE id IN ({{ids}})", chunk, dry_run)
    return total


def _segment_sizes(cutoff, chunk, dry_run) -> int:
    total = 0
    for segment_id in Segment.objects.order_by("pk").values_list("pk", flat=True):
        total += _in_chunks(f"SELECT id FROM {_SIZE} WHERE segment_id = %s AND at < %s ORDER BY at, id",
                            [segment_id, cutoff], f"DELETE FROM {_SIZE} WHERE id IN ({{ids}})", chunk, dry_run)
    return total


def _refresh_jobs(cutoff, chunk, dry_run) -> int:
    """Jobs finished before the window. The events a job recorded (stamped with its clock, between its start and
    its end) forget it first, so none names a job that is gone."""
    statuses = ", ".join(["%s"] * len(_FINISHED_JOB))
    select = (f"SELECT id FROM {_JOB} WHERE finished_at < %s AND status IN ({statuses}) "
              f"ORDER BY finished_at, id")
    if dry_run:
        return _in_chunks(select, [cutoff, *_FINISHED_JOB], "", chunk, dry_run)
    total = 0
    while True:
        with transaction.atomic():
            jobs = sql.fetch_all(
                f"SELECT id, segment_id, COALESCE(started_at, queued_at), finished_at FROM {_JOB} "
                f"WHERE id IN ({select} LIMIT %s)", [cutoff, *_FINISHED_JOB, chunk])
            for job_id, segment_id, started_at, finished_at in jobs:
                if segment_id is not None:
                    sql.execute(f"UPDATE {_EVENT} SET job_id = NULL WHERE segment_id = %s AND at >= %s "
                                f"AND at <= %s AND job_id = %s", [segment_id, started_at, finished_at, job_id])
            ids = [job[0] for job in jobs]
            if ids:
                total += sql.execute(f"DELETE FROM {_JOB} WHERE id IN ({', '.join(['%s'] * len(ids))})", ids)
        if len(jobs) < chunk:
            return total


def _rejected_rows(cutoff, chunk, dry_run) -> int:
    """The rejected rows of batches started before the window (the batch keeps its count of them). In no order:
    which go first does not matter, and a chunk is then found without sorting the whole backlog."""
    return _in_chunks(f"SELECT id FROM {_REJECTED} WHERE batch_id IN (SELECT id FROM {_BATCH} WHERE started_at < %s)",
                      [cutoff], f"DELETE FROM {_REJECTED} WHERE id IN ({{ids}})", chunk, dry_run)


def _batch_references() -> list[tuple[str, str]]:
    """(table, column) of every row that names the batch it came from: such a batch is kept."""
    references = [(SourceRecord._meta.db_table, "first_batch_id"), (SourceRecord._meta.db_table, "last_batch_id")]
    references += [(CustomerProfile._meta.db_table, f"{group}_batch_id") for group in CustomerProfile.LINEAGE_GROUPS]
    references += [(model._meta.db_table, "last_batch_id")
                   for model in (Account, Transaction, CardTransaction, Holding, RiskAssessment, FxRate)]
    return references


def _feed_batches(cutoff, chunk, dry_run) -> int:
    """Finished batches started before the window that nothing loaded from them still names (README: a batch a
    source record, an activity row or a profile's lineage points at stays, so lineage never breaks)."""
    statuses = ", ".join(["%s"] * len(_FINISHED_BATCH))
    unreferenced = " ".join(f"AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{column} = b.id)"
                            for table, column in _batch_references())
    select = (f"SELECT b.id FROM {_BATCH} b WHERE b.started_at < %s AND b.status IN ({statuses}) {unreferenced} "
              f"ORDER BY b.started_at, b.id")
    return _in_chunks(select, [cutoff, *_FINISHED_BATCH], f"DELETE FROM {_BATCH} WHERE id IN ({{ids}})", chunk,
                      dry_run, first=f"DELETE FROM {_REJECTED} WHERE batch_id IN ({{ids}})")
