"""Celery tasks of the segment engine: thin wrappers that load rows by id and call one service."""
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction

from tags.models import TagDefinition
from tags.services import system_tags_sync

from .models import RefreshJob, Segment
from .services import refresh_jobs_reset_stuck, segment_refresh, segments_refresh_due, segments_refresh_for_inputs, \
    tag_rule_refresh

# Lost connections, deadlocks and serialisation failures are transient: retried with exponential backoff.
TRANSIENT = (OperationalError, InterfaceError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 600, "max_retries": 5}


@shared_task(bind=True, **RETRY)
def segment_refresh_task(self, segment_id: int, job_id: int | None = None, trigger: str = "task") -> dict:
    segment = Segment.objects.get(pk=segment_id)
    job = RefreshJob.objects.get(pk=job_id) if job_id else None
    try:
        job = segment_refresh(segment=segment, job=job, trigger=trigger)
    except TRANSIENT as exc:
        if job is not None and self.request.retries < self.max_retries:
            _job_awaits_retry(job, exc)
        raise
    return {"job": job.pk, "status": job.status, "entered": job.entered, "exited": job.exited}


def _job_awaits_retry(job: RefreshJob, exc: Exception) -> None:
    """The service ended the attempt as failed; the job is not over while a retry is due: whoever polls it sees it
    queued again, with the error that caused the retry."""
    try:
        RefreshJob.objects.filter(pk=job.pk).update(
            status=RefreshJob.Status.QUEUED, error=f"retrying after a transient error: {exc!r}"[:2000],
            finished_at=None, duration_seconds=None)
    except DatabaseError:
        pass  # the connection is gone too: the retry's attempt will record its own outcome


@shared_task(**RETRY)
def tag_rule_refresh_task(tag_id: int, trigger: str = "task") -> dict:
    job = tag_rule_refresh(tag=TagDefinition.objects.get(pk=tag_id), trigger=trigger)
    return {"job": job.pk, "status": job.status, "entered": job.entered, "exited": job.exited}


@shared_task(**RETRY)
def segments_refresh_due_task() -> dict:
    return segments_refresh_due().as_dict()


@shared_task(**RETRY)
def segments_refresh_after_load_task(inputs: list[str] = ("profiles",)) -> dict:
    """After a feed load and resolution: only the rule tags and segments whose inputs changed. New metrics first
    update the system tags that mirror them."""
    changed = set(inputs)
    if "metrics" in changed:
        changed |= {f"tag:{code}" for code in system_tags_sync()}
    return segments_refresh_for_inputs(inputs=changed).as_dict()


@shared_task(**RETRY)
def refresh_jobs_reset_stuck_task() -> int:
    return refresh_jobs_reset_stuck(running_longer_than=settings.CDP_TASK_TIME_LIMITS["refreshes"][1])


def segment_refresh_enqueue(*, segment: Segment, trigger: str) -> RefreshJob:
    """Record a queued job and send it once the surrounding transaction commits."""
    job = RefreshJob.objects.create(segment=segment, trigger=trigger)
    transaction.on_commit(lambda: segment_refresh_task.delay(segment.pk, job.pk, trigger))
    return job
