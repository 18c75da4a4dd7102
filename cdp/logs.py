"""Every log line names what it belongs to: the request id of the HTTP request (api.audit.request_id_of, the
caller's X-Request-ID or a new one; the same id the API echoes and the audit records carry) or the id of the
Celery task. LOGGING in settings puts them in each line, as JSON fields or in plain text."""
import contextvars
import logging

from celery import current_task

# Set for the time a request is served by cdp.middleware.LogRequestIdMiddleware.
request_id = contextvars.ContextVar("cdp_request_id", default="")


class ContextFilter(logging.Filter):
    """Adds `request_id` and `task_id` to every record ("" where there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a request's 4xx and 5xx once the middleware has finished; the record holds the request.
        record.request_id = request_id.get() or getattr(getattr(record, "request", None), "cdp_request_id", "")
        task = current_task
        record.task_id = (task.request.id or "") if task else ""
        return True
