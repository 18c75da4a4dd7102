"""Every error as JSON: {"code": ..., "message": ..., "details": ...}; domain errors are the client's 400s."""
import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import got_request_exception
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler, set_rollback

from profiles.feeds import FeedFormatError
from segments.rules import RuleError
from tags.services import TagError

from .keys import ApiKeyError

logger = logging.getLogger(__name__)
_SERVER_ERROR = {"code": "server_error", "message": "The server failed to answer; the error is logged."}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."

    def __init__(self, detail=None, code=None, details=None):
        super().__init__(detail, code)
        self.details = details


def not_found_view(request, *args, **kwargs):
    """Any /api/ URL that no route matches: the same JSON 404 as the endpoints give."""
    return JsonResponse({"code": "not_found", "message": "No such endpoint."}, status=404)


def server_error(request, *args, **kwargs):
    """handler500: an error outside the API views (e.g. in a middleware) on an /api/ URL answers in JSON too."""
    if request.path.startswith("/api/"):
        return JsonResponse(_SERVER_ERROR, status=500)
    return defaults.server_error(request, *args, **kwargs)


def _unexpected_error(exc, context) -> Response:
    """A bug answers 500 in JSON, with DEBUG on too (not Django's HTML page); the traceback goes to the log and to
    whoever listens for request exceptions, as Django's own handling would send it."""
    request = getattr(context.get("request"), "_request", None)
    logger.error("Internal Server Error: %s", getattr(request, "path", "?"), exc_info=exc)
    got_request_exception.send(sender=None, request=request)
    set_rollback()
    response = Response(_SERVER_ERROR, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    response._has_been_logged = True  # with its traceback, above; Django's own line would repeat it without
    return response


def request_too_large_body() -> dict:
    return {"code": "request_too_large", "message": "The request body is larger than the API accepts.",
            "details": {"max_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}}


def _refused_request(exc) -> Response | None:
    """Django's own refusals of a request (a body or form too large, a malformed one), as the API's JSON errors."""
    if isinstance(exc, RequestDataTooBig):
        return Response(request_too_large_body(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, TooManyFieldsSent):
        return Response({"code": "too_many_fields", "message": str(exc),
                         "details": {"max_fields": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}},
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, SuspiciousOperation):
        return Response({"code": "bad_request", "message": "The request was refused as malformed."},
                        status=status.HTTP_400_BAD_REQUEST)
    return None


def bad_request_view(request, exception=None):
    """Django's 400 (a SuspiciousOperation outside a view): JSON under /api/, the default page elsewhere."""
    if not request.path_info.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(request_too_large_body(), status=413)
    return JsonResponse({"code": "bad_request", "message": "The request was refused as malformed."}, status=400)


def permission_denied_view(request, exception=None):
    if not request.path_info.startswith("/api/"):
        return defaults.permission_denied(request, exception)
    return JsonResponse({"code": "permission_denied", "message": "You do not have permission to do this."},
                        status=403)


def _domain_error(exc) -> Response | None:
    if isinstance(exc, RuleError):
        body = {"code": "invalid_rule", "message": exc.message, "details": {"path": exc.path}}
    elif isinstance(exc, FeedFormatError):
        body = {"code": "invalid_feed", "message": str(exc)}
    elif isinstance(exc, TagError):
        body = {"code": "invalid_tag", "message": str(exc)}
    elif isinstance(exc, ApiKeyError):
        body = {"code": "invalid", "message": str(exc)}
    elif isinstance(exc, DjangoValidationError):
        details = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        body = {"code": "invalid", "message": "Invalid input.", "details": details}
    else:
        return None
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def _first_code(codes):
    while isinstance(codes, (list, dict)) and codes:
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return codes if isinstance(codes, str) else "error"


def exception_handler(exc, context):
    refused = _domain_error(exc) or _refused_request(exc)
    if refused is not None:
        return refused
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return _unexpected_error(exc, context)
    if not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": _first_code(exc.get_codes()) if not isinstance(exc.detail, dict) else "invalid",
                "message": "Invalid input.", "details": exc.detail}
    else:
        body = {"code": exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code,
                "message": str(exc.detail)}
        if getattr(exc, "details", None) is not None:
            body["details"] = exc.details
    response.data = body
    return response
