"""End to end: a real Celery worker on Redis refreshes a segment in the test database."""
import os
import time

import pytest
from celery.contrib.testing.worker import start_worker

from cdp.celery import app
from segments.models import RefreshJob, Segment
from segments.selectors import segment_members
from segments.services import segment_save
from segments.tasks import segment_refresh_enqueue, segments_refresh_after_load_task

BROKER = os.environ.get("CELERY_TEST_BROKER_URL")


@pytest.fixture
def worker():
    if not BROKER:
        pytest.skip("CELERY_TEST_BROKER_URL is not set (bin/test sets it)")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "result_backend")}
    app.conf.update(broker_url=BROKER, task_always_eager=False, result_backend=None)
    _forget_broker_connections()
    app.control.purge()  # tasks a previous, interrupted run left on the test broker
    try:
        with start_worker(app, perform_ping_check=False, shutdown_timeout=20):
            yield
    finally:
        app.conf.update(saved)
        _forget_broker_connections()


def _forget_broker_connections():
    # Celery caches its connection and producer pools on first use, with the broker URL of that moment.
    app._pool = None
    app.amqp._producer_pool = None


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
