from celery import shared_task
from django.db import OperationalError

from .activity import activity_feed_load
from .feeds import feed_load
from .models import FeedBatch
from .resolution import identity_resolve


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def load_feed_task(source_code: str, path: str, encoding: str = "utf-8-sig", resolve: bool = True,
                   kind: str = "customers", batch_id: int | None = None) -> dict:
    """Load a customer or activity feed, resolving after customers. `batch_id`: the queued batch to run as; a retry
    after that batch has failed loads the file again as a new batch."""
    queued = FeedBatch.objects.filter(pk=batch_id, status=FeedBatch.Status.QUEUED).first() if batch_id else None
    if kind == "customers":
        batch = feed_load(source=source_code, path=path, encoding=encoding, batch=queued)
    else:
        batch = activity_feed_load(source=source_code, kind=kind, path=path, encoding=encoding, batch=queued)
    result = {"batch": batch.pk, "status": batch.status, "error": batch.error}
    if resolve and kind == "customers" and batch.status == batch.Status.SUCCEEDED:
        result["resolution"] = identity_resolve().as_dict()
    return result


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def identity_resolve_task(full: bool = False) -> dict:
    return identity_resolve(full=full).as_dict()
