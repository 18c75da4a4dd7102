from celery import shared_task
from django.db import OperationalError

from .retention import retention_enforce


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def retention_enforce_task() -> dict:
    """Nightly (the beat schedule): delete what is older than its retention window."""
    return retention_enforce().deleted
