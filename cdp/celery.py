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
    "profiles.tasks.feed_uploads_expire_task": "default",
    "privacy.tasks.retention_enforce_task": "default",
}
# A worker started without -Q consumes all of them.
app.conf.task_queues = [Queue(queue) for queue in sorted(set(TASK_QUEUES.values()))]
app.conf.task_routes = {name: {"queue": queue} for name, queue in TASK_QUEUES.items()}


class _QueueTimeLimits:
    """Each task's soft and hard time limits, those of its queue. Read when a task is set up, not at import: this
    module is imported while Django's settings load (a settings module that extends cdp.settings imports it)."""

    def annotate(self, task):
        queue = TASK_QUEUES.get(task.name)
        if queue is None:
            return None
        soft, hard = settings.CDP_TASK_TIME_LIMITS[queue]
        return {"soft_time_limit": soft, "time_limit": hard}


app.conf.task_annotations = [_QueueTimeLimits()]

# The one beat schedule. Per-segment schedules (interval or cron) live on the segment and are checked here.
app.conf.beat_schedule = {
    "segments-refresh-due": {"task": "segments.tasks.segments_refresh_due_task", "schedule": 300.0},
    # Windows ("last 30 days"), dormancy and age move with the calendar even when nothing is loaded.
    "profile-metrics-nightly": {"task": "profiles.tasks.profile_metrics_recompute_task",
                                "schedule": crontab(hour=1, minute=30)},
    # Uploaded feed files past CDP_FEED_UPLOAD_KEEP_DAYS (they hold clear card and id numbers).
    "feed-uploads-expire": {"task": "profiles.tasks.feed_uploads_expire_task", "schedule": 3600.0},
    # Retention windows (README, "Retention"): what is older than its window goes, in short transactions.
    "privacy-retention-nightly": {"task": "privacy.tasks.retention_enforce_task",
                                  "schedule": crontab(hour=3, minute=15)},
    # Feed batches and refresh jobs left "running" by a worker that died, past the hard time limit of their task.
    "feed-batches-reset-stuck": {"task": "profiles.tasks.feed_batches_reset_stuck_task", "schedule": 600.0},
    "refresh-jobs-reset-stuck": {"task": "segments.tasks.refresh_jobs_reset_stuck_task", "schedule": 600.0},
}
