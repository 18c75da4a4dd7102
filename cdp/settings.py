"""Settings for the CDP, all read from the environment.

DATABASE_URL      default: SQLite file var/cdp.sqlite3 in the project folder
CELERY_BROKER_URL unset: Celery tasks run in-process (eager)
SECRET_KEY        required when DEBUG is off
CDP_PII_KEY       key for keyed hashes and tokens of identifiers; required when DEBUG is off
CDP_PII_KEY_PREVIOUS  the keys CDP_PII_KEY replaced, oldest first, separated by spaces (README, "Rotating the key")
Production (HTTPS, HSTS, cookies, hosts, static files): README, "Deploying".
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


DEBUG = env_bool("DEBUG", True)

_DEV_SECRET_KEY = "dev-only-secret-key-not-for-production"
_DEV_PII_KEY = "dev-only-pii-key-not-for-production"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET_KEY)
CDP_PII_KEY = os.environ.get("CDP_PII_KEY", _DEV_PII_KEY)
CDP_PII_KEY_PREVIOUS = tuple(os.environ.get("CDP_PII_KEY_PREVIOUS", "").split())
if not DEBUG:
    if SECRET_KEY == _DEV_SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    if CDP_PII_KEY == _DEV_PII_KEY:
        raise ImproperlyConfigured("CDP_PII_KEY must be set when DEBUG is off")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Deployment: hosts, HTTPS, cookies (README, "Deploying"). With DEBUG off every protection is on by default;
# each can be turned off by its own variable (e.g. SECURE_SSL_REDIRECT=false to try the image without TLS).
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")  # e.g. https://cdp.bank.internal, if a proxy rewrites Host
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapers inside the cluster speak plain HTTP to the container.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Behind a proxy that terminates TLS and says so in X-Forwarded-Proto (and strips it from clients' requests).
if env_bool("CDP_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Django's checks look for its own CSRF and framing middleware by dotted path; api.middleware's subclasses stand in
# for them, and api.apps.check_admin_middleware checks those instead.
SILENCED_SYSTEM_CHECKS = ["security.W002", "security.W003"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",  # runserver (bin/demo) serves static files as gunicorn does: through WhiteNoise
    "django.contrib.staticfiles",
    "profiles",
    "tags",
    "segments",
    "privacy",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
]

# Django's own and WhiteNoise, except that the admin's (sessions, CSRF, auth, messages, framing) step aside for API
# calls made with a key (api.middleware.carries_api_key).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files, before anything that reads sessions or the db
    "api.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "api.middleware.CsrfViewMiddleware",
    "api.middleware.AuthenticationMiddleware",
    "api.middleware.MessageMiddleware",
    "api.middleware.XFrameOptionsMiddleware",
    "api.middleware.RequestIdMiddleware",
    "api.middleware.ApiInputGuardMiddleware",
]

ROOT_URLCONF = "cdp.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "cdp.wsgi.application"

VAR_DIR = Path(os.environ.get("CDP_VAR_DIR", BASE_DIR / "var"))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'cdp.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the admin read while a load writes.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
    DATABASES["default"].setdefault("TEST", {})["NAME"] = ":memory:"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

# Static files (the admin's, the segment builder's, the API docs' bundled assets), served by WhiteNoise from
# STATIC_ROOT after `manage.py collectstatic` (the image runs it, and bin/demo with DEBUG off); with DEBUG on, from
# the apps directly.
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
# Compressed copies (gzip, Brotli if installed) beside each file. Not the manifest storage: its hashed names need
# collectstatic before any page renders, and the tests render the admin without it.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Served at the site's root: /favicon.ico.
WHITENOISE_ROOT = BASE_DIR / "cdp" / "root"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery: with no broker configured, tasks run in-process so the embedded default needs nothing else.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
# A task whose worker process dies (SIGKILL, out of memory) goes back on its queue and runs again; every task is
# idempotent (README, "Queues, time limits and faults").
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Per queue (cdp/celery.py routes each task to one): (soft, hard) limits in seconds. At the soft limit the task gets
# an exception and records its job as failed; at the hard limit its worker process is killed.
CDP_TASK_TIME_LIMITS = {
    queue: (hard - min(300, hard // 10), hard) for queue, hard in (
        ("loads", env_int("CDP_TIME_LIMIT_LOADS", 4 * 3600)),
        ("resolution", env_int("CDP_TIME_LIMIT_RESOLUTION", 4 * 3600)),
        ("refreshes", env_int("CDP_TIME_LIMIT_REFRESHES", 3600)),
        ("default", env_int("CDP_TIME_LIMIT_DEFAULT", 2 * 3600)),
    )
}
# Redis hands an unacknowledged task to another worker after this many seconds: longer than any hard limit (and
# the longest retry countdown), so a task that is still running is never delivered twice.
_LONGEST_TASK = max(hard for _, hard in CDP_TASK_TIME_LIMITS.values())
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", _LONGEST_TASK + 3600)}
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= _LONGEST_TASK + 600:  # 600: the longest retry countdown
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must exceed the longest task time limit by over 600 s")
# Task logs go through LOGGING below (JSON with the task id), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Identity resolution guard rails (see README, "Identity resolution").
CDP_MAX_SHARED_IDENTIFIER = env_int("CDP_MAX_SHARED_IDENTIFIER", 5)
CDP_MAX_CLUSTER_SIZE = env_int("CDP_MAX_CLUSTER_SIZE", 20)
CDP_MATCH_PROBABILITY_LINK = float(os.environ.get("CDP_MATCH_PROBABILITY_LINK", "0.99"))
CDP_MATCH_PROBABILITY_REVIEW = float(os.environ.get("CDP_MATCH_PROBABILITY_REVIEW", "0.80"))
# work_mem for the transactions of loads and resolutions (big sorts and hash joins).
CDP_BULK_WORK_MEM = os.environ.get("CDP_BULK_WORK_MEM", "256MB")
CDP_FEED_UPLOAD_DIR = Path(os.environ.get("CDP_FEED_UPLOAD_DIR", VAR_DIR / "feeds"))
# Days an uploaded feed file (clear card and id numbers) is kept after its load; 0: deleted once loaded successfully.
CDP_FEED_UPLOAD_KEEP_DAYS = env_int("CDP_FEED_UPLOAD_KEEP_DAYS", 0)
# Limits of a feed file (README, "Loading feeds"): its size once decompressed, the longest line, and how many of a
# batch's rejected rows are stored for review (every one is counted).
CDP_FEED_MAX_BYTES = env_int("CDP_FEED_MAX_BYTES", 8 * 1024 ** 3)
CDP_FEED_MAX_LINE_CHARS = env_int("CDP_FEED_MAX_LINE_CHARS", 1024 ** 2)
CDP_FEED_MAX_STORED_REJECTS = env_int("CDP_FEED_MAX_STORED_REJECTS", 10_000)

# Cache: the API's per-key rate counters. Set CACHE_URL=redis://... when several server processes must share them.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
          if CACHE_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# REST API (README, "API"). CDP_API_RATE: requests per key, e.g. "2000/s", "100000/min".
CDP_API_RATE = os.environ.get("CDP_API_RATE", "2000/s")
# Seconds a verified API key is kept in the cache (0: read on every request); see api.keys.api_key_forget.
CDP_API_KEY_CACHE_SECONDS = env_int("CDP_API_KEY_CACHE_SECONDS", 5)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication",
                                       "api.authentication.StaffSessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.IdCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.negotiation.AnyAcceptedFirst",
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser", "api.parsers.FormParser", "api.parsers.MultiPartParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Retail-bank CDP API",
    "DESCRIPTION": "Profiles, tags, segments, feeds and jobs. Authenticate with `Authorization: Bearer <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["api.permissions.HasScope"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI's validator badge would send the schema's URL to an outside service.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Operating it (README, "Operating it"): logs, metrics, health -------------------------------------------------
# LOG_FORMAT: json (one object a line: level, logger, message, request_id, task_id, time) or text.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "cdp.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "pythonjsonlogger.json.JsonFormatter", "timestamp": "time",  # ISO 8601, UTC
                 "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s",
                 "rename_fields": {"levelname": "level", "name": "logger"}},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [request=%(request_id)s task=%(task_id)s] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"], "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Django's own handlers give way to the one above, so each line is written once, in one format.
    "loggers": {name: {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}
                for name in ("django", "django.server")},
}

# Retention (README, "Retention"): days each kind of record is kept; 0 keeps it forever. Enforced nightly.
CDP_RETENTION_AUDIT_DAYS = env_int("CDP_RETENTION_AUDIT_DAYS", 1095)
CDP_RETENTION_SEGMENT_HISTORY_DAYS = env_int("CDP_RETENTION_SEGMENT_HISTORY_DAYS", 730)
CDP_RETENTION_REFRESH_JOB_DAYS = env_int("CDP_RETENTION_REFRESH_JOB_DAYS", 90)
CDP_RETENTION_REJECTED_ROW_DAYS = env_int("CDP_RETENTION_REJECTED_ROW_DAYS", 90)
CDP_RETENTION_FEED_BATCH_DAYS = env_int("CDP_RETENTION_FEED_BATCH_DAYS", 365)
# Rows deleted per transaction: a large backlog goes in many short transactions.
CDP_RETENTION_CHUNK_ROWS = env_int("CDP_RETENTION_CHUNK_ROWS", 10_000)
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "cdp.middleware.LogRequestIdMiddleware",
    "cdp.middleware.OperationsMiddleware",
    *MIDDLEWARE,
    "cdp.middleware.ApiRequestMetricsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# /metrics answers a request with `Authorization: Bearer <CDP_METRICS_TOKEN>` (if set) or from these networks.
CDP_METRICS_TOKEN = os.environ.get("CDP_METRICS_TOKEN", "")
CDP_METRICS_ALLOWED_NETWORKS = [n.strip() for n in os.environ.get("CDP_METRICS_ALLOWED_NETWORKS",
                                                                  "127.0.0.1/32,::1/128").split(",") if n.strip()]
