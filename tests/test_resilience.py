"""What happens when things die: the worker mid-job, Redis, a hung host. Real processes only."""

import os
import time

import pytest
from django.conf import settings as django_settings
from kombu import pools as kombu_pools

from diagnostics import jobs, live
from diagnostics.models import Job
from diagnostics.workflows.diagnosis import start_diagnosis
from portal.celery import app
from tests.conftest import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_mid_job_leaves_an_interrupted_job_with_what_arrived(
    demo_machines, seed_article, employee, settings, tmp_path
):
    queue = f"kaiketsu-kill-{os.getpid()}"
    doomed = start_worker(queue, tmp_path / "worker.log")
    try:
        app.conf.task_default_queue = queue
        job = start_diagnosis(employee, demo_machines["demo-healthy"], seed_article)
        jobs.enqueue(job.pk)
        deadline = time.monotonic() + 30
        while job.steps.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        doomed.kill()  # SIGKILL to the worker and its pool, mid-job
        doomed.wait(10)
    finally:
        app.conf.task_default_queue = "kaiketsu"
        doomed.stop()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # nobody is left to finish it...
    arrived = job.steps.count()

    settings.KAIKETSU_REAP_AFTER = 1
    time.sleep(1.5)
    assert jobs.reap_stale_jobs() == 1  # ...until the reaper does

    job.refresh_from_db()
    assert (job.status, job.outcome) == (Job.Status.INTERRUPTED, Job.Outcome.ERROR)
    assert 2 <= arrived < seed_article.checks.count()
    assert job.steps.count() == arrived  # what arrived is kept
    assert job.finished_at is not None
    jobs.create_job(user=employee, machine=job.machine, article=seed_article)  # lock released


def test_when_redis_is_gone_a_new_job_ends_at_once_with_a_clear_message(
    db, employee, demo_machines, seed_article
):
    job = start_diagnosis(employee, demo_machines["demo-healthy"], seed_article)
    original = app.conf.broker_url
    _reset_broker_connections()
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        jobs.enqueue(job.pk)
    finally:
        app.conf.broker_url = original
        _reset_broker_connections()

    job.refresh_from_db()
    assert (job.status, job.outcome) == (Job.Status.ERROR, Job.Outcome.ERROR)
    assert "Redis" in job.error
    jobs.create_job(user=employee, machine=job.machine, article=seed_article)  # not locked


def test_live_events_are_skipped_not_fatal_while_redis_is_gone(settings):
    live._client.cache_clear()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        assert live.publish(1, "step", {"step": "c1"}) is None
        assert live.last_id(1) == "0"
    finally:
        settings.REDIS_URL = django_settings.REDIS_URL
        live._client.cache_clear()


def _reset_broker_connections() -> None:
    """Make the next publish connect afresh to app.conf.broker_url."""
    app.pool.force_close_all()
    app._pool = None
    # kombu keeps producer pools per connection, process-wide: they hold the closed pool.
    kombu_pools.reset()
    app.amqp._producer_pool = None
    app.amqp._producer_pool = None
