"""Kaiketsu settings: every value comes from an environment variable (see .env.example)."""

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
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
    "axes",
    "diagnostics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "portal.middleware.NulSafeQueryMiddleware",  # before any view reads the query
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "portal.middleware.RedisUnavailableMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out sign-in
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

# --- Redis: cache, Celery broker and live job streams ---------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Every key this install writes starts with this prefix (cache entries, the broker's queues,
# job streams), so two installs may share one Redis database without reading each other.
KAIKETSU_REDIS_PREFIX = env("KAIKETSU_REDIS_PREFIX", default="kaiketsu")
# A stalled Redis must not hold a request: after these many seconds a call fails and the page
# says so (503) instead of hanging for as long as Redis does (issue #16).
REDIS_TIMEOUTS = {
    "socket_timeout": env.float("KAIKETSU_REDIS_TIMEOUT", default=2.0),
    "socket_connect_timeout": env.float("KAIKETSU_REDIS_CONNECT_TIMEOUT", default=2.0),
}
# Live job pages (server-sent events) one web process serves at once, per user and in all;
# they share one Redis connection (diagnostics/live.py), see docs/benchmarks.md for the cost.
KAIKETSU_SSE_PER_USER = env.int("KAIKETSU_SSE_PER_USER", default=10)
# bench/sse_bench.py: rendering each page's update costs ~45 ms on one thread, so one event
# on every page reaches the last of 200 within ~10 s; past that a burst is felt (300: 17 s).
KAIKETSU_SSE_TOTAL = env.int("KAIKETSU_SSE_TOTAL", default=200)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": KAIKETSU_REDIS_PREFIX,
        "OPTIONS": REDIS_TIMEOUTS,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# --- The front door (issue #16, finding 6) -----------------------------------------------
# django-axes counts failed sign-ins per user name and address and locks that pair out for a
# while; every failure is kept (AccessAttempt, AccessFailureLog in the admin), never the
# password. The address is REMOTE_ADDR: behind a reverse proxy, uvicorn's --proxy-headers
# with --forwarded-allow-ips=<the proxy> puts the client's there (README); a header the client
# could write is never trusted for it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("KAIKETSU_LOGIN_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("KAIKETSU_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False  # no banner on every manage.py command

# Content-Security-Policy: scripts, styles, images and connections from this site only; no
# inline script or style (htmx's indicator style is in kaiketsu.css, see base.html), no
# framing, forms post here only. tests/browser/test_csp.py loads every page under it.
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
    }
}

# --- Sign-in with the company's identity provider (OpenID Connect), when configured -------
# Local accounts keep working beside it (the demo's, a break-glass administrator). The
# provider's endpoints are in its /.well-known/openid-configuration; the portal's redirect URI
# to register there is https://<portal>/oidc/callback/. diagnostics/sso.py maps the group claim
# to roles: someone in none of the mapped groups is refused.
OIDC_RP_CLIENT_ID = env("OIDC_RP_CLIENT_ID", default="")
KAIKETSU_SSO = bool(OIDC_RP_CLIENT_ID)
if KAIKETSU_SSO:
    INSTALLED_APPS.append("mozilla_django_oidc")
    AUTHENTICATION_BACKENDS.append("diagnostics.sso.CompanyBackend")
    OIDC_RP_CLIENT_SECRET = env("OIDC_RP_CLIENT_SECRET")
    OIDC_OP_AUTHORIZATION_ENDPOINT = env("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_OP_TOKEN_ENDPOINT = env("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = env("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = env("OIDC_OP_JWKS_ENDPOINT")
    OIDC_RP_SIGN_ALGO = env("OIDC_RP_SIGN_ALGO", default="RS256")
    OIDC_RP_SCOPES = env("OIDC_RP_SCOPES", default="openid email profile groups")
    OIDC_USE_PKCE = True
    LOGIN_REDIRECT_URL_FAILURE = "/login/"  # a path: mozilla-django-oidc does not resolve names
    KAIKETSU_OIDC_USERNAME_CLAIM = env("KAIKETSU_OIDC_USERNAME_CLAIM", default="preferred_username")
    KAIKETSU_OIDC_GROUPS_CLAIM = env("KAIKETSU_OIDC_GROUPS_CLAIM", default="groups")
    # Company group names (comma-separated) that give each role; a person may hold several.
    KAIKETSU_OIDC_ROLE_GROUPS = {
        role: set(env.list(f"KAIKETSU_OIDC_{role.upper()}_GROUPS", default=[]))
        for role in ("employee", "helpdesk", "kb_admin")
    }

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
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 4 * (KAIKETSU_JOB_TIME_LIMIT + 60),
    # kombu prefixes every broker key (queues, unacked, control fan-out) with this.
    "global_keyprefix": f"{KAIKETSU_REDIS_PREFIX}:",
    **REDIS_TIMEOUTS,
}
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUTS["socket_connect_timeout"]
# Jobs spend their life waiting on the network, so the worker runs them on threads: this many
# turns at once per worker process, whatever the number of cores (grow past one machine with
# more workers on more machines sharing Redis and the database).
KAIKETSU_WORKER_THREADS = env.int("KAIKETSU_WORKER_THREADS", default=32)
# A fleet scan runs at most this many of its diagnoses at once, leaving room for employees.
KAIKETSU_SCAN_CONCURRENCY = env.int("KAIKETSU_SCAN_CONCURRENCY", default=24)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
REAP_EVERY_S = 15.0  # the reaper's period: KAIKETSU_REAP_AFTER + this is the worst case
CELERY_BEAT_SCHEDULE = {
    "reap-dead-jobs": {"task": "diagnostics.tasks.reap_jobs", "schedule": REAP_EVERY_S},
    "tick-scans": {"task": "diagnostics.tasks.tick_scans", "schedule": 30.0},
}

# E-mail (hand-overs): one URL names the backend, e.g. smtp+tls://USER:PASSWORD@HOST:587;
# the default prints each e-mail to the web process' console (the demo).
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"]  # filemail:////absolute/dir (four slashes)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="kaiketsu@localhost")
# Where a new hand-over (and an employee's reply nobody holds yet) is announced.
KAIKETSU_HELPDESK_EMAIL = env("KAIKETSU_HELPDESK_EMAIL", default="helpdesk@example.com")
KAIKETSU_DASHBOARD_CACHE_SECONDS = env.int("KAIKETSU_DASHBOARD_CACHE_SECONDS", default=60)
KAIKETSU_WINRM_VERIFY_TLS = env.bool("KAIKETSU_WINRM_VERIFY_TLS", default=True)
# A job that has not reported for this long while "running" belongs to a dead worker.
# A running turn beats every 15 s (jobs.HEARTBEAT_S), so 40 s is two missed beats and a
# margin: with the reaper every 15 s a dead worker's job ends within 55 s (issue #16: "within
# a minute"); Celery's task_failure signal ends it at once when only a pool child died.
KAIKETSU_REAP_AFTER = env.int("KAIKETSU_REAP_AFTER", default=40)
# A queued or waiting job whose next turn is this late lost its message: the reaper resends it.
KAIKETSU_RESEND_AFTER = env.int("KAIKETSU_RESEND_AFTER", default=120)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# HTTPS: with DEBUG off the portal sends plain HTTP to HTTPS and tells browsers to stay there
# (HSTS). Behind a TLS-terminating proxy, set KAIKETSU_PROXY_SSL_HEADER (e.g.
# HTTP_X_FORWARDED_PROTO=https) so Django knows the request was HTTPS; SECURE_SSL_REDIRECT=false
# only where the proxy itself redirects. The demo and the tests run over plain HTTP on loopback:
# `make run` sets DEBUG, the tests switch the redirect off.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
# Subdomains and preload bind other hosts of the company's domain: each install decides.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if _proxy_header := env("KAIKETSU_PROXY_SSL_HEADER", default=""):
    _name, _, _value = _proxy_header.partition("=")
    SECURE_PROXY_SSL_HEADER = (_name.strip(), _value.strip() or "https")
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
