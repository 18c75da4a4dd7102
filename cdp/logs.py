"""Every log line names what it belongs to: the request id of the HTTP request (api.audit.request_id_of, the
caller's X-Request-ID or a new one; the same id the API echoes and the audit records carry) and the id of the
Celery task, which also carries the id of the request that sent it. LOGGING in settings puts them in each line, as
JSON fields or in plain text."""
import contextvars
import logging

from celery import current_task
from celery.signals import before_task_publish

# Set for the time a request is served by cdp.middleware.LogRequestIdMiddleware.
request_id = contextvars.ContextVar("cdp_request_id", default="")


class ContextFilter(logging.Filter):
    """Adds `request_id` and `task_id` to every record ("" where there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        record.task_id = (task.request.id or "") if task else ""
        record.request_id = (
            request_id.get()
            # Django logs a request's 4xx and 5xx after the middleware has finished; the record holds the request.
            or getattr(getattr(record, "request", None), "cdp_request_id", "")
            or (getattr(task.request, REQUEST_ID_HEADER, None) or "" if task else "")
        )
        return True


REQUEST_ID_HEADER = "cdp_request_id"


@before_task_publish.connect
def _send_request_id(headers=None, **kwargs):
    """A task sent while a request is served carries its id, so the worker's lines name the request that asked."""
    rid = request_id.get()
    if rid and headers is not None:
        headers[REQUEST_ID_HEADER] = rid
