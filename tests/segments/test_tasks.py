"""The segment engine's Celery tasks, run eagerly with `apply()`: a transient database error is retried with backoff
and the job ends as the retry ended; a permanent error fails the job at once, recorded on the job and the segment."""
import pytest
from celery import signals
from django.db import DataError, OperationalError

from cdp.celery import app
from segments import sql
from segments.models import RefreshJob, Segment
from segments.selectors import segment_members
from segments.services import segment_refresh, segment_save
from segments.tasks import RETRY, segment_refresh_task

pytestmark = pytest.mark.django_db

SHANGHAI = {"field": "city", "op": "eq", "value": "Shanghai"}


@pytest.fixture
def shanghai(people):
    return segment_save(segment=Segment(name="Shanghai", slug="shanghai", rule=SHANGHAI))


@pytest.fixture(autouse=True)
def errors_are_results():
    """As on a worker, a failed attempt is the task's result rather than an exception raised into the caller (the
    tests' settings propagate eager errors): only then does `apply()` run the retries Celery schedules."""
    saved = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = saved


@pytest.fixture
def failing_writes(monkeypatch):
    """`failing_writes(exc, times)`: the next `times` writes of a new member version raise `exc`, the later ones
    write as usual. Returns the list of attempts made."""
    def install(exc: Exception, times: int) -> list:
        attempts = []
        write = sql.insert_members

        def insert_members(**kwargs):
            attempts.append(kwargs["version"])
            if len(attempts) <= times:
                raise exc
            return write(**kwargs)

        monkeypatch.setattr(sql, "insert_members", insert_members)
        return attempts
    return install


@pytest.fixture
def retries():
    """The retries Celery schedules: (the error, the countdown, the job's status meanwhile)."""
    seen = []

    def record(sender=None, request=None, reason=None, **kwargs):
        job_id = request.args[1] if len(request.args) > 1 else request.kwargs.get("job_id")
        seen.append((reason.exc, reason.when, RefreshJob.objects.get(pk=job_id).status))

    signals.task_retry.connect(record, weak=False)
    yield seen
    signals.task_retry.disconnect(record)


def test_a_transient_database_error_is_retried_and_the_job_succeeds(shanghai, failing_writes, retries):
    attempts = failing_writes(OperationalError("could not serialize access due to concurrent update"), times=1)
    job = RefreshJob.objects.create(segment=shanghai, trigger="api")

    result = segment_refresh_task.apply(args=(shanghai.pk, job.pk, "api"))

    assert result.successful() and result.result["status"] == "succeeded"
    assert attempts == [1, 1]  # the same version written again by the retry
    [(error, countdown, status_meanwhile)] = retries
    assert isinstance(error, OperationalError)
    assert 0 <= countdown <= 1  # exponential backoff from 1 s (with jitter) for the first retry
    assert status_meanwhile == RefreshJob.Status.QUEUED  # a poller is not told "failed" while a retry is due
    job.refresh_from_db()
    assert (job.status, job.entered, job.member_count, job.error) == ("succeeded", 2, 2, "")
    shanghai.refresh_from_db()
    assert (shanghai.current_version, shanghai.error_count, shanghai.last_error) == (1, 0, "")
    assert {p.full_name for p in segment_members(segment=shanghai)} == {"Ann Lee", "Cai Xu"}
    assert RefreshJob.objects.filter(segment=shanghai).count() == 1  # the retry ran as the same job


def test_a_transient_error_that_persists_fails_the_job_after_the_last_retry(shanghai, failing_writes, retries):
    failing_writes(OperationalError("server closed the connection unexpectedly"), times=100)
    job = RefreshJob.objects.create(segment=shanghai, trigger="api")

    result = segment_refresh_task.apply(args=(shanghai.pk, job.pk, "api"))

    assert result.failed() and isinstance(result.result, OperationalError)

    assert len(retries) == RETRY["max_retries"]
    countdowns = [countdown for _, countdown, _ in retries]
    assert all(0 <= c <= 2 ** n for n, c in enumerate(countdowns))  # backoff: at most 1, 2, 4, 8, 16 s
    job.refresh_from_db()
    assert job.status == "failed" and "server closed the connection unexpectedly" in job.error
    shanghai.refresh_from_db()
    assert shanghai.current_version == 0 and not shanghai.is_calculating
    assert shanghai.error_count == RETRY["max_retries"] + 1 and "server closed" in shanghai.last_error


def test_a_permanent_error_fails_the_job_at_once_and_keeps_the_previous_members(shanghai, failing_writes, retries):
    segment_refresh(segment=shanghai)
    failing_writes(DataError("numeric field overflow"), times=1)
    job = RefreshJob.objects.create(segment=shanghai, trigger="api")

    result = segment_refresh_task.apply(args=(shanghai.pk, job.pk, "api"))

    assert result.failed() and isinstance(result.result, DataError)

    assert retries == []
    job.refresh_from_db()
    assert job.status == "failed" and "numeric field overflow" in job.error
    assert job.finished_at is not None and job.duration_seconds is not None
    shanghai.refresh_from_db()
    assert (shanghai.current_version, shanghai.error_count, shanghai.is_calculating) == (1, 1, False)
    assert "numeric field overflow" in shanghai.last_error
    assert {p.full_name for p in segment_members(segment=shanghai)} == {"Ann Lee", "Cai Xu"}

    segment_refresh_task.apply(args=(shanghai.pk, None, "api"))  # the next run succeeds and clears the error
    shanghai.refresh_from_db()
    assert (shanghai.current_version, shanghai.error_count, shanghai.last_error) == (2, 0, "")
