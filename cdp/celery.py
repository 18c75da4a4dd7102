import os

from celery import Celery
from celery.schedules import crontab
from django.conf import settings
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Which queue runs each task (README, "Running on PostgreSQL with Celery"): a backfill of loads or a long resolution
# never waits in front of the segment refreshes. Each queue's time limits are in settings.CDP_TASK_TIME_LIMITS.
TASK_QUEUES = {
    "profiles.tasks.load_feed_task": "loads",
    "profiles.tasks.identity_resolve_task": "resolution",
    "segments.tasks.segment_refresh_task": "refreshes",
    "segments.tasks.tag_rule_refresh_task": "refreshes",
    "segments.tasks.segments_refresh_due_task": "refreshes",
    "segments.tasks.segments_refresh_after_load_task": "refreshes",
    "profiles.tasks.profile_metrics_recompute_task": "default",
    "profiles.tasks.feed_batches_reset_stuck_task": "default",
    "segments.tasks.refresh_jobs_reset_stuck_task": "default",
}
# A worker started without -Q consumes all of them.
app.conf.task_queues = [Queue(queue) for queue in sorted(set(TASK_QUEUES.values()))]
app.conf.task_routes = {name: {"queue": queue} for name, queue in TASK_QUEUES.items()}
app.conf.task_annotations = {
    name: {"soft_time_limit": settings.CDP_TASK_TIME_LIMITS[queue][0],
           "time_limit": settings.CDP_TASK_TIME_LIMITS[queue][1]}
    for name, queue in TASK_QUEUES.items()
}

# The one beat schedule. Per-segment schedules (interval or cron) live on the segment and are checked here.
app.conf.beat_schedule = {
    "segments-refresh-due": {"task": "segments.tasks.segments_refresh_due_task", "schedule": 300.0},
    # Windows ("last 30 days"), dormancy and age move with the calendar even when nothing is loaded.
    "profile-metrics-nightly": {"task": "profiles.tasks.profile_metrics_recompute_task",
                                "schedule": crontab(hour=1, minute=30)},
    # Feed batches and refresh jobs left "running" by a worker that died, past the hard time limit of their task.
    "feed-batches-reset-stuck": {"task": "profiles.tasks.feed_batches_reset_stuck_task", "schedule": 600.0},
    "refresh-jobs-reset-stuck": {"task": "segments.tasks.refresh_jobs_reset_stuck_task", "schedule": 600.0},
}
