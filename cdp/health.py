"""Liveness and readiness probes: no authentication, no personal data, only which dependency failed."""
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from kombu import Connection

BROKER_TIMEOUT_SECONDS = 2
_migrated = False  # once every migration is applied, a running process does not check again


def healthz(request):
    """The process is up and serves requests; asks nothing of the database or the broker."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """200 when the database answers, the broker (if tasks do not run in-process) answers and every migration is
    applied; 503 naming each check that failed."""
    checks = {"database": _database(), "broker": _broker()}
    checks["migrations"] = _migrations() if checks["database"] == "ok" else "not checked: no database"
    ready = all(outcome == "ok" for outcome in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"failed: {type(exc).__name__}"  # the class only: a message may name hosts and users
    return "ok"


def _broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "ok"  # no broker: tasks run in-process
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS) as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # every transport raises its own errors
        return f"failed: {type(exc).__name__}"
    return "ok"


def _migrations() -> str:
    global _migrated
    if _migrated:
        return "ok"
    try:
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return f"failed: {type(exc).__name__}"
    if unapplied:
        return "failed: unapplied " + ", ".join(f"{m.app_label}.{m.name}" for m, _ in unapplied)
    _migrated = True
    return "ok"
