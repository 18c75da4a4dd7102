"""Log lines are JSON objects (LOG_FORMAT=json) that name the request they were written for (its X-Request-ID) and
the Celery task, whose lines also name the request that sent it."""
import datetime as dt
import io
import json
import logging.config
import threading
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from api.keys import api_key_create
from cdp.logs import request_id
from profiles.tasks import identity_resolve_task, load_feed_task
from tests.celery_broker import on_test_broker, worker_process


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
    lines: list[str] = []
    # A real `celery worker` process with the project's logging (text), as deployed.
    with on_test_broker(), worker_process(queue="resolution", pool="solo", LOG_FORMAT="text") as worker:
        reader = threading.Thread(target=lambda: lines.extend(worker.stdout), daemon=True)
        reader.start()
        token = request_id.set("req-0042")  # as while a request is served
        try:
            sent = identity_resolve_task.delay()
        finally:
            request_id.reset(token)
        finished = f"[request=req-0042 task={sent.id}] Task profiles.tasks.identity_resolve_task[{sent.id}] succeeded"
        deadline = time.monotonic() + 90
        while not any(finished in line for line in list(lines)):
            assert worker.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
