"""End to end: a real Celery worker on Redis refreshes a segment in the test database."""
import time

import pytest
from celery.contrib.testing.worker import start_worker

from cdp.celery import app
from segments.models import RefreshJob, Segment
from segments.selectors import segment_members
from segments.services import segment_save
from segments.tasks import segment_refresh_enqueue, segments_refresh_after_load_task
from tests.celery_broker import on_test_broker



@pytest.fixture
def worker():
    with on_test_broker(), start_worker(app, perform_ping_check=False, shutdown_timeout=20):
        yield


def wait_for(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out: {list(RefreshJob.objects.values_list('status', 'trigger', 'error'))}")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_worker_refreshes_a_segment(people, worker):
    segment = segment_save(segment=Segment(name="Shanghai", slug="shanghai",
                                           rule={"field": "city", "op": "eq", "value": "Shanghai"}))

    job = segment_refresh_enqueue(segment=segment, trigger="test")  # no transaction open: sent at once

    wait_for(lambda: RefreshJob.objects.get(pk=job.pk).status == RefreshJob.Status.SUCCEEDED)
    job.refresh_from_db()
    assert (job.entered, job.member_count, job.trigger) == (2, 2, "test")
    assert job.duration_seconds is not None
    assert {p.full_name for p in segment_members(segment=segment)} == {"Ann Lee", "Cai Xu"}

    segments_refresh_after_load_task.delay(["profiles"])
    wait_for(lambda: RefreshJob.objects.filter(segment=segment, trigger="feed_load").exists())
