"""`manage.py diagnose` with a real worker, with none on its queue, and with Redis gone."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from django.core.management import CommandError, call_command

from diagnostics.models import Job
from portal.celery import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _diagnose(machine, article, *args: str) -> str:
    out = io.StringIO()
    call_command(
        "diagnose", "--machine", machine.name, "--article", article.slug, *args, stdout=out
    )
    return out.getvalue()


def test_diagnose_runs_through_the_worker_that_consumes_its_queue(
    demo_machines, seed_article, use_worker_queue
):
    result = json.loads(_diagnose(demo_machines["demo-nat-t"], seed_article, "--json"))
    assert (result["status"], result["outcome"]) == ("done", "problems")


def test_diagnose_says_within_seconds_that_no_worker_consumes_its_queue(
    demo_machines, seed_article, worker
):
    nobody = f"kaiketsu-nobody-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = nobody  # the test worker listens on another queue
    started = time.monotonic()
    try:
        with pytest.raises(CommandError) as raised:
            _diagnose(demo_machines["demo-nat-t"], seed_article)
    finally:
        app.conf.task_default_queue = "kaiketsu"
    assert time.monotonic() - started < 15  # seconds, not the job's six minutes
    message = str(raised.value)
    assert f"no Celery worker consumes the queue '{nobody}'" in message
    assert app.conf.broker_url in message  # the Redis it asked (no password in tests)
    assert not Job.objects.exists()  # no job left waiting for nobody


def test_diagnose_says_at_once_when_its_redis_does_not_answer(demo_machines, seed_article):
    original = app.conf.broker_url
    app.conf.broker_url = "redis://:not-shown@127.0.0.1:1/0"  # nothing listens there
    started = time.monotonic()
    try:
        with pytest.raises(CommandError) as raised:
            _diagnose(demo_machines["demo-nat-t"], seed_article)
    finally:
        app.conf.broker_url = original
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "Redis at redis://:**@127.0.0.1:1/0 does not answer" in message
    assert "not-shown" not in message
    assert not Job.objects.exists()
