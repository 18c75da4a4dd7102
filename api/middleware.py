from .audit import request_id_of


class RequestIdMiddleware:
    """Echoes the request id (the caller's X-Request-ID, or a new one) on every response: audit records carry it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            response["X-Request-ID"] = request_id_of(request)
        return response
