"""The platform's own Prometheus metrics, and the protected endpoint that serves them with django-prometheus's.

Several processes (gunicorn's workers, Celery's pool) count into one set of figures through prometheus_client's
multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set, every process writes its figures to files there and the
endpoint adds them up. Without it (the embedded default, tasks in-process) the figures are the serving process's.
Queue depth is read from the broker at scrape time. Database figures are django-prometheus's, counted by an execute
wrapper on every connection rather than its database backends, so the engine in DATABASES stays Django's own.
README, "Operating it", lists the metrics.
"""
import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django_prometheus.db import connections_total, errors_total, execute_many_total, execute_total, \
    query_duration_seconds
from django_prometheus.db.common import ExceptionCounterByType
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cdp.celery import TASK_QUEUES, app

log = logging.getLogger(__name__)

JOB_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, float("inf"))

FEED_LOADS = Counter("cdp_feed_loads", "Loads run by a task, by kind and final status", ["kind", "status"])
FEED_LOAD_SECONDS = Histogram("cdp_feed_load_duration_seconds", "Duration of finished feed batches",
                              ["kind", "status"], buckets=JOB_SECONDS_BUCKETS)
FEED_ROWS = Counter("cdp_feed_rows", "Rows of finished feed batches by outcome (created, updated, unchanged: loaded; "
                    "rejected)", ["kind", "outcome"])
RESOLUTION_SECONDS = Histogram("cdp_identity_resolution_duration_seconds", "Duration of identity resolutions run by "
                               "a task", buckets=JOB_SECONDS_BUCKETS)
REFRESH_JOBS = Counter("cdp_refresh_jobs", "Refresh jobs of segments and rule tags, by final status",
                       ["target", "status"])
REFRESH_SECONDS = Histogram("cdp_refresh_duration_seconds", "Duration of refresh jobs of segments and rule tags",
                            ["target", "status"], buckets=JOB_SECONDS_BUCKETS)
API_REQUESTS = Counter("cdp_api_requests", "API requests by key prefix ('-': no key) and response status",
                       ["key", "status"])


def feed_load_failed(kind: str) -> None:
    """Count a load that raised (its batch, if it got one, is failed; the task fails or retries)."""
    FEED_LOADS.labels(kind, "failed").inc()


def feed_batch_observe(batch) -> None:
    """Count a finished feed batch (a profiles.models.FeedBatch)."""
    FEED_LOADS.labels(batch.kind, batch.status).inc()
    if batch.finished_at and batch.started_at:
        FEED_LOAD_SECONDS.labels(batch.kind, batch.status).observe(
            (batch.finished_at - batch.started_at).total_seconds())
    for outcome in ("created", "updated", "unchanged", "rejected"):
        FEED_ROWS.labels(batch.kind, outcome).inc(getattr(batch, f"rows_{outcome}"))


def refresh_job_observe(job) -> None:
    """Count a finished refresh job (segments.models.RefreshJob)."""
    target = "segment" if job.segment_id else "tag"
    REFRESH_JOBS.labels(target, job.status).inc()
    if job.duration_seconds is not None:
        REFRESH_SECONDS.labels(target, job.status).observe(job.duration_seconds)


def _observe_query(execute, sql, params, many, context):
    connection = context["connection"]
    labels = {"alias": connection.alias, "vendor": connection.vendor}
    statements = len(params) if many else 1
    execute_total.labels(**labels).inc(statements)
    if many:
        execute_many_total.labels(**labels).inc(statements)
    with query_duration_seconds.labels(**labels).time(), ExceptionCounterByType(errors_total, extra_labels=labels):
        return execute(sql, params, many, context)


@receiver(connection_created)
def _instrument_connection(sender, connection, **kwargs):
    connections_total.labels(connection.alias, connection.vendor).inc()
    if _observe_query not in connection.execute_wrappers:  # the same wrapper object reconnects
        connection.execute_wrappers.append(_observe_query)


class QueueDepthCollector:
    """cdp_queue_depth{queue}: messages waiting in each Celery queue, asked of the broker at scrape time (none when
    tasks run in-process, or when the broker does not answer: readiness reports that)."""

    def collect(self):
        if app.conf.task_always_eager:
            return
        gauge = GaugeMetricFamily("cdp_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        try:
            with app.connection_for_read() as connection:
                for queue in sorted(set(TASK_QUEUES.values())):
                    gauge.add_metric([queue], _depth(connection, queue))
        except Exception as exc:  # any broker failure: the scrape goes on without this figure
            log.warning("queue depth unavailable: %r", exc)
            return
        yield gauge

    def describe(self):
        return []  # registering must not ask the broker


def _depth(connection, queue: str) -> int:
    with connection.channel() as channel:  # a failed declaration closes its channel (AMQP)
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        except connection.channel_errors:
            return 0  # not declared yet: no worker or producer has used it


QUEUE_DEPTH = QueueDepthCollector()
REGISTRY.register(QUEUE_DEPTH)


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QUEUE_DEPTH)
    return registry


def _may_scrape(request) -> bool:
    token = settings.CDP_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network) for network in settings.CDP_METRICS_ALLOWED_NETWORKS)


def metrics_view(request):
    """GET /metrics: the Prometheus text format, for a caller with the token or from an allowed network."""
    if not _may_scrape(request):
        return JsonResponse({"detail": "metrics need the metrics token or an allowed network"}, status=403)
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
