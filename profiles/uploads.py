"""Uploaded feed files: they hold clear card and id numbers, so they are not kept longer than their load needs.

An upload (api.feeds) is stored in CDP_FEED_UPLOAD_DIR under a unique name, which the batch records as its file_name
(a batch records a file's base name only, never a server path). With
CDP_FEED_UPLOAD_KEEP_DAYS = 0 (the default) a successful load deletes its file at once; otherwise, and for a load
that failed (kept so that it can be looked into), the hourly beat task deletes files whose load finished more than
that many days ago. Files the platform did not receive as uploads (a path given to load_feed) are never touched.
"""
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .models import FeedBatch

__all__ = ["feed_upload_release", "feed_uploads_expire", "feed_uploads_of_sources_delete"]

_FINISHED = (FeedBatch.Status.SUCCEEDED, FeedBatch.Status.FAILED)


def _upload_dir() -> Path:
    return Path(settings.CDP_FEED_UPLOAD_DIR)


def _upload_path(file_name: str) -> Path | None:
    """The stored upload a batch's file_name names, or None when the upload folder holds no such file."""
    path = _upload_dir() / Path(file_name).name
    return path if path.is_file() else None


def _delete(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def feed_upload_release(*, batch: FeedBatch) -> int:
    """After a load: delete the batch's uploaded file if it loaded successfully and none is to be kept; 1 if
    a file was deleted."""
    if batch.status != FeedBatch.Status.SUCCEEDED or settings.CDP_FEED_UPLOAD_KEEP_DAYS > 0:
        return 0
    return _delete(_upload_path(batch.file_name))


def _stored_uploads() -> dict[str, Path]:
    folder = _upload_dir()
    if not folder.is_dir():
        return {}
    # Named as batches name them: the file's name.
    return {path.name: path for path in folder.iterdir() if path.is_file()}


def feed_uploads_expire(*, now: datetime | None = None) -> int:
    """Delete the uploads whose load finished CDP_FEED_UPLOAD_KEEP_DAYS ago or more, and files in the upload folder
    that no batch names and are as old; returns how many. Files of queued or running loads stay."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CDP_FEED_UPLOAD_KEEP_DAYS)
    stored = _stored_uploads()
    if not stored:
        return 0
    batches = {name: (status, finished_at) for name, status, finished_at in
               FeedBatch.objects.filter(file_name__in=list(stored)).values_list("file_name", "status", "finished_at")}
    deleted = 0
    for name, path in stored.items():
        if name in batches:
            status, finished_at = batches[name]
            expired = status in _FINISHED and (finished_at is None or finished_at <= cutoff)
        else:
            expired = datetime.fromtimestamp(path.stat().st_mtime, tz=cutoff.tzinfo) <= cutoff
        if expired:
            deleted += _delete(path)
    return deleted


def feed_uploads_of_sources_delete(*, source_ids: list[int]) -> int:
    """Delete every finished upload of these sources still kept (erasure: a kept file may hold the person, and a
    file already loaded cannot be edited row by row); returns how many."""
    stored = _stored_uploads()
    if not stored:
        return 0
    names = FeedBatch.objects.filter(file_name__in=list(stored), source_id__in=source_ids,
                                     status__in=_FINISHED).values_list("file_name", flat=True)
    return sum(_delete(_upload_path(name)) for name in names)
