from django.apps import AppConfig
from django.core import checks


class ApiConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "api"
    verbose_name = "API"

    def ready(self):
        from . import schema  # noqa: F401  registers the OpenAPI extensions

        checks.register(check_api_rate)


def check_api_rate(app_configs=None, **kwargs):
    """A bad CDP_API_RATE would fail every API request: refuse to start instead."""
    from django.conf import settings

    from .rates import parse_rate

    try:
        parse_rate(settings.CDP_API_RATE)
    except ValueError as exc:
        return [checks.Error(f"CDP_API_RATE: {exc}", id="api.E001")]
    return []
