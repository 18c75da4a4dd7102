"""/healthz says the process is up; /readyz says whether it can serve: database, broker and migrations, each named
when it fails. Both answer without authentication and hold no personal data."""
import pytest
from django.db import OperationalError, connection
from django.db.migrations.recorder import MigrationRecorder

from cdp import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_migration_check(monkeypatch):
    monkeypatch.setattr(health, "_migrated", False)


def test_both_answer_200_without_authentication(client):
    assert (client.get("/healthz").status_code, client.get("/healthz").json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "migrations": "ok"}}


def test_readiness_fails_when_the_database_is_down(client, monkeypatch):
    def refuse():
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(connection, "ensure_connection", refuse)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {
        "database": "failed: OperationalError", "broker": "ok", "migrations": "not checked: no database"}}
    assert client.get("/healthz").status_code == 200  # the process itself is up


def test_readiness_fails_while_a_migration_is_unapplied(client):
    MigrationRecorder.Migration.objects.filter(app="segments").order_by("-id").first().delete()

    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["migrations"].startswith("failed: unapplied segments.")


def test_readiness_fails_when_the_broker_does_not_answer(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("failed: ")
    assert response.json()["checks"]["database"] == "ok"


def test_probes_by_address_over_plain_http_are_answered(client, settings):
    settings.ALLOWED_HOSTS = ["cdp.bank.example"]
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz", HTTP_HOST="10.0.3.7:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.0.3.7:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.0.3.7:8000").status_code == 200
    assert client.get("/admin/", HTTP_HOST="10.0.3.7:8000").status_code == 400  # everything else is checked
