"""Settings for the job processing service.

Every value comes from the environment (or a `.env` file beside manage.py), read through the
small typed helpers below. `.env.example` documents each variable. Defaults are safe for a
developer's machine; with DEBUG off, insecure values stop the process at start-up.
"""

import ipaddress
import os
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

# Real environment variables win over the file, so CI and process managers stay in charge.
# ENV_FILE names another file; `make test` sets it to /dev/null so tests ignore a developer's.
load_dotenv(os.environ.get("ENV_FILE") or BASE_DIR / ".env", override=False)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses or CIDR networks: `10.0.0.5,192.168.0.0/16,::1`."""
    try:
        return [ipaddress.ip_network(item, strict=False) for item in env_list(name)]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must list IP addresses or networks: {error}") from None


def env_port_ranges(name: str, default: str) -> list[range]:
    """Comma-separated ports and inclusive ranges of ports: `80,443,1024-65535`."""
    ranges = []
    for item in env_list(name, default):
        first, dash, last = item.partition("-")
        try:
            ports = range(int(first), int(last if dash else first) + 1)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list ports or ranges such as 1024-65535, not {item!r}"
            ) from None
        if not ports or ports.start < 1 or ports.stop > 65536:
            raise ImproperlyConfigured(f"{name}: {item!r} is not a port or range within 1-65535")
        ranges.append(ports)
    return ranges


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "users",
    "jobs",
    "events",
    "webhooks",
    "schedules",
]

MIDDLEWARE = [
    # First, so that it counts and times every response, the other middlewares' included.
    "job_system.request_metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "job_system.middleware.RequestSizeLimitMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "job_system.middleware.ApiCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Request bodies: at most this many bytes (413 beyond), parsed in memory.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# JSON nested deeper than this is refused: in request bodies (400 parse_error, before they are
# decoded) and in job parameters (job_system.json_depth). Python's json module recurses once
# per level, so a few hundred levels would bring its recursion limit back within reach.
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 32)
if not 8 <= MAX_JSON_DEPTH <= 256:
    raise ImproperlyConfigured("MAX_JSON_DEPTH must be from 8 to 256")

# Cross-origin requests are refused unless origins are listed here.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/.*$"

ROOT_URLCONF = "job_system.urls"
WSGI_APPLICATION = "job_system.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Before the apps' folders: our own versions of third-party pages (the docs' ReDoc).
        "DIRS": [BASE_DIR / "job_system" / "templates"],
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

# Database: SQLite by default, anything dj-database-url understands through DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Every job transition reads back the row it wrote with UPDATE ... RETURNING, which came
    # in SQLite 3.35; one path on every database beats a slower second one kept in step.
    if sqlite3.sqlite_version_info < (3, 35):
        raise ImproperlyConfigured(
            f"SQLite {sqlite3.sqlite_version} is too old: jobs need 3.35 or newer "
            "(UPDATE ... RETURNING). Use a newer Python build or PostgreSQL (DATABASE_URL)."
        )
    # Web and worker processes write at once. WAL lets readers run beside the writer, and
    # IMMEDIATE makes a writer wait for the lock up front instead of failing half-way with
    # "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("SQLITE_TIMEOUT_SECONDS", 20),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that worker processes started by the tests see the same data;
    # one per test run, so that runs side by side do not collide.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"jobsystem-test-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"]["TEST"] = {"NAME": env_str("DATABASE_TEST_NAME") or None}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "users.CustomUser"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Without collectstatic (tests, a quick runserver) WhiteNoise serves straight from the apps.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# Redis: the Celery broker and the shared cache (throttle counters, cooldowns).
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "jobsys"),
    }
}

# Email: in development each message is logged whole, as one record, by the process that
# sends it (the worker; job_system.mail); set EMAIL_BACKEND to the SMTP backend in production.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "job_system.mail.ConsoleEmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / ".run" / "emails"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Job System <no-reply@localhost>")

# One-time email codes: 6-digit codes confirm an address; long codes (16 characters) reset a
# password or unlock logging in, and one of them stays open for this long.
OTP_TTL = timedelta(seconds=env_int("OTP_TTL_SECONDS", 600))
LONG_CODE_TTL = timedelta(seconds=env_int("LONG_CODE_TTL_SECONDS", 1800))
OTP_MAX_ATTEMPTS = env_int("OTP_MAX_ATTEMPTS", 5)
OTP_RESEND_COOLDOWN = timedelta(seconds=env_int("OTP_RESEND_COOLDOWN_SECONDS", 60))
# Codes emailed to one address for one purpose, at most, in any hour and any day.
OTP_MAX_SENDS_PER_HOUR = env_int("OTP_MAX_SENDS_PER_HOUR", 5)
OTP_MAX_SENDS_PER_DAY = env_int("OTP_MAX_SENDS_PER_DAY", 20)
# Wrong passwords in a row after which an account's password logs in only with the unlock code
# emailed to its owner (NIST SP 800-63B: at most 100).
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 100)
if not 1 <= LOGIN_MAX_FAILURES <= 100:
    raise ImproperlyConfigured("LOGIN_MAX_FAILURES must be from 1 to 100")
# Codes are stored as HMAC-SHA256 digests keyed with this; rotating it invalidates open codes.
OTP_HMAC_KEY = env_str("OTP_HMAC_KEY", SECRET_KEY)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["users.permissions.IsVerified"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "jobs.filters.OrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["job_system.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "job_system.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "job_system.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login": env_str("THROTTLE_LOGIN", "20/min"),
        "register": env_str("THROTTLE_REGISTER", "10/min"),
        "otp": env_str("THROTTLE_OTP", "20/min"),
        # Per client IP, across every endpoint that emails a code (users.throttles).
        "otp_ip_hour": env_str("THROTTLE_OTP_IP_HOUR", "10/hour"),
        "otp_ip_day": env_str("THROTTLE_OTP_IP_DAY", "50/day"),
        "job_create": env_str("THROTTLE_JOB_CREATE", "6000/min"),
        # Per staff user, through /flower/ (job_system.flower_proxy); Flower's dashboard asks
        # about once a second while it is open.
        "flower": env_str("THROTTLE_FLOWER", "600/min"),
    },
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env_str("JWT_SIGNING_KEY", SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Tokens carry a digest of the password hash, so changing the password revokes them all,
    # access tokens included.
    "CHECK_REVOKE_TOKEN": True,
    "REVOKE_TOKEN_CLAIM": "hash_password",
}
# Each process keeps the users it authenticated for this long instead of reading them on every
# request, so a deactivation or password change made by another process stops access tokens
# up to this late (users.authentication). 0 reads the user on every request.
AUTH_USER_CACHE_SECONDS = env_float("AUTH_USER_CACHE_SECONDS", 5.0)

SPECTACULAR_SETTINGS = {
    "TITLE": "Job Processing System API",
    "DESCRIPTION": (
        "Register, confirm your email with the 6-digit code, log in for a bearer token, "
        "then submit jobs and follow them until their result is ready."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "GET_LIB_DOC_EXCLUDES": "job_system.openapi.docstrings_not_for_clients",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
    # The system's fonts: the docs make no request to another host (see the ReDoc template in
    # job_system/templates, which drops drf-spectacular's Google Fonts links).
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, sans-serif",
                "headings": {"fontFamily": "system-ui, sans-serif"},
                "code": {"fontFamily": "ui-monospace, monospace"},
            }
        }
    },
    # The sections of Swagger UI and ReDoc, in the order a newcomer uses them: both UIs list
    # the declared tags first, in this order.
    "TAGS": [
        {"name": "accounts", "description": "Register, confirm the address, log in, passwords."},
        {"name": "jobs", "description": "Submit jobs and follow them. Authorize first."},
        {"name": "job-types", "description": "Each job type and the parameters it takes."},
        {"name": "job-results", "description": "The results of your completed jobs."},
        {
            "name": "events",
            "description": "Your jobs' changes as they happen, as Server-Sent Events.",
        },
        {
            "name": "webhooks",
            "description": "Have your jobs' events POSTed to your URLs, signed (Standard "
            "Webhooks).",
        },
        {
            "name": "schedules",
            "description": "Recurring jobs: cron or interval, in your time zone.",
        },
        {"name": "health", "description": "Whether the system can run jobs."},
        {"name": "index", "description": "The API's entry points and the docs' addresses."},
    ],
    "SORT_OPERATIONS": "job_system.openapi.operation_order",
    # One name for the event types, which webhooks list and deliveries show.
    "ENUM_NAME_OVERRIDES": {"EventTypeEnum": "events.models.EventType"},
}

# Jobs.
# A user with this many pending or running jobs gets 429 until some finish.
MAX_ACTIVE_JOBS_PER_USER = env_int("MAX_ACTIVE_JOBS_PER_USER", 10_000)
# Sharing the workers (jobs.services.admission). At most this many of one user's jobs run,
# or are about to, at once; 0 is no limit. Staff can set another limit per user in the admin.
JOB_USER_CONCURRENCY = env_int("JOB_USER_CONCURRENCY", 0)
if JOB_USER_CONCURRENCY < 0:
    raise ImproperlyConfigured("JOB_USER_CONCURRENCY must be 0 (no limit) or more")
# Messages kept in a queue for each worker process that serves it, beyond the one it runs (a
# quick jobs' message holds up to JOB_MESSAGE_BATCH_SIZE jobs). The other waiting jobs stay
# in the database, where admission picks them in fair order. A worker refills its queue when
# fewer messages than processes are left, so each admission adds about processes x (window -
# 1) + 1 messages: a longer window admits less often, a shorter one lets a newcomer's job
# overtake more of a backlog. With 1, a worker admits after every message of quick jobs.
JOB_QUEUE_WINDOW = env_int("JOB_QUEUE_WINDOW", 2)
if JOB_QUEUE_WINDOW < 0:
    raise ImproperlyConfigured("JOB_QUEUE_WINDOW must be 0 or more")
JOB_DISPATCH_INTERVAL_SECONDS = env_float("JOB_DISPATCH_INTERVAL_SECONDS", 1.0)
# Jobs due within this many seconds are published ahead with an ETA, so the worker starts them
# on time instead of up to a dispatch interval late. Longer than the interval, so every job is
# published before it is due; short, because an ETA message waits in a worker's memory.
JOB_DISPATCH_LOOKAHEAD_SECONDS = env_float("JOB_DISPATCH_LOOKAHEAD_SECONDS", 2.0)
if JOB_DISPATCH_LOOKAHEAD_SECONDS <= JOB_DISPATCH_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        "JOB_DISPATCH_LOOKAHEAD_SECONDS must be longer than JOB_DISPATCH_INTERVAL_SECONDS"
    )
# Quick jobs (a handler's `quick`) published together share broker messages of up to this
# many jobs, which a worker process runs in turn; 1 gives every job a message of its own.
JOB_MESSAGE_BATCH_SIZE = env_int("JOB_MESSAGE_BATCH_SIZE", 20)
if JOB_MESSAGE_BATCH_SIZE < 1:
    raise ImproperlyConfigured("JOB_MESSAGE_BATCH_SIZE must be at least 1")
# A web process publishes its requests' jobs from one thread, at most this often, so that jobs
# submitted in between share messages; 0 publishes each request's jobs in the request.
JOB_PUBLISH_INTERVAL_SECONDS = env_float("JOB_PUBLISH_INTERVAL_SECONDS", 0.01)
if not 0 <= JOB_PUBLISH_INTERVAL_SECONDS <= 1:
    raise ImproperlyConfigured("JOB_PUBLISH_INTERVAL_SECONDS must be between 0 and 1")
# A pending, due job whose message was published this long ago without being claimed is
# published again; the claim makes the duplicate harmless.
JOB_REDISPATCH_AFTER = timedelta(seconds=env_int("JOB_REDISPATCH_AFTER_SECONDS", 120))
# An admitted job is published again this long after its admission if the broker has no live
# message for it (jobs.services.recovery): long enough for a publish on its way to land.
JOB_MESSAGE_GRACE = timedelta(seconds=env_float("JOB_MESSAGE_GRACE_SECONDS", 5.0))
# A running job whose worker has not reported for this long is presumed lost.
JOB_LEASE = timedelta(seconds=env_int("JOB_LEASE_SECONDS", 60))
# Past its time limit a job is interrupted; if it is still running this much later, its
# process is killed.
JOB_HARD_TIMEOUT_GRACE = timedelta(seconds=env_int("JOB_HARD_TIMEOUT_GRACE_SECONDS", 30))
# A worker told to stop lets its running jobs finish for this long, then hands them back.
WORKER_SHUTDOWN_GRACE_SECONDS = env_float("WORKER_SHUTDOWN_GRACE_SECONDS", 10.0)
JOB_RETRY_BACKOFF_BASE_SECONDS = env_float("JOB_RETRY_BACKOFF_BASE_SECONDS", 2.0)
JOB_RETRY_BACKOFF_MAX_SECONDS = env_float("JOB_RETRY_BACKOFF_MAX_SECONDS", 300.0)
# The largest result a job may store, as compact UTF-8 JSON; a larger one fails the job. A
# result list page holds 4 MiB of outputs, so it keeps to a few MB while this stays below that.
JOB_MAX_RESULT_BYTES = env_int("JOB_MAX_RESULT_BYTES", 1024 * 1024)
if JOB_MAX_RESULT_BYTES < 1:
    raise ImproperlyConfigured("JOB_MAX_RESULT_BYTES must be at least 1")

# Retention of finished jobs (jobs.retention): each is deleted with its result, attempts and
# events this many days after it finished, by its final status; a job type may keep its own
# longer or shorter. A job holding an Idempotency-Key is kept at least 24 h after its creation.
# Beat's pruner deletes them in batches of JOB_PRUNE_BATCH_SIZE jobs, one short transaction
# each, with no statement deleting more rows than that (the jobs' own DELETEs, a quarter).
JOB_RETENTION_COMPLETED_DAYS = env_int("JOB_RETENTION_COMPLETED_DAYS", 30)
JOB_RETENTION_FAILED_DAYS = env_int("JOB_RETENTION_FAILED_DAYS", 90)
JOB_RETENTION_CANCELLED_DAYS = env_int("JOB_RETENTION_CANCELLED_DAYS", 90)
if min(JOB_RETENTION_COMPLETED_DAYS, JOB_RETENTION_FAILED_DAYS, JOB_RETENTION_CANCELLED_DAYS) < 0:
    raise ImproperlyConfigured("JOB_RETENTION_*_DAYS must each be 0 or more")
JOB_PRUNE_BATCH_SIZE = env_int("JOB_PRUNE_BATCH_SIZE", 250)
if not 1 <= JOB_PRUNE_BATCH_SIZE <= 5_000:
    raise ImproperlyConfigured("JOB_PRUNE_BATCH_SIZE must be between 1 and 5000")
# After each batch, Beat's pruner pauses this many times as long as the batch took, so that it
# leaves the database server's CPUs to requests for at least that share of its run.
JOB_PRUNE_PAUSE_RATIO = env_float("JOB_PRUNE_PAUSE_RATIO", 1.0)
if not 0 <= JOB_PRUNE_PAUSE_RATIO <= 10:
    raise ImproperlyConfigured("JOB_PRUNE_PAUSE_RATIO must be between 0 and 10")
# Each of Beat's pruner runs starts no batch after this long, pauses included: it shares the
# housekeeping worker with admission, the reaper and the schedules' dispatcher. Runs come
# every JOB_PRUNE_INTERVAL_SECONDS and go on where the last one stopped.
JOB_PRUNE_RUN_SECONDS = env_float("JOB_PRUNE_RUN_SECONDS", 1.0)
if not 0 < JOB_PRUNE_RUN_SECONDS <= 60:
    raise ImproperlyConfigured("JOB_PRUNE_RUN_SECONDS must be more than 0 and at most 60")

# Where clients reach the API, for the links in events and webhook payloads (no request to
# take it from there).
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
if urlsplit(PUBLIC_URL).scheme not in {"http", "https"} or not urlsplit(PUBLIC_URL).hostname:
    raise ImproperlyConfigured(f"PUBLIC_URL must be http(s)://host[:port], not {PUBLIC_URL!r}")
# Events and webhooks (events/, webhooks/). Every change of a job is an event, kept this many
# days: a stream resumed from an older one is told that it missed some, and a redelivery
# reaches back this far.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 7)
if EVENT_RETENTION_DAYS < 2:
    raise ImproperlyConfigured("EVENT_RETENTION_DAYS must be at least 2: webhooks retry a day")
# The event stream (GET /api/events/, the Procfile's `events` process): a comment this often
# keeps proxies from closing an idle stream, and each stream reads the table again then, which
# catches an announcement lost to a Redis failure.
EVENT_STREAM_KEEPALIVE_SECONDS = env_float("EVENT_STREAM_KEEPALIVE_SECONDS", 15.0)
# Open streams per user and per process: each one holds a connection and a little memory.
EVENT_STREAMS_PER_USER = env_int("EVENT_STREAMS_PER_USER", 10)
EVENT_STREAMS_PER_PROCESS = env_int("EVENT_STREAMS_PER_PROCESS", 2_000)
# Threads of an events process that read the database for its streams, each with its own
# connection: streams wait without a thread, and take one only to read.
EVENT_STREAM_DB_THREADS = env_int("EVENT_STREAM_DB_THREADS", 4)
if EVENT_STREAM_DB_THREADS < 1:
    raise ImproperlyConfigured("EVENT_STREAM_DB_THREADS must be at least 1")
# Webhook endpoints a user may have (per-job callback URLs are not counted).
WEBHOOK_MAX_ENDPOINTS_PER_USER = env_int("WEBHOOK_MAX_ENDPOINTS_PER_USER", 20)
# A delivery that has no 2xx answer within this many seconds failed.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
# The waits between a failed delivery's attempts, in seconds; after the last, it gives up.
# The default (Standard Webhooks' and Svix's) spans about 27 hours.
try:
    WEBHOOK_RETRY_SCHEDULE = [
        float(item)
        for item in env_list("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")
    ]
except ValueError:
    raise ImproperlyConfigured("WEBHOOK_RETRY_SCHEDULE must list seconds: 5,300,1800") from None
if not WEBHOOK_RETRY_SCHEDULE or min(WEBHOOK_RETRY_SCHEDULE) < 0:
    raise ImproperlyConfigured("WEBHOOK_RETRY_SCHEDULE must list at least one wait, none below 0")
# An endpoint that has failed every delivery for this long is disabled; its owner sees why.
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 24 * 60 * 60)
# After a secret's rotation, deliveries are signed with the old secret too, for this long.
WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = env_int(
    "WEBHOOK_SECRET_ROTATION_GRACE_SECONDS", 24 * 60 * 60
)

# Users' recurring schedules (schedules/, README, Schedules).
SCHEDULES_PER_USER = env_int("SCHEDULES_PER_USER", 100)
# The shortest interval a schedule may have; a cron expression may not fire more often either.
SCHEDULE_MIN_INTERVAL_SECONDS = env_int("SCHEDULE_MIN_INTERVAL_SECONDS", 60)
if SCHEDULE_MIN_INTERVAL_SECONDS < 1:
    raise ImproperlyConfigured("SCHEDULE_MIN_INTERVAL_SECONDS must be at least 1")
# The dispatcher creates each tick's job this many seconds before its fire time, as a job
# scheduled for it, so that it starts on time (never early) even when thousands fire at once;
# not while the schedule's latest job is active: the overlap policy is decided at the tick.
SCHEDULE_LOOKAHEAD_SECONDS = env_float("SCHEDULE_LOOKAHEAD_SECONDS", 10.0)
SCHEDULE_DISPATCH_INTERVAL_SECONDS = env_float("SCHEDULE_DISPATCH_INTERVAL_SECONDS", 1.0)
if SCHEDULE_LOOKAHEAD_SECONDS <= SCHEDULE_DISPATCH_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        "SCHEDULE_LOOKAHEAD_SECONDS must be longer than SCHEDULE_DISPATCH_INTERVAL_SECONDS"
    )
# Due schedules taken per transaction; several dispatchers take different batches.
SCHEDULE_DISPATCH_BATCH_SIZE = env_int("SCHEDULE_DISPATCH_BATCH_SIZE", 500)
if SCHEDULE_DISPATCH_BATCH_SIZE < 1:
    raise ImproperlyConfigured("SCHEDULE_DISPATCH_BATCH_SIZE must be at least 1")
# A schedule whose next tick is older than this was missed (the service was down): its
# catch-up policy decides what runs.
SCHEDULE_CATCHUP_GRACE_SECONDS = env_int("SCHEDULE_CATCHUP_GRACE_SECONDS", 60)
# The most runs the `all` catch-up policy makes for one schedule, and the longest window a
# schedule may ask for.
SCHEDULE_CATCHUP_MAX_RUNS = env_int("SCHEDULE_CATCHUP_MAX_RUNS", 10)
SCHEDULE_CATCHUP_MAX_WINDOW_SECONDS = env_int("SCHEDULE_CATCHUP_MAX_WINDOW_SECONDS", 24 * 60 * 60)
if SCHEDULE_CATCHUP_MAX_RUNS < 1 or SCHEDULE_CATCHUP_MAX_WINDOW_SECONDS < 1:
    raise ImproperlyConfigured(
        "SCHEDULE_CATCHUP_MAX_RUNS and SCHEDULE_CATCHUP_MAX_WINDOW_SECONDS must be at least 1"
    )

# Celery. The database is the truth about jobs; broker messages only carry job ids.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than any job may run, so Redis does not hand a running job to a second worker.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", 2 * 60 * 60),
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Celery closes the database connections around every task unless told to reuse them for this
# many tasks; opening a connection was an eighth of a short job's time (py-spy). Workers close
# them as Django's request cycle does instead, honouring DB_CONN_MAX_AGE and health checks
# (job_system.celery).
CELERY_DB_REUSE_MAX = 2**31
# Task events (received/started/succeeded) feed Flower. They are off unless asked for: they
# cost three Redis publishes per job, nearly half of a worker's main process (py-spy), and
# Flower switches them on by itself while it runs. No "sent" events at all: they would
# double the Redis writes of every submission.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_TASK_EVENTS", False)
CELERY_TIMEZONE = TIME_ZONE
# Beat's tasks have a queue of their own, served by a worker of their own (the Procfile's
# `housekeeping`), so a backlog of jobs never delays the dispatcher or the reaper, and Flower
# never sees them.
CELERY_TASK_ROUTES = {
    task: {"queue": "housekeeping"}
    for task in (
        "jobs.tasks.dispatch_due_jobs",
        "jobs.tasks.reap_stale_jobs",
        "users.tasks.purge_expired_codes",
        "users.tasks.flush_expired_tokens",
        "events.tasks.purge_expired_events",
        "jobs.tasks.prune_expired_jobs",
        "webhooks.tasks.webhooks_send_due",
        "webhooks.tasks.webhooks_fan_out_missed",
        "schedules.tasks.dispatch_due_schedules",
        "schedules.tasks.prune_schedule_runs",
    )
} | {
    task: {"queue": "webhooks"}
    for task in ("webhooks.tasks.webhooks_fan_out", "webhooks.tasks.webhooks_deliver")
}
CELERY_BEAT_SCHEDULER = "job_system.beat:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "dispatch-due-jobs": {
        "task": "jobs.tasks.dispatch_due_jobs",
        "schedule": JOB_DISPATCH_INTERVAL_SECONDS,
        "options": {"expires": 10},
    },
    "reap-stale-jobs": {
        "task": "jobs.tasks.reap_stale_jobs",
        "schedule": env_int("JOB_REAP_INTERVAL_SECONDS", 5),
        "options": {"expires": 60},
    },
    "purge-expired-codes": {
        "task": "users.tasks.purge_expired_codes",
        "schedule": 60 * 60,
    },
    "flush-expired-tokens": {
        "task": "users.tasks.flush_expired_tokens",
        "schedule": 24 * 60 * 60,
    },
    "purge-expired-events": {
        "task": "events.tasks.purge_expired_events",
        "schedule": 60 * 60,
    },
    "prune-expired-jobs": {
        "task": "jobs.tasks.prune_expired_jobs",
        "schedule": env_int("JOB_PRUNE_INTERVAL_SECONDS", 10),
        # A run that is late is not worth running twice: the next one deletes the same.
        "options": {"expires": env_int("JOB_PRUNE_INTERVAL_SECONDS", 10)},
    },
    # Retries whose wait is over; the wait's lateness is at most this interval.
    "webhooks-send-due": {
        "task": "webhooks.tasks.webhooks_send_due",
        "schedule": env_float("WEBHOOK_SWEEP_INTERVAL_SECONDS", 1.0),
        "options": {"expires": 10},
    },
    "dispatch-due-schedules": {
        "task": "schedules.tasks.dispatch_due_schedules",
        "schedule": SCHEDULE_DISPATCH_INTERVAL_SECONDS,
        "options": {"expires": 10},
    },
    "prune-schedule-runs": {
        "task": "schedules.tasks.prune_schedule_runs",
        "schedule": 60 * 60,
    },
    "webhooks-fan-out-missed": {
        "task": "webhooks.tasks.webhooks_fan_out_missed",
        "schedule": 10.0,
        "options": {"expires": 30},
    },
}

# Flower, which the web processes serve to staff at /flower/ (job_system.flower_proxy). They
# reach it at FLOWER_URL (by default on this host, at FLOWER_PORT) and log in with the
# FLOWER_BASIC_AUTH that Flower demands (its first user:password, if it lists several).
FLOWER_PORT = env_int("FLOWER_PORT", 5555)
FLOWER_URL = env_str("FLOWER_URL") or f"http://127.0.0.1:{FLOWER_PORT}"
_flower = urlsplit(FLOWER_URL)
if _flower.scheme not in {"http", "https"} or not _flower.hostname or _flower.path not in {"", "/"}:
    raise ImproperlyConfigured(
        f"FLOWER_URL must be http(s)://host:port, with no path, not {FLOWER_URL!r}"
    )
FLOWER_BASIC_AUTH = env_str("FLOWER_BASIC_AUTH").split(",")[0]

# Logging: `plain` lines for people, or one JSON object per line for a log collector. Every
# record emitted while a job is handled carries job_id, job_type and attempt
# (job_system.logging).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
_console = {"handlers": ["console"], "propagate": False}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "job_context": {"()": "job_system.logging.JobContextFilter"},
        # Beat's tasks that run every few seconds, and log what they did themselves.
        "quiet_beat_sends": {
            "()": "job_system.logging.QuietBeatSends",
            "tasks": [
                "jobs.tasks.dispatch_due_jobs",
                "jobs.tasks.reap_stale_jobs",
                "schedules.tasks.dispatch_due_schedules",
                "webhooks.tasks.webhooks_send_due",
            ],
        },
    },
    "formatters": {
        "plain": {"()": "job_system.logging.PlainFormatter"},
        "json": {"()": "job_system.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["job_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # gunicorn's own loggers, in the web worker processes (which load Django): the access log
    # and errors in the same format as everything else. Its master process keeps its own.
    "loggers": {
        # Without this, Django's own handlers stay on its logger, and with DEBUG on its console
        # one printed every Django record a second time, beside root's.
        "django": {"handlers": []},
        # Each answer has its line in gunicorn's access log; django.request added a second one
        # for every 4xx. Server errors, with their traceback, are still logged here.
        "django.request": {"level": "ERROR"},
        "gunicorn.error": _console,
        "gunicorn.access": _console,
        # Celery's "Task ... received" and "... succeeded" lines, one pair per message: the
        # services log each job's start and end with its id, type and attempt, so these
        # only doubled the log volume, at about 0.4 ms of worker CPU per message. Errors and
        # retries still show.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        # Beat's "Sending due task" line for every send: the dispatcher's, every second, was
        # a quarter of all the lines `make run` printed (job_system.logging.QuietBeatSends).
        "celery.beat": {"filters": ["quiet_beat_sends"]},
    },
}
# Celery would replace the root logger's handlers with its own in workers and Beat; keep
# ours, so their lines have the same format and job fields as the web's.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Metrics at /metrics (job_system.metrics), for a scraper with the bearer token or from an
# allowed address. Neither set: metrics are off and /metrics is a 404.
METRICS_TOKEN = env_str("METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 24 characters long.")
METRICS_ALLOWED_IPS = env_networks("METRICS_ALLOWED_IPS")
# Where the processes of one host share their metrics (prometheus_client's multiprocess mode,
# which reads this variable itself). Empty: each process reports only its own.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    # Created here, before anything counts: a missing folder would fail every write.
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# A worker's main process can serve its host's metrics itself (0: off), for hosts without web.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
WORKER_METRICS_ADDRESS = env_str("WORKER_METRICS_ADDRESS", "127.0.0.1")
if WORKER_METRICS_PORT and not PROMETHEUS_MULTIPROC_DIR:
    raise ImproperlyConfigured(
        "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: the jobs run in the worker's "
        "child processes, whose metrics reach the main process only through that folder."
    )

# Webhooks (webhooks.transport). A webhook's address is resolved once and every address it
# resolves to must be public; these networks are let through anyway (tests allow loopback).
# Production leaves it empty.
WEBHOOK_ALLOWED_NETWORKS = env_networks("WEBHOOK_ALLOWED_NETWORKS")
# The ports a webhook may be sent to: never SSH, SMTP and the like on someone else's host.
WEBHOOK_ALLOWED_PORTS = env_port_ranges("WEBHOOK_ALLOWED_PORTS", "80,443,1024-65535")

# Production hardening, applied whenever DEBUG is off.
if not DEBUG:
    if env_bool("TRUST_X_FORWARDED_PROTO", False):
        # Only behind a proxy that always sets this header; otherwise clients could forge it.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # The same bar as Django's deploy check (security.W009).
    if SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured("SECRET_KEY must be a long random value when DEBUG is off.")
