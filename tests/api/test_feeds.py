"""Feed upload (streamed to disk, queued, loaded by the task), batches with counts, rejected rows, and job status of
loads and refreshes; scopes feeds:write and jobs:read."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from profiles.models import FeedBatch, SourceRecord
from segments.models import RefreshJob, Segment
from segments.services import segment_refresh, segment_save

pytestmark = pytest.mark.django_db

GOOD = ("customer_key,full_name,gender,birth_date,phone\n"
        "C1,张伟,M,1980-01-01,13912875634\n"
        "C2,李娜,F,not-a-date,13912875635\n"
        "C3,王芳,F,1990-05-06,13912875636\n")
UPLOAD = ["feeds:write", "jobs:read"]


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "feeds"
    return settings.CDP_FEED_UPLOAD_DIR


def _upload(client, content: bytes, name="core.csv", **fields):
    return client.post("/api/v1/feeds/batches/upload/",
                       {"source": "core", "file": SimpleUploadedFile(name, content), **fields}, format="multipart")


def test_an_upload_is_queued_then_loaded_with_rejects_kept(api_client, upload_dir, django_capture_on_commit_callbacks):
    client = api_client(scopes=UPLOAD)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(client, GOOD.encode())
    assert response.status_code == 202 and response.json()["status"] == "queued"
    batch_id = response.json()["job_id"]
    assert response.json()["job_url"].endswith(f"/api/v1/feeds/batches/{batch_id}/")

    batch = client.get(f"/api/v1/feeds/batches/{batch_id}/").json()
    assert (batch["status"], batch["rows_read"], batch["rows_created"], batch["rows_rejected"]) == \
        ("succeeded", 3, 2, 1)
    assert batch["file_name"].endswith("core.csv") and str(upload_dir) not in batch["file_name"]
    rejects = client.get(f"/api/v1/feeds/batches/{batch_id}/rejects/").json()["results"]
    assert [(r["row_number"], "birth_date" in r["reason"]) for r in rejects] == [(2, True)]
    assert SourceRecord.objects.filter(customer_key__in=["C1", "C3"], profile__isnull=False).count() == 2
    assert FeedBatch.objects.count() == 1  # the queued batch is the one that ran


def test_a_file_that_is_not_a_feed_fails_its_batch_and_loads_nothing(api_client, django_capture_on_commit_callbacks):
    client = api_client(scopes=UPLOAD)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(client, b"\x89PNG\r\n\x1a\n\x00\x00binary", name="photo.png")
    batch = client.get(response.json()["job_url"]).json()
    assert batch["status"] == "failed" and batch["error"]
    assert not SourceRecord.objects.exists()


def test_bad_upload_fields_are_refused_and_nothing_is_queued(api_client):
    client = api_client(scopes=UPLOAD)
    assert _upload(client, GOOD.encode(), kind="nonsense").status_code == 400
    response = client.post("/api/v1/feeds/batches/upload/", {"source": "nosuch"}, format="multipart")
    assert response.status_code == 400 and set(response.json()["details"]) >= {"source", "file"}
    assert not FeedBatch.objects.exists()


def test_uploading_needs_feeds_write_and_reading_batches_jobs_read(api_client, upload_dir):
    reader = api_client(scopes=["jobs:read"])
    assert _upload(reader, GOOD.encode()).status_code == 403
    assert not FeedBatch.objects.exists() and not upload_dir.exists()
    assert api_client(scopes=["feeds:write"]).get("/api/v1/feeds/batches/").status_code == 403
    assert reader.get("/api/v1/feeds/batches/").status_code == 200


def test_batches_filter_by_source_status_and_kind(api_client, django_capture_on_commit_callbacks):
    client = api_client(scopes=UPLOAD)
    with django_capture_on_commit_callbacks(execute=True):
        _upload(client, GOOD.encode())
    assert len(client.get("/api/v1/feeds/batches/", {"source__code": "core"}).json()["results"]) == 1
    assert client.get("/api/v1/feeds/batches/", {"source__code": "card"}).json()["results"] == []
    assert client.get("/api/v1/feeds/batches/", {"status": "failed"}).json()["results"] == []
    assert len(client.get("/api/v1/feeds/batches/", {"kind": "customers"}).json()["results"]) == 1


def test_refresh_jobs_are_readable_with_jobs_read(api_client):
    segment = segment_save(segment=Segment(name="All", slug="all", rule={"field": "gender", "op": "is_not_null"}))
    job = segment_refresh(segment=segment)
    client = api_client(scopes=["jobs:read"])
    body = client.get(f"/api/v1/jobs/refresh/{job.pk}/").json()
    assert (body["segment"], body["status"], body["member_count"]) == ("all", "succeeded", 0)
    assert [j["id"] for j in client.get("/api/v1/jobs/refresh/", {"segment__slug": "all"}).json()["results"]] == \
        [job.pk]
    assert api_client(scopes=["segments:read"]).get(f"/api/v1/jobs/refresh/{job.pk}/").status_code == 403
    assert RefreshJob.objects.count() == 1
