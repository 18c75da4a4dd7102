from celery import shared_task
from django.db import OperationalError

from .feeds import feed_load
from .resolution import identity_resolve


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def load_feed_task(source_code: str, path: str, encoding: str = "utf-8-sig", resolve: bool = True) -> dict:
    batch = feed_load(source=source_code, path=path, encoding=encoding)
    result = {"batch": batch.pk, "status": batch.status, "error": batch.error}
    if resolve and batch.status == batch.Status.SUCCEEDED:
        result["resolution"] = identity_resolve().as_dict()
    return result


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def identity_resolve_task(full: bool = False) -> dict:
    return identity_resolve(full=full).as_dict()
