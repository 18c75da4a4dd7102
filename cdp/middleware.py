"""Middleware of the operating side: the request id in every log line, API requests counted for the metrics."""
from api.audit import request_id_of

from .health import healthz, readyz
from .logs import request_id
from .metrics import API_REQUESTS, metrics_view


class OperationsMiddleware:
    """Answers /healthz, /readyz and /metrics before host validation and the HTTPS redirect: probes and scrapers
    call a process by its address, over plain HTTP inside the cluster."""

    views = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)


class LogRequestIdMiddleware:
    """First in MIDDLEWARE: every line logged while a request is served carries its id."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = request_id.set(request_id_of(request))
        try:
            return self.get_response(request)
        finally:
            request_id.reset(token)


class ApiRequestMetricsMiddleware:
    """Counts every /api/ request by the prefix of the key that made it (never its secret) and the status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path_info.startswith("/api/"):
            # DRF sets the authenticated key on the Django request too; its prefix is public.
            prefix = getattr(getattr(request, "auth", None), "prefix", None) or "-"
            API_REQUESTS.labels(prefix, str(response.status_code)).inc()
        return response
