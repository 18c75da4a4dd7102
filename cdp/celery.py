import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

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
}
