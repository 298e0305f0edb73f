"""Vigil settings: everything comes from environment variables (12-factor).

With nothing set, Vigil runs on the embedded default: a SQLite file and a Celery broker on SQLite
(kombu's SQLAlchemy transport), so `make run` needs no server. `DATABASE_URL` and
`CELERY_BROKER_URL` switch to PostgreSQL and Redis. With `VIGIL_DEBUG` off (the default), the
settings are production settings and pass `manage.py check --deploy`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VIGIL_VAR_DIR", BASE_DIR / "var"))
# The embedded default keeps its SQLite database and broker here; a fresh clone has no var/ yet.
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean so that `1`, `true`, `yes` and `on` all mean yes."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_seconds(name: str, default: float) -> float:
    """Durations as plain seconds or with a unit suffix (30s, 10m, 2h), like Alertmanager's."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if raw[-1] in units:
            return float(raw[:-1]) * units[raw[-1]]
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a duration (e.g. 90, 30s, 10m, 2h)"
        ) from exc


def env_prepare_threshold(name: str, default: int) -> int | None:
    """psycopg's prepare_threshold: a count of runs, or None (`off`) for never."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"off", "none", "never"}:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a count of runs (e.g. 5) or 'off'")
    return value


def env_nice(name: str, default: int) -> int:
    """An increment of a process's nice value: 0 (unchanged) to 19 (the lowest priority)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a nice increment from 0 to 19")
    return value


DEBUG = env_bool("VIGIL_DEBUG", False)
TESTING = env_bool("VIGIL_TESTING", False)

SECRET_KEY = os.environ.get("VIGIL_SECRET_KEY", "")
# Commands that only inspect code (makemigrations) need no key; manage.py says so for them.
KEYLESS_COMMAND = env_bool("VIGIL_KEYLESS_COMMAND", False)
if not SECRET_KEY:
    if not (DEBUG or TESTING or KEYLESS_COMMAND):
        raise ImproperlyConfigured(
            "VIGIL_SECRET_KEY must be set in production (or set VIGIL_DEBUG=1 for development)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production-" + "x" * 20

ALLOWED_HOSTS = env_list("VIGIL_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("VIGIL_CSRF_TRUSTED_ORIGINS")
VIGIL_BASE_URL = os.environ.get("VIGIL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "ninja",
    "incidents",
    "collectors",
    "assistant",
    "replay",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # POST /hooks/alertmanager goes straight to its view from here (vigil/fastpath.py).
    "vigil.fastpath.HookFastPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # NUL in a query or body: 400 before any view; a DataError out of a view: 400, not 500.
    "vigil.middleware.BadInputMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "vigil.urls"
WSGI_APPLICATION = "vigil.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "incidents.context_processors.roles",
            ],
        },
    },
]

# Database: SQLite file by default, PostgreSQL (psycopg 3) via DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'vigil.sqlite3'}",
        conn_max_age=int(os.environ.get("VIGIL_DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; the timeout waits out short locks.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not memory) so worker subprocesses share it; per process so parallel runs do not.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-vigil-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters bound by the server, so that psycopg can prepare a statement on the connection
    # once it has run there `prepare_threshold` times: PostgreSQL then parses and plans the
    # webhook's statements once per connection instead of once per request (planning the repeat
    # lane's statement took 0.21 ms, running it 0.07). Django's default, client-side binding,
    # cannot prepare. Off (`VIGIL_DB_PREPARE_THRESHOLD=off`) for a pooler in transaction mode
    # that cannot carry prepared statements (PgBouncer before 1.21 or without
    # max_prepared_statements).
    DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", True)
    DATABASES["default"]["OPTIONS"].setdefault(
        "prepare_threshold", env_prepare_threshold("VIGIL_DB_PREPARE_THRESHOLD", 5)
    )
    # Django's, with a health check that asks the socket before the server (its docstring).
    DATABASES["default"]["ENGINE"] = "vigil.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ModelBackend, with a user's own and group permissions in one query (its docstring says why).
AUTHENTICATION_BACKENDS = ["incidents.auth_backend.RoleBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    # The suite creates many users; the production hasher's deliberate slowness buys nothing there.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "incident-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not (DEBUG or TESTING)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG or TESTING

# Security. Hooks and the API are called by machines that do not follow redirects.
SECURE_SSL_REDIRECT = env_bool("VIGIL_SSL_REDIRECT", not (DEBUG or TESTING))
SECURE_REDIRECT_EXEMPT = [r"^hooks/", r"^api/", r"^slack/", r"^healthz$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("VIGIL_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_bool("VIGIL_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env_bool("VIGIL_SECURE_COOKIES", not (DEBUG or TESTING))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# No script reads the CSRF cookie: pages put the token in forms and in <body hx-headers>.
CSRF_COOKIE_HTTPONLY = True
# Lax, not Strict: a Slack link to a timeline is a cross-site navigation that must arrive logged in.
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Login throttling (incidents/throttle.py): this many failed logins for one username, or from one
# client address, lock that username or address out for VIGIL_LOGIN_LOCKOUT (429). The address is
# REMOTE_ADDR, or with VIGIL_TRUSTED_PROXIES=N the one the outermost of N proxies saw.
VIGIL_LOGIN_MAX_FAILURES = int(os.environ.get("VIGIL_LOGIN_MAX_FAILURES", "5"))
VIGIL_LOGIN_MAX_FAILURES_PER_ADDRESS = int(
    os.environ.get("VIGIL_LOGIN_MAX_FAILURES_PER_ADDRESS", "20")
)
VIGIL_LOGIN_LOCKOUT = env_seconds("VIGIL_LOGIN_LOCKOUT", 15 * 60)
VIGIL_TRUSTED_PROXIES = int(os.environ.get("VIGIL_TRUSTED_PROXIES", "0"))

# Content-Security-Policy: no inline script or style anywhere, so no template has to change later.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Celery: embedded SQLite broker by default, Redis via CELERY_BROKER_URL.
# A test run gets its own embedded broker file and queue, so it never takes (or leaves) tasks of a
# `make run` on the same machine, nor of another test run.
_TEST_SUFFIX = f"-test-{os.getpid()}" if TESTING else ""
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or (
    f"sqla+sqlite:///{VAR_DIR / f'celery-broker{_TEST_SUFFIX}.sqlite3'}"
)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else f"db+sqlite:///{VAR_DIR / f'celery-results{_TEST_SUFFIX}.sqlite3'}"
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Publishing happens in request handlers: fail fast instead of hanging the webhook on a dead
# broker. The stored delivery and the beat sweep make a failed publish harmless.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 1.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
BROKER_IS_REDIS = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# The SQLAlchemy transport hands its options to create_engine(), so these are Redis-only.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "socket_connect_timeout": 1.0,
        "socket_timeout": 2.0,
        "max_retries": 0,
        # An unacknowledged task (its worker was killed) is delivered again after this long. Longer
        # than the longest task plus the longest countdown it waits for (tests/faults checks), so
        # a task still running or waiting is never delivered twice; the sweep is the backstop.
        "visibility_timeout": env_seconds("VIGIL_BROKER_VISIBILITY_TIMEOUT", 3600),
        # Look for such tasks every 10s (kombu's default scans only every 10th time: ~100s).
        "unacked_restore_throttle": 1,
    }
    if BROKER_IS_REDIS
    else {}
)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = (
    {"socket_connect_timeout": 1.0, "socket_timeout": 2.0} if BROKER_IS_REDIS else {}
)
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 1.0
CELERY_REDIS_SOCKET_TIMEOUT = 2.0
CELERY_BEAT_SCHEDULE = {
    "sweep": {"task": "incidents.tasks.sweep", "schedule": env_seconds("VIGIL_SWEEP_INTERVAL", 60)},
    "narratives": {
        "task": "assistant.tasks.sweep_narratives",
        "schedule": env_seconds("VIGIL_SWEEP_INTERVAL", 60),
    },
    "actions": {
        "task": "assistant.tasks.sweep_actions",
        "schedule": env_seconds("VIGIL_SWEEP_INTERVAL", 60),
    },
}
CELERY_TASK_ALWAYS_EAGER = env_bool("VIGIL_CELERY_EAGER", False)
# Tests give each run its own queue so runs sharing one Redis never take each other's tasks.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("VIGIL_CELERY_QUEUE") or (
    f"vigil{_TEST_SUFFIX}" if TESTING else "celery"
)

# The cache holds the login throttle's counters (incidents/throttle.py), so every web process must
# share it: Redis when the broker is Redis (or VIGIL_CACHE_URL), a file cache under var/ for the
# embedded default, each test process its own memory.
VIGIL_CACHE_URL = os.environ.get("VIGIL_CACHE_URL", "").strip() or (
    CELERY_BROKER_URL if BROKER_IS_REDIS else ""
)
if TESTING:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
elif VIGIL_CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": VIGIL_CACHE_URL,
            "KEY_PREFIX": "vigil-cache",
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Vigil itself.
VIGIL_WEBHOOK_MAX_BYTES = int(os.environ.get("VIGIL_WEBHOOK_MAX_BYTES", str(4 * 1024 * 1024)))
# Django refuses larger bodies before the hook can answer 413 itself; keep its limit above ours.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(VIGIL_WEBHOOK_MAX_BYTES + 1, 2621440)
VIGIL_GROUP_BY = env_list("VIGIL_GROUP_BY")
VIGIL_GROUP_WINDOW = timedelta(seconds=env_seconds("VIGIL_GROUP_WINDOW", 30 * 60))
VIGIL_AUTO_RESOLVE = env_bool("VIGIL_AUTO_RESOLVE", True)
VIGIL_REOPEN_WINDOW = timedelta(seconds=env_seconds("VIGIL_REOPEN_WINDOW", 60 * 60))
# A delivery still unprocessed after this long is picked up by the sweep.
VIGIL_SWEEP_GRACE = timedelta(seconds=env_seconds("VIGIL_SWEEP_GRACE", 30))
# The webhooks keep an integration found by its token this long per process (incidents/hooks.py):
# deactivating an integration, rotating or deleting its token takes effect within it.
VIGIL_INTEGRATION_CACHE_SECONDS = env_seconds("VIGIL_INTEGRATION_CACHE_SECONDS", 10)
# After a failed publish, skip the broker for this long (the sweep catches up).
VIGIL_BROKER_BACKOFF_SECONDS = env_seconds("VIGIL_BROKER_BACKOFF", 10)
# The Celery worker lowers its CPU priority by this much when it starts (vigil/celery.py), so
# that on a machine it shares with the web processes a storm's collection rounds yield to the
# pages engineers open; 0 keeps the priority it was started with.
VIGIL_WORKER_NICE = env_nice("VIGIL_WORKER_NICE", 10)

# Evidence collection.
VIGIL_COLLECT_LOOKBACK = timedelta(seconds=env_seconds("VIGIL_COLLECT_LOOKBACK", 3600))
VIGIL_COLLECTOR_SOFT_LIMIT = env_seconds("VIGIL_COLLECTOR_SOFT_LIMIT", 10)
VIGIL_COLLECTOR_HARD_LIMIT = env_seconds("VIGIL_COLLECTOR_HARD_LIMIT", 15)
VIGIL_COLLECT_REQUEST_TIMEOUT = env_seconds("VIGIL_COLLECT_REQUEST_TIMEOUT", 5)
# New alerts joining an incident re-collect its evidence once none has joined for this long
# (trailing debounce), and at the latest VIGIL_COLLECT_MAX_WAIT (default twice the debounce)
# after the first alert that joined since the last round started (collectors.tasks).
VIGIL_COLLECT_DEBOUNCE = env_seconds("VIGIL_COLLECT_DEBOUNCE", 30)
VIGIL_COLLECT_MAX_WAIT = max(
    VIGIL_COLLECT_DEBOUNCE,
    env_seconds("VIGIL_COLLECT_MAX_WAIT", 2 * VIGIL_COLLECT_DEBOUNCE),
)
# A collection round not finished after this long is started again by the sweep.
VIGIL_STUCK_COLLECTION_AFTER = timedelta(seconds=env_seconds("VIGIL_STUCK_COLLECTION_AFTER", 600))
VIGIL_COLLECT_MAX_ALERTS = int(os.environ.get("VIGIL_COLLECT_MAX_ALERTS", "200"))
VIGIL_EVIDENCE_MAX_BYTES = int(os.environ.get("VIGIL_EVIDENCE_MAX_BYTES", str(256 * 1024)))
VIGIL_EVIDENCE_MAX_BYTES_PER_INCIDENT = int(
    os.environ.get("VIGIL_EVIDENCE_MAX_BYTES_PER_INCIDENT", str(5 * 1024 * 1024))
)
VIGIL_EVIDENCE_MAX_ITEMS = int(os.environ.get("VIGIL_EVIDENCE_MAX_ITEMS", "100"))

# The default cluster (more are added in the admin).
VIGIL_CLUSTER_NAME = os.environ.get("VIGIL_CLUSTER_NAME", "default")
VIGIL_PROMETHEUS_URL = os.environ.get("VIGIL_PROMETHEUS_URL", "")
VIGIL_ALERTMANAGER_URL = os.environ.get("VIGIL_ALERTMANAGER_URL", "")
VIGIL_LOKI_URL = os.environ.get("VIGIL_LOKI_URL", "")
VIGIL_QUERY_PROFILES = os.environ.get("VIGIL_QUERY_PROFILES", "")  # extra query profiles (YAML)
KUBECONFIG = os.environ.get("KUBECONFIG", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("VIGIL_LOG_LEVEL", "INFO")},
}

# The LLM narrative (optional; assistant/llm/). Unset VIGIL_LLM: the rule-based analysis stands
# alone and the page says so. `provider:model` goes to LangChain's init_chat_model; any
# OpenAI-compatible server (self-hosted vLLM) is `openai:<served name>` with VIGIL_LLM_BASE_URL.
VIGIL_LLM = os.environ.get("VIGIL_LLM", "").strip()
VIGIL_LLM_BASE_URL = os.environ.get("VIGIL_LLM_BASE_URL", "").strip()
VIGIL_LLM_API_KEY = os.environ.get("VIGIL_LLM_API_KEY", "")
VIGIL_LLM_TIMEOUT = env_seconds("VIGIL_LLM_TIMEOUT", 30)
# Rate limits (429) and 5xx are retried this many times, waiting as Retry-After asks (capped).
VIGIL_LLM_MAX_RETRIES = int(os.environ.get("VIGIL_LLM_MAX_RETRIES", "2"))
VIGIL_LLM_MAX_RETRY_WAIT = env_seconds("VIGIL_LLM_MAX_RETRY_WAIT", 20)
# "json_schema", "function_calling" or "json_mode"; empty: the provider's default.
VIGIL_LLM_STRUCTURED_METHOD = os.environ.get("VIGIL_LLM_STRUCTURED_METHOD", "").strip()
VIGIL_LLM_INPUT_TOKENS = int(os.environ.get("VIGIL_LLM_INPUT_TOKENS", "6000"))
VIGIL_LLM_OUTPUT_TOKENS = int(os.environ.get("VIGIL_LLM_OUTPUT_TOKENS", "1500"))
VIGIL_LLM_INCIDENT_TOKEN_BUDGET = int(os.environ.get("VIGIL_LLM_INCIDENT_TOKEN_BUDGET", "60000"))
VIGIL_LLM_DAILY_TOKEN_BUDGET = int(os.environ.get("VIGIL_LLM_DAILY_TOKEN_BUDGET", "2000000"))
# USD per million tokens, for the cost shown beside each narrative (0: not priced).
VIGIL_LLM_INPUT_COST_PER_MTOK = float(os.environ.get("VIGIL_LLM_INPUT_COST_PER_MTOK", "0"))
VIGIL_LLM_OUTPUT_COST_PER_MTOK = float(os.environ.get("VIGIL_LLM_OUTPUT_COST_PER_MTOK", "0"))

# Remediation (assistant/actions/, assistant/remediation.py). Four eyes: the approver must not be
# whoever proposed, added or last edited the action (on by default in production).
VIGIL_FOUR_EYES = env_bool("VIGIL_FOUR_EYES", not DEBUG)
# An approval needs a dry run at most this old whose target has not changed since.
VIGIL_ACTION_PREVIEW_TTL = timedelta(seconds=env_seconds("VIGIL_ACTION_PREVIEW_TTL", 15 * 60))
VIGIL_ACTION_REQUEST_TIMEOUT = env_seconds("VIGIL_ACTION_REQUEST_TIMEOUT", 10)
# drain-node: evictions a PodDisruptionBudget refuses (429) are tried again every INTERVAL for up
# to RETRY seconds, as `kubectl drain` does, while the evicted pods' replacements become ready.
# Capped well inside the execution task's soft time limit (300 s).
VIGIL_DRAIN_RETRY_SECONDS = min(env_seconds("VIGIL_DRAIN_RETRY_SECONDS", 60), 180)
VIGIL_DRAIN_RETRY_INTERVAL = max(env_seconds("VIGIL_DRAIN_RETRY_INTERVAL", 5), 1)

# Slack (incidents/slack.py, incidents/slack_events.py). With a bot token, each incident gets one
# message in its channel and later updates go into its thread (the parent is updated with the
# current status); with only an incoming-webhook URL, each announcement is a message of its own.
# The bot token takes precedence when both are set. Links point at VIGIL_BASE_URL.
VIGIL_SLACK_BOT_TOKEN = os.environ.get("VIGIL_SLACK_BOT_TOKEN", "").strip()
VIGIL_SLACK_CHANNEL = os.environ.get("VIGIL_SLACK_CHANNEL", "").strip()
VIGIL_SLACK_WEBHOOK_URL = os.environ.get("VIGIL_SLACK_WEBHOOK_URL", "").strip()
VIGIL_SLACK_SIGNING_SECRET = os.environ.get("VIGIL_SLACK_SIGNING_SECRET", "").strip()
# slack_sdk joins base URL and method name, so the base ends with a slash.
VIGIL_SLACK_API_URL = (
    os.environ.get("VIGIL_SLACK_API_URL", "").strip() or "https://slack.com/api/"
).rstrip("/") + "/"


def env_slack_routes(name: str) -> list[tuple[str, str, str]]:
    """`label=value:channel` entries, comma-separated, as (label, value, channel), in order.

    `namespace=llm:C0LLM,team=ml-platform:C0ML` sends incidents any of whose alerts has
    namespace=llm to C0LLM, else those with team=ml-platform to C0ML, else to the default
    channel. The channel is what follows the last colon, so values may contain colons.
    """
    raw = os.environ.get(name, "").strip()
    routes: list[tuple[str, str, str]] = []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        matcher, colon, channel = entry.rpartition(":")
        label, equals, value = matcher.partition("=")
        label, value, channel = label.strip(), value.strip(), channel.strip()
        if not (colon and equals and label and value and channel) or " " in channel:
            raise ImproperlyConfigured(
                f"{name}: {entry!r} is not label=value:channel "
                "(e.g. namespace=llm:C0LLM,team=ml-platform:C0ML)"
            )
        routes.append((label, value, channel))
    return routes


VIGIL_SLACK_ROUTES = env_slack_routes("VIGIL_SLACK_ROUTES")
# Channels whose link unfurls may show an incident's details (title, status, top hypothesis);
# elsewhere an unfurl says only "Vigil incident #N". Empty: the channels configured above.
# `*` allows every channel. Give channel IDs (C…): Slack's events name channels by ID.
VIGIL_SLACK_UNFURL_CHANNELS = env_list("VIGIL_SLACK_UNFURL_CHANNELS")
VIGIL_SLACK_TIMEOUT = env_seconds("VIGIL_SLACK_TIMEOUT", 10)
# A message is tried this many times (rate limits, Slack or network trouble) before it is given up
# and a slack_failed event says so on the timeline; waits back off, and follow Retry-After, capped.
VIGIL_SLACK_MAX_ATTEMPTS = int(os.environ.get("VIGIL_SLACK_MAX_ATTEMPTS", "6"))
VIGIL_SLACK_MAX_RETRY_WAIT = env_seconds("VIGIL_SLACK_MAX_RETRY_WAIT", 300)
# Events older than this are not announced (the sweep's look-back, and a late-configured Slack).
VIGIL_SLACK_MAX_AGE = timedelta(seconds=env_seconds("VIGIL_SLACK_MAX_AGE", 3600))
CELERY_BEAT_SCHEDULE["slack"] = {
    "task": "incidents.tasks.slack_sweep",
    "schedule": env_seconds("VIGIL_SWEEP_INTERVAL", 60),
}
