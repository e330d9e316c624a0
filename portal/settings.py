"""Kaiketsu settings: every value comes from an environment variable (see .env.example)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# Throwaway keys exist only for DEBUG; a production start without real ones must fail loudly.
_DEV_SECRET_KEY = "dev-only-insecure-key-kaiketsu"
_DEV_FIELD_KEY = "ZGV2LW9ubHktZmllbGQta2V5LWthaWtldHN1LTAwMDA="
SECRET_KEY = env("SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEY", default=[_DEV_FIELD_KEY] if DEBUG else [])
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
if not FIELD_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY must be set when DEBUG is off")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "diagnostics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "django.template.context_processors.i18n",
                "diagnostics.access.nav",
            ],
        },
    },
]

# An empty DATABASE_URL counts as unset: the embedded SQLite default.
DATABASES = {
    "default": env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'kaiketsu.sqlite3'}"
    )
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(exist_ok=True)
    # Web, worker and CLI share one SQLite file in the demo: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kaiketsu",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "diagnostics:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = env("LANGUAGE_CODE", default="ja")
LANGUAGES = [("ja", _("Japanese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", default="Asia/Tokyo")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves static files under uvicorn; finders let the demo and tests skip collectstatic.
WHITENOISE_USE_FINDERS = True

# --- Celery: Redis is the broker; results live in the database, not in Celery. ---------------
KAIKETSU_JOB_TIME_LIMIT = env.int("KAIKETSU_JOB_TIME_LIMIT", default=300)
CELERY_BROKER_URL = REDIS_URL
# One Redis can serve several installs (or a test run beside `make run`): name the queue.
CELERY_TASK_DEFAULT_QUEUE = env("KAIKETSU_QUEUE", default="kaiketsu")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A job runs in turns (jobs.py): no task runs longer than one plan on a host (the time limit)
# or waits longer than 30 s before its next turn; waiting for a restart or for the employee
# holds no worker. Redis redelivers an unacked task after the visibility timeout: keep it well
# above one turn, and the task itself refuses a turn that was already taken.
KAIKETSU_RESTART_TIMEOUT = env.int("KAIKETSU_RESTART_TIMEOUT", default=600)
KAIKETSU_RESTART_NOW_SECONDS = env.int("KAIKETSU_RESTART_NOW_SECONDS", default=30)
KAIKETSU_RESTART_DELAYS = (5, 15, 30)  # minutes the employee may choose
# After a fix, how long the portal waits for the employee's own connection attempt, and how
# often it reads the event log meanwhile (issue #9).
KAIKETSU_ATTEMPT_TIMEOUT = env.int("KAIKETSU_ATTEMPT_TIMEOUT", default=600)
KAIKETSU_ATTEMPT_POLL_S = env.int("KAIKETSU_ATTEMPT_POLL_S", default=5)
# The agent channel (issue #14): how long a job waits for an agent PC to check in before it
# says the PC is offline and frees the machine; how long a signed plan stays valid; how long
# the portal holds one long poll open (under common proxies' 60 s idle limit).
KAIKETSU_AGENT_PICKUP_TIMEOUT = env.int("KAIKETSU_AGENT_PICKUP_TIMEOUT", default=300)
KAIKETSU_AGENT_PLAN_TTL = env.int("KAIKETSU_AGENT_PLAN_TTL", default=120)
KAIKETSU_AGENT_POLL_SECONDS = env.int("KAIKETSU_AGENT_POLL_SECONDS", default=25)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * (KAIKETSU_JOB_TIME_LIMIT + 60)}
# Jobs spend their life waiting on the network, so the worker runs them on threads: this many
# turns at once per worker process, whatever the number of cores (grow past one machine with
# more workers on more machines sharing Redis and the database).
KAIKETSU_WORKER_THREADS = env.int("KAIKETSU_WORKER_THREADS", default=32)
# A fleet scan runs at most this many of its diagnoses at once, leaving room for employees.
KAIKETSU_SCAN_CONCURRENCY = env.int("KAIKETSU_SCAN_CONCURRENCY", default=24)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "reap-dead-jobs": {"task": "diagnostics.tasks.reap_jobs", "schedule": 30.0},
    "tick-scans": {"task": "diagnostics.tasks.tick_scans", "schedule": 30.0},
}

# Where "Ask the helpdesk" sends an employee whose paste matched nothing (a mailto: link).
KAIKETSU_HELPDESK_EMAIL = env("KAIKETSU_HELPDESK_EMAIL", default="helpdesk@example.com")
KAIKETSU_DASHBOARD_CACHE_SECONDS = env.int("KAIKETSU_DASHBOARD_CACHE_SECONDS", default=60)
KAIKETSU_WINRM_VERIFY_TLS = env.bool("KAIKETSU_WINRM_VERIFY_TLS", default=True)
# A job that has not reported for this long while "running" belongs to a dead worker.
# A running turn beats every 15 s (jobs.HEARTBEAT_S), so four missed beats mean a dead worker.
KAIKETSU_REAP_AFTER = env.int("KAIKETSU_REAP_AFTER", default=60)
# A queued or waiting job whose next turn is this late lost its message: the reaper resends it.
KAIKETSU_RESEND_AFTER = env.int("KAIKETSU_RESEND_AFTER", default=120)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
