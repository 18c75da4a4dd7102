from django.apps import AppConfig
from django.core import checks


class ApiConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "api"
    verbose_name = "API"

    def ready(self):
        from . import schema  # noqa: F401  registers the OpenAPI extensions

        checks.register(check_api_rate)
        checks.register(check_admin_middleware, checks.Tags.security, deploy=True)


def check_api_rate(app_configs=None, **kwargs):
    """A bad CDP_API_RATE would fail every API request: refuse to start instead."""
    from django.conf import settings

    from .rates import parse_rate

    try:
        parse_rate(settings.CDP_API_RATE)
    except ValueError as exc:
        return [checks.Error(f"CDP_API_RATE: {exc}", id="api.E001")]
    return []


def check_admin_middleware(app_configs=None, **kwargs):
    """`check --deploy`: the CSRF and framing protection of the admin, in the subclasses that step aside for API
    calls with a key (Django's own checks, security.W002 and W003, look for its dotted paths and are silenced)."""
    from django.conf import settings

    required = {"api.middleware.CsrfViewMiddleware": "cross-site request forgery",
                "api.middleware.XFrameOptionsMiddleware": "clickjacking (X-Frame-Options)"}
    return [checks.Warning(f"{path} is not in MIDDLEWARE: no protection against {what}", id="api.W001")
            for path, what in required.items() if path not in settings.MIDDLEWARE]
