"""A refresh whose worker process is SIGKILLed mid-run (out of memory, a node going down) goes back on its queue
(acks_late with reject_on_worker_lost), runs again on a new worker process, and ends with the result an
uninterrupted refresh gives: the same job succeeded, the same members, one version.

A real prefork worker runs in a subprocess on the Redis test broker against the test database. The kill does not
depend on timing: a table lock the test holds stops the refresh at its write into the members, and the worker
process running it is killed there."""
import os
import signal
import subprocess
import time

import pytest
from django.db import connection, transaction

from cdp.celery import app
from segments.models import RefreshJob, Segment, SegmentMember
from segments.selectors import segment_members
from segments.services import segment_save
from segments.tasks import segment_refresh_task
from tests.celery_broker import on_test_broker, worker_process

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def worker():
    """`celery worker` for the refreshes queue, one prefork process, in a subprocess on the test database."""
    with on_test_broker(), worker_process(queue="refreshes") as proc:
        yield proc


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the worker ended: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _process_running(task_id: str):
    """The pid of the worker process that runs the task, once it does."""
    replies = app.control.inspect(timeout=1).active() or {}
    return next((task["worker_pid"] for tasks in replies.values() for task in tasks if task["id"] == task_id), None)


def _waiting_writers(cur) -> set[int]:
    cur.execute("SELECT pid FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                [SegmentMember._meta.db_table])
    return {pid for (pid,) in cur.fetchall()}


def test_a_refresh_killed_with_its_worker_process_is_redelivered_and_completes(people, worker):
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai",
                                           rule={"field": "city", "op": "eq", "value": "Shanghai"}))
    job = RefreshJob.objects.create(segment=segment, trigger="test")

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(f"LOCK TABLE {SegmentMember._meta.db_table} IN SHARE MODE")  # reads pass, writes wait
            sent = segment_refresh_task.apply_async((segment.pk, job.pk, "test"))
            _wait_for(lambda: _waiting_writers(cur), "the refresh to wait for the lock", worker)
            first_process = _wait_for(lambda: _process_running(sent.id), "the worker to report the task", worker)
            assert RefreshJob.objects.get(pk=job.pk).status == RefreshJob.Status.RUNNING
            os.kill(first_process, signal.SIGKILL)
            # The task runs again in the worker's new process, and waits as well.
            _wait_for(lambda: _process_running(sent.id) not in (None, first_process), "the task to be redelivered",
                      worker)

    _wait_for(lambda: RefreshJob.objects.get(pk=job.pk).status == RefreshJob.Status.SUCCEEDED,
              "the redelivered refresh to succeed", worker)
    job.refresh_from_db()
    segment.refresh_from_db()
    assert (job.entered, job.exited, job.member_count, job.error) == (2, 0, 2, "")
    assert RefreshJob.objects.count() == 1
    assert {p.full_name for p in segment_members(segment=segment)} == {"Ann Lee", "Cai Xu"}
    assert (segment.current_version, segment.is_calculating, segment.pending_version) == (1, False, None)
    assert set(SegmentMember.objects.filter(segment=segment).values_list("version", flat=True)) == {1}
