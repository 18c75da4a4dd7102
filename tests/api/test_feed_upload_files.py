"""Uploaded feed files hold clear card and id numbers: a successful load deletes its file, or with
CDP_FEED_UPLOAD_KEEP_DAYS the hourly task deletes it that many days after the load; other files are never touched."""
import datetime as dt
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from cdp.celery import app
from profiles.models import FeedBatch, Source
from profiles.uploads import feed_upload_release, feed_uploads_expire

pytestmark = pytest.mark.django_db

FEED = b"customer_key,full_name,id_type,id_number\nC1,Zhang Wei,CN_RESIDENT,11010519491231002X\n"


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "feeds"
    return settings.CDP_FEED_UPLOAD_DIR


def _upload(client):
    return client.post("/api/v1/feeds/batches/upload/", {"source": "core", "file": SimpleUploadedFile("c.csv", FEED)},
                       format="multipart")


def test_a_successful_load_deletes_its_upload(api_client, upload_dir, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(api_client(scopes=["feeds:write"]))

    assert FeedBatch.objects.get(pk=response.json()["job_id"]).status == "succeeded"
    assert list(upload_dir.iterdir()) == []


def test_kept_uploads_go_once_their_days_are_over(api_client, upload_dir, settings,
                                                  django_capture_on_commit_callbacks):
    settings.CDP_FEED_UPLOAD_KEEP_DAYS = 2
    with django_capture_on_commit_callbacks(execute=True):
        _upload(api_client(scopes=["feeds:write"]))
    kept = next(upload_dir.iterdir())
    core = Source.objects.get(code="core")
    now = timezone.now()
    old_failed = upload_dir / "old-failed.csv"
    queued = upload_dir / "queued.csv"
    orphan = upload_dir / "orphan.csv"
    for path in (old_failed, queued, orphan):
        path.write_bytes(FEED)
    FeedBatch.objects.create(source=core, file_name=old_failed.name, status="failed",
                             finished_at=now - dt.timedelta(days=3))
    FeedBatch.objects.create(source=core, file_name=queued.name, status="queued")
    os.utime(orphan, (now.timestamp() - 3 * 86400,) * 2)
    os.utime(queued, (now.timestamp() - 3 * 86400,) * 2)

    assert app.tasks["profiles.tasks.feed_uploads_expire_task"].apply().get() == 2

    assert sorted(p.name for p in upload_dir.iterdir()) == sorted([kept.name, "queued.csv"])
    assert feed_uploads_expire(now=now + dt.timedelta(days=2, minutes=1)) == 1
    assert [p.name for p in upload_dir.iterdir()] == ["queued.csv"]


def test_a_file_outside_the_upload_folder_is_never_deleted(tmp_path):
    own = tmp_path / "bank_drop.csv"
    own.write_bytes(FEED)
    batch = FeedBatch.objects.create(source=Source.objects.get(code="core"), file_name=str(own), status="succeeded",
                                     finished_at=timezone.now() - dt.timedelta(days=30))

    assert feed_upload_release(batch=batch) == 0 and feed_uploads_expire() == 0
    assert own.exists()
