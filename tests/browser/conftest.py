"""Browser fixtures: uvicorn serving the portal on a free port, and Debian's Chromium."""

import email
import email.policy
import os

import pytest

from scripts import services
from tests.conftest import _child_env, child_database_url

# Playwright's sync API keeps an event loop in this thread; the ORM calls in these tests are
# ordinary blocking calls in a test process, not in an async view.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def log_in(page, web_server: str, username: str, password: str) -> None:
    """Log in through the login page and wait until the portal's home has loaded."""
    page.goto(web_server + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    page.wait_for_url(web_server + "/")


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory):
    """Where the web server's e-mails land: Django's file backend, one file per connection."""
    return tmp_path_factory.mktemp("mail")


def sent_mail(directory) -> list:
    """Every e-mail the web server wrote to ``directory``, parsed, oldest first."""
    messages = []
    for path in sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                messages.append(email.message_from_bytes(chunk, policy=email.policy.default))
    return messages


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker, celery_queue, tmp_path_factory, mail_dir):
    """uvicorn with the ASGI app (SSE needs it) against the test database."""
    env = _child_env(
        DATABASE_URL=child_database_url(),
        KAIKETSU_QUEUE=celery_queue,
        EMAIL_URL=f"filemail:///{mail_dir}",  # an absolute path after the scheme's three
        KAIKETSU_TEST_WEB_SERVER="1",  # content types read afresh (tests/middleware.py)
    )
    log_path = tmp_path_factory.mktemp("web") / "web.log"
    web, url = services.start_web(env, log_path=log_path, access_log=False, timeout=30)
    yield url
    web.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            browser = services.launch_chromium(pw)
        except services.ServiceError as error:
            pytest.fail(str(error))
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="ja-JP", viewport={"width": 1100, "height": 900})
    page = context.new_page()
    yield page
    context.close()
