"""Many jobs in flight at once, on two worker processes: same results, no job run twice.

Real processes only: two Celery workers (thread pools) on one queue, the demo fleet in winsim.
"""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from diagnostics import jobs
from diagnostics.models import Job
from portal.celery import app
from tests.conftest import start_job, start_worker, wait_for_job
from tests.test_jobs import EXPECTED_FAILURES

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def second_worker(celery_queue, worker, tmp_path):
    """Another worker process on the test queue, as a second machine would run."""
    second = start_worker(celery_queue, tmp_path / "worker2.log")
    yield second
    second.stop(timeout=20)


def _failed_checks(job: Job) -> set[str]:
    return {s.kb_check.key for s in job.steps.select_related("kb_check") if s.verdict != "pass"}


def test_jobs_in_flight_at_once_on_two_workers_give_the_one_at_a_time_results(
    demo_machines, seed_article, employee, use_worker_queue, second_worker
):
    hung = start_job(demo_machines["demo-hang"], seed_article, employee)
    started = {h: start_job(demo_machines[h], seed_article, employee) for h in EXPECTED_FAILURES}
    for job in started.values():
        jobs.enqueue(job.pk)  # a second message for the same turn: it must not run twice

    finished = {h: wait_for_job(j, timeout=60) for h, j in started.items()}

    for host, job in finished.items():
        assert job.status == Job.Status.DONE, (host, job.error)
        assert _failed_checks(job) == EXPECTED_FAILURES[host], host
        assert job.step_count == seed_article.checks.count() == job.steps.count(), host
        assert job.turn == 1, host  # one turn taken, by one of the two workers
    # The hung host delays only its own job: all the others ended while it still waited.
    hung.refresh_from_db()
    assert not hung.is_finished or hung.finished_at > max(j.finished_at for j in finished.values())
    hung = wait_for_job(hung, timeout=90)
    assert hung.status == Job.Status.ERROR and "demo-hang" in hung.error


def test_a_worker_killed_with_several_jobs_in_flight_leaves_none_locked(
    demo_machines, seed_article, employee, settings, tmp_path
):
    queue = f"kaiketsu-kill-many-{os.getpid()}"
    hosts = ["demo-healthy", "demo-nat-t", "demo-psk-mismatch", "demo-dns"]
    doomed = start_worker(queue, tmp_path / "worker.log")
    try:
        app.conf.task_default_queue = queue
        started = [start_job(demo_machines[h], seed_article, employee) for h in hosts]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(j.steps.exists() for j in started):
            time.sleep(0.05)
        doomed.kill()  # SIGKILL to the worker and all its threads, mid-job
        doomed.wait(10)
    finally:
        app.conf.task_default_queue = "kaiketsu"
        doomed.stop()

    settings.KAIKETSU_REAP_AFTER = 1
    time.sleep(1.5)
    assert jobs.reap_stale_jobs() == len(hosts)

    for job in started:
        job.refresh_from_db()
        assert job.status == Job.Status.INTERRUPTED and job.steps.exists()
        jobs.create_job(user=employee, machine=job.machine, article=seed_article)  # lock free


def test_a_lost_message_is_sent_again_and_the_job_runs_once(
    demo_machines, seed_article, employee, use_worker_queue, settings
):
    job = jobs.create_job(
        user=employee, machine=demo_machines["demo-healthy"], article=seed_article
    )
    # As if its message had been sent long ago and lost with a Redis restart.
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now() - timedelta(hours=1))
    settings.KAIKETSU_RESEND_AFTER = 60

    assert jobs.reap_stale_jobs() == 1
    assert jobs.reap_stale_jobs() == 0  # sent once: its turn is no longer overdue

    job = wait_for_job(job)
    assert job.status == Job.Status.DONE and job.turn == 1
