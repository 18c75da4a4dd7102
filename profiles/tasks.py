from celery import current_app, shared_task
from django.conf import settings
from django.db import OperationalError

from cdp import metrics

from .activity import activity_batch_profile_ids, activity_feed_load
from .feeds import feed_batches_reset_stuck, feed_load
from .metrics import profile_metrics_recompute
from .models import FeedBatch
from .resolution import identity_resolve
from .uploads import feed_upload_release, feed_uploads_expire


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def load_feed_task(source_code: str, path: str, encoding: str = "utf-8-sig", resolve: bool = True,
                   kind: str = "customers", batch_id: int | None = None) -> dict:
    """Load a customer or activity feed, resolving after customers. `batch_id`: the queued batch to run as; a retry
    after that batch has failed loads the file again as a new batch."""
    queued = FeedBatch.objects.filter(pk=batch_id, status=FeedBatch.Status.QUEUED).first() if batch_id else None
    try:
        if kind == "customers":
            batch = feed_load(source=source_code, path=path, encoding=encoding, batch=queued)
        else:
            batch = activity_feed_load(source=source_code, kind=kind, path=path, encoding=encoding, batch=queued)
    except Exception:
        metrics.feed_load_failed(kind)
        raise
    metrics.feed_batch_observe(batch)
    result = {"batch": batch.pk, "status": batch.status, "error": batch.error}
    if batch.status != batch.Status.SUCCEEDED:
        return result
    feed_upload_release(batch=batch)
    if kind == "customers":
        if resolve:
            with metrics.RESOLUTION_SECONDS.time():
                result["resolution"] = identity_resolve().as_dict()
            # New links can attach held activity to any profile: recomputed in full, set-based.
            profile_metrics_recompute_task.delay(changed=["profiles"])
    elif kind != "fx_rates":
        profile_metrics_recompute_task.delay(profile_ids=activity_batch_profile_ids(batch=batch),
                                             changed=[f"activity:{kind}"])
    else:
        profile_metrics_recompute_task.delay(changed=["activity:transactions", "activity:card_transactions",
                                                      "activity:accounts", "activity:holdings"])
    return result


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def identity_resolve_task(full: bool = False) -> dict:
    with metrics.RESOLUTION_SECONDS.time():
        return identity_resolve(full=full).as_dict()


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def profile_metrics_recompute_task(profile_ids: list[int] | None = None, changed: list[str] = ()) -> dict:
    """After a load: the profiles it touched; nightly (no ids): every profile, for the time-relative values.
    Then the segments and rule tags whose inputs changed (`changed`, and the metrics) are refreshed."""
    report = profile_metrics_recompute(profile_ids=profile_ids).as_dict()
    # By name: segments builds on profiles, never the other way round.
    current_app.signature("segments.tasks.segments_refresh_after_load_task", args=(["metrics", *changed],)).delay()
    return report


@shared_task
def feed_uploads_expire_task() -> int:
    """Hourly: uploaded feed files past CDP_FEED_UPLOAD_KEEP_DAYS go (profiles.uploads)."""
    return feed_uploads_expire()


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def feed_batches_reset_stuck_task() -> int:
    return feed_batches_reset_stuck(running_longer_than=settings.CDP_TASK_TIME_LIMITS["loads"][1])
