"""Log lines are JSON objects (LOG_FORMAT=json) that name the request they were written for (its X-Request-ID) and
the Celery task."""
import datetime as dt
import io
import json
import logging.config

import pytest
from rest_framework.test import APIClient

from api.keys import api_key_create
from profiles.tasks import load_feed_task


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
