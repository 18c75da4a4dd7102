"""Log lines are JSON objects (LOG_FORMAT=json) that name the request they were written for (its X-Request-ID) and
the Celery task, whose lines also name the request that sent it."""
import datetime as dt
import io
import json
import logging.config
import os
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from api.keys import api_key_create
from cdp.celery import app
from cdp.logs import request_id
from profiles.tasks import identity_resolve_task, load_feed_task
from tests.profiles.loads import PROJECT_DIR, database_url


@pytest.fixture
def json_log_lines(settings):
    """The lines the configured logging writes, as JSON is chosen: a function returning them parsed."""
    stream = io.StringIO()
    config = {**settings.LOGGING, "handlers": {"console": {**settings.LOGGING["handlers"]["console"],
                                                           "formatter": "json", "stream": stream}}}
    logging.config.dictConfig(config)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.config.dictConfig(settings.LOGGING)


@pytest.mark.django_db
def test_a_request_s_log_lines_carry_its_request_id(json_log_lines):
    _, secret = api_key_create(name="reader", scopes=["profiles:read"], expires_in_days=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    response = client.get("/api/v1/no-such-thing/", HTTP_X_REQUEST_ID="req-4711")

    assert response.status_code == 404
    [line] = [line for line in json_log_lines() if line["logger"] == "django.request"]
    assert (line["level"], line["request_id"], line["task_id"]) == ("WARNING", "req-4711", "")
    assert line["message"] == "Not Found: /api/v1/no-such-thing/"
    assert dt.datetime.fromisoformat(line["time"]).utcoffset() == dt.timedelta(0)


@pytest.mark.django_db
def test_a_task_s_log_lines_carry_its_task_id(json_log_lines, write_feed):
    feed = write_feed([{"customer_key": "L1", "full_name": "Ann Lee", "phone": "13912875634"}])

    load_feed_task.apply(args=("core", str(feed)), task_id="task-0815")

    [line] = [line for line in json_log_lines() if line["logger"] == "profiles.resolution"]
    assert (line["level"], line["task_id"], line["request_id"]) == ("INFO", "task-0815", "")
    assert line["message"].startswith("identity resolution: ")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_s_lines_carry_the_id_of_the_request_that_sent_the_task():
    broker = os.environ.get("CELERY_TEST_BROKER_URL")
    if not broker:
        pytest.skip("CELERY_TEST_BROKER_URL is not set (bin/test sets it)")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "result_backend")}
    app.conf.update(broker_url=broker, task_always_eager=False, result_backend=None)
    app._pool, app.amqp._producer_pool = None, None  # Celery's pools keep the broker URL of their first use
    # A real `celery worker` process with the project's logging (text), as deployed.
    env = {k: v for k, v in os.environ.items() if k != "CELERY_RESULT_BACKEND"}
    env.update(DATABASE_URL=database_url(), CELERY_BROKER_URL=broker, CDP_PII_KEY=settings.CDP_PII_KEY,
               LOG_FORMAT="text", PYTHONUNBUFFERED="1")
    lines: list[str] = []
    try:
        app.control.purge()
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cdp", "worker", "-Q", "resolution", "-c", "1", "-P", "solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=lambda: lines.extend(worker.stdout), daemon=True)
        reader.start()
        try:
            token = request_id.set("req-0042")  # as while a request is served
            try:
                sent = identity_resolve_task.delay()
            finally:
                request_id.reset(token)
            finished = f"[request=req-0042 task={sent.id}] Task profiles.tasks.identity_resolve_task[{sent.id}] " \
                       "succeeded"
            deadline = time.monotonic() + 90
            while not any(finished in line for line in list(lines)):
                assert worker.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    finally:
        app.conf.update(saved)
        app._pool, app.amqp._producer_pool = None, None
