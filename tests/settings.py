"""Test settings: the real settings, with test-only keys supplied through the environment."""

import os
from urllib.parse import urlsplit

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWZpZWxkLWtleS1rYWlrZXRzdS0wMDA=")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")  # the test servers speak plain HTTP
# Short waits: winsim restarts in seconds, and jobs against a hung host give up sooner.
os.environ.setdefault("KAIKETSU_JOB_TIME_LIMIT", "25")
os.environ.setdefault("KAIKETSU_RESTART_NOW_SECONDS", "1")
os.environ.setdefault("KAIKETSU_RESTART_TIMEOUT", "60")
os.environ.setdefault("KAIKETSU_ATTEMPT_TIMEOUT", "30")
os.environ.setdefault("KAIKETSU_ATTEMPT_POLL_S", "1")
os.environ.setdefault("KAIKETSU_DASHBOARD_CACHE_SECONDS", "0")  # tests compare exact counts

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

# Tests keep their Redis keys apart from a `make run` on the same server: database 9, or
# KAIKETSU_TEST_REDIS_DB so that two runs on one machine (two checkouts) never share streams.
_test_db = os.environ.get("KAIKETSU_TEST_REDIS_DB", "9")
REDIS_URL = urlsplit(REDIS_URL)._replace(path=f"/{_test_db}").geturl()  # noqa: F405
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
CELERY_BROKER_URL = REDIS_URL

# Workers and the browser's server run in their own processes against the test database, so
# an SQLite test database must be a file, not memory.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # One file per test run, so two runs on one checkout never share (or delete) it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-kaiketsu-{os.getpid()}.sqlite3")}  # noqa: F405

# The browser tests' server outlives flushes of the test database (tests/middleware.py); only
# there, so the query counts the other tests assert stay those of production.
if os.environ.get("KAIKETSU_TEST_WEB_SERVER"):
    MIDDLEWARE = [*MIDDLEWARE, "tests.middleware.ForgetContentTypes"]  # noqa: F405
