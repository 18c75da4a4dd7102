"""/metrics: django-prometheus's HTTP and database figures and the platform's own (loads, rows, resolution,
refreshes, API requests by key), for a scraper with the token or from an allowed network only."""
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from api.keys import api_key_create
from cdp.celery import app
from profiles.tasks import identity_resolve_task, load_feed_task
from segments import sql
from segments.models import Segment
from segments.services import segment_refresh, segment_save

pytestmark = pytest.mark.django_db

FEED = ("customer_key,full_name,gender,birth_date,phone\n"
        "M1,张伟,M,1980-01-01,13912875634\n"
        "M2,李娜,F,not-a-date,13912875635\n"
        "M3,王芳,F,1990-05-06,13912875636\n")


def scrape(client, **headers) -> dict:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def grew(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_a_load_shows_in_the_job_metrics(client, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.CDP_FEED_UPLOAD_DIR = tmp_path
    segment_save(segment=Segment(name="Women", slug="women", rule={"field": "gender", "op": "eq", "value": "F"}))
    api_key, secret = api_key_create(name="uploader", scopes=["feeds:write"], expires_in_days=None)
    uploader = APIClient()
    uploader.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    before = scrape(client)

    with django_capture_on_commit_callbacks(execute=True):
        response = uploader.post("/api/v1/feeds/batches/upload/",
                                 {"source": "core", "file": SimpleUploadedFile("core.csv", FEED.encode())},
                                 format="multipart")
    assert response.status_code == 202
    after = scrape(client)

    assert grew(before, after, "cdp_feed_loads_total", kind="customers", status="succeeded") == 1
    assert grew(before, after, "cdp_feed_load_duration_seconds_count", kind="customers", status="succeeded") == 1
    assert grew(before, after, "cdp_feed_rows_total", kind="customers", outcome="created") == 2
    assert grew(before, after, "cdp_feed_rows_total", kind="customers", outcome="rejected") == 1
    assert grew(before, after, "cdp_identity_resolution_duration_seconds_count") == 1
    assert grew(before, after, "cdp_refresh_jobs_total", target="segment", status="succeeded") == 1
    assert grew(before, after, "cdp_refresh_duration_seconds_count", target="segment", status="succeeded") == 1
    assert grew(before, after, "cdp_api_requests_total", key=api_key.prefix, status="202") == 1
    assert any(name == "django_http_requests_total_by_method_total" for name, _ in after)
    assert grew(before, after, "django_db_execute_total", alias="default", vendor=connection.vendor) > 0
    assert secret not in str(after)  # the prefix names the key, never its secret


def test_a_failed_load_and_a_failed_refresh_are_counted(client, write_feed, monkeypatch):
    segment = segment_save(segment=Segment(name="Women", slug="women",
                                           rule={"field": "gender", "op": "eq", "value": "F"}))
    before = scrape(client)

    load_feed_task.apply(args=("core", str(write_feed([{"nickname": "x"}], header=["nickname"]))))
    monkeypatch.setattr(sql, "insert_members", lambda **_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        segment_refresh(segment=segment)
    after = scrape(client)

    assert grew(before, after, "cdp_feed_loads_total", kind="customers", status="failed") == 1
    assert grew(before, after, "cdp_refresh_jobs_total", target="segment", status="failed") == 1


def test_metrics_need_the_token_or_an_allowed_network(client, settings):
    settings.CDP_METRICS_TOKEN = "scrape-secret"
    settings.CDP_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    assert client.get("/metrics").status_code == 403  # from 127.0.0.1, without the token
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_queue_depth_counts_the_tasks_waiting_in_each_queue(client):
    broker = os.environ.get("CELERY_TEST_BROKER_URL")
    if not broker:
        pytest.skip("CELERY_TEST_BROKER_URL is not set (bin/test sets it)")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager")}
    app.conf.update(broker_url=broker, task_always_eager=False)
    app._pool, app.amqp._producer_pool = None, None  # Celery's pools keep the broker URL of their first use
    try:
        app.control.purge()
        identity_resolve_task.delay()
        identity_resolve_task.delay(full=True)  # no worker runs: both wait

        depth = {labels: value for (name, labels), value in scrape(client).items() if name == "cdp_queue_depth"}

        assert depth == {(("queue", "default"),): 0, (("queue", "loads"),): 0, (("queue", "refreshes"),): 0,
                         (("queue", "resolution"),): 2}
    finally:
        app.control.purge()
        app.conf.update(saved)
        app._pool, app.amqp._producer_pool = None, None
