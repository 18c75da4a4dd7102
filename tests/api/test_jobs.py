"""Job status under /api/v1/jobs/: load jobs (feed batches) at jobs/load/{id}/, refresh jobs at jobs/refresh/{id}/;
scope jobs:read."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from profiles.models import FeedBatch
from segments.models import Segment
from segments.services import segment_refresh, segment_save

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path / "feeds"


def test_a_load_job_reports_its_status_and_counts(api_client, django_capture_on_commit_callbacks):
    client = api_client(scopes=["feeds:write", "jobs:read"])
    feed = "customer_key,full_name,phone\nC1,张伟,13912875634\nC2,李娜,13912875635\n"
    with django_capture_on_commit_callbacks(execute=True):
        job_id = client.post("/api/v1/feeds/batches/upload/",
                             {"source": "core", "file": SimpleUploadedFile("core.csv", feed.encode())},
                             format="multipart").json()["job_id"]
    body = client.get(f"/api/v1/jobs/load/{job_id}/").json()
    assert (body["status"], body["rows_read"], body["rows_created"], body["rows_rejected"]) == ("succeeded", 2, 2, 0)
    assert [j["id"] for j in client.get("/api/v1/jobs/load/", {"status": "succeeded"}).json()["results"]] == [job_id]
    assert client.get("/api/v1/jobs/load/", {"status": "failed"}).json()["results"] == []


def test_job_status_needs_jobs_read_and_unknown_ids_are_404(api_client):
    segment = segment_save(segment=Segment(name="All", slug="all", rule={"field": "gender", "op": "is_not_null"}))
    job = segment_refresh(segment=segment)
    reader = api_client(scopes=["jobs:read"])
    assert reader.get(f"/api/v1/jobs/refresh/{job.pk}/").json()["status"] == "succeeded"
    assert reader.get(f"/api/v1/jobs/refresh/{job.pk + 1000}/").status_code == 404
    assert reader.get("/api/v1/jobs/load/999999/").json()["code"] == "not_found"
    assert reader.get("/api/v1/jobs/load/abc/").status_code == 404
    denied = api_client(scopes=["segments:read", "feeds:write"])
    assert denied.get(f"/api/v1/jobs/refresh/{job.pk}/").status_code == 403
    assert denied.get("/api/v1/jobs/load/").status_code == 403
    assert reader.post("/api/v1/jobs/load/", {}).status_code == 405
    assert not FeedBatch.objects.exists()
