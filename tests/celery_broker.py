"""The Celery app on the test broker (CELERY_TEST_BROKER_URL, set by bin/test), and a real `celery worker` process
on the test database: what the job tests share."""
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
from django.conf import settings

from cdp.celery import app
from tests.profiles.loads import PROJECT_DIR, database_url

BROKER = os.environ.get("CELERY_TEST_BROKER_URL")


def forget_broker_connections():
    # Celery caches its connection and producer pools on first use, with the broker URL of that moment.
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def on_test_broker():
    """Tasks sent meanwhile go to the test broker (not run in-process), which starts empty; skips without one."""
    if not BROKER:
        pytest.skip("CELERY_TEST_BROKER_URL is not set (bin/test sets it)")
    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "result_backend")}
    app.conf.update(broker_url=BROKER, task_always_eager=False, result_backend=None)
    forget_broker_connections()
    app.control.purge()  # tasks a previous, interrupted run left on the test broker
    try:
        yield
    finally:
        app.conf.update(saved)
        forget_broker_connections()


@contextmanager
def worker_process(*, queue: str, pool: str = "prefork", **env):
    """`celery worker` for one queue with one process, in a subprocess on the test database; its output (stdout and
    stderr) is the Popen's stdout, as text. Stopped after."""
    environment = {k: v for k, v in os.environ.items() if k != "CELERY_RESULT_BACKEND"}
    environment.update(DATABASE_URL=database_url(), CELERY_BROKER_URL=BROKER, CDP_PII_KEY=settings.CDP_PII_KEY,
                       PYTHONUNBUFFERED="1", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cdp", "worker", "-Q", queue, "-c", "1", "-P", pool,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
        cwd=PROJECT_DIR, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
