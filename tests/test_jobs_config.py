"""Every task has a queue and soft and hard time limits; Redis hands a task to another worker only after the longest
of them; a job left 'running' by a dead worker is failed by beat once its task's hard limit is past."""
import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from cdp.celery import TASK_QUEUES, app
from profiles.models import FeedBatch, Source
from segments.models import RefreshJob, Segment
from segments.services import segment_save

QUEUES = {"loads", "resolution", "refreshes", "default"}


def _project_tasks() -> set[str]:
    app.loader.import_default_modules()  # what a worker does at start
    return {name for name in app.tasks if not name.startswith("celery.")}


def test_every_task_has_a_queue_and_time_limits():
    tasks = _project_tasks()
    assert tasks - set(TASK_QUEUES) == set(), "tasks without a queue in cdp.celery.TASK_QUEUES"
    assert set(TASK_QUEUES.values()) == QUEUES
    for name in tasks:
        task = app.tasks[name]
        route = app.amqp.router.route({}, name)
        assert route["queue"].name == TASK_QUEUES[name]
        assert 0 < task.soft_time_limit < task.time_limit, name


def test_redis_redelivers_only_after_the_longest_time_limit():
    longest = max(app.tasks[name].time_limit for name in _project_tasks())
    assert app.conf.broker_transport_options["visibility_timeout"] > longest
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost


def _send(entry: str):
    """What beat sends for an entry, run in-process."""
    app.loader.import_default_modules()
    return app.tasks[app.conf.beat_schedule[entry]["task"]].apply()


@pytest.mark.django_db
def test_beat_fails_a_batch_its_dead_worker_left_running():
    source = Source.objects.get(code="core")
    hard_limit = dt.timedelta(seconds=settings.CDP_TASK_TIME_LIMITS["loads"][1])
    dead = FeedBatch.objects.create(source=source, file_name="a.csv")
    alive = FeedBatch.objects.create(source=source, file_name="b.csv")
    FeedBatch.objects.filter(pk=dead.pk).update(started_at=timezone.now() - hard_limit - dt.timedelta(minutes=1))
    FeedBatch.objects.filter(pk=alive.pk).update(started_at=timezone.now() - hard_limit + dt.timedelta(minutes=5))

    assert _send("feed-batches-reset-stuck").get() == 1

    dead.refresh_from_db()
    assert (dead.status, dead.error) == ("failed", "interrupted before it finished; nothing of it was kept")
    assert dead.finished_at is not None
    assert FeedBatch.objects.get(pk=alive.pk).status == "running"


@pytest.mark.django_db
def test_beat_fails_a_refresh_its_dead_worker_left_running_and_the_segment_stops_calculating():
    hard_limit = dt.timedelta(seconds=settings.CDP_TASK_TIME_LIMITS["refreshes"][1])
    stuck_segment, busy_segment = (
        segment_save(segment=Segment(name=slug, slug=slug, rule={"field": "city", "op": "eq", "value": "Shanghai"}))
        for slug in ("stuck", "busy"))
    Segment.objects.update(is_calculating=True, pending_version=1)
    dead = RefreshJob.objects.create(segment=stuck_segment, status="running",
                                     started_at=timezone.now() - hard_limit - dt.timedelta(minutes=1))
    alive = RefreshJob.objects.create(segment=busy_segment, status="running", started_at=timezone.now())

    assert _send("refresh-jobs-reset-stuck").get() == 1

    dead.refresh_from_db()
    assert (dead.status, dead.error) == ("failed", "interrupted: the worker stopped before it finished")
    assert RefreshJob.objects.get(pk=alive.pk).status == "running"
    stuck_segment.refresh_from_db()
    busy_segment.refresh_from_db()
    assert (stuck_segment.is_calculating, stuck_segment.pending_version) == (False, None)
    assert (busy_segment.is_calculating, busy_segment.pending_version) == (True, 1)
