"""Thin Celery tasks: the work lives in jobs.py."""

from celery import shared_task
from django.conf import settings

from diagnostics import jobs


@shared_task(
    name="diagnostics.tasks.run_job",
    soft_time_limit=settings.KAIKETSU_JOB_TIME_LIMIT,
    time_limit=settings.KAIKETSU_JOB_TIME_LIMIT + 30,
    acks_late=True,
)
def run_job_task(job_id: int) -> None:
    # Never retried: a fix may have run. A redelivered message finds the job claimed and stops.
    # Time limits are set per job when it is enqueued (a fix may wait for a restart).
    jobs.run_job(job_id)


@shared_task(name="diagnostics.tasks.reap_jobs", soft_time_limit=50, time_limit=60)
def reap_jobs() -> int:
    return jobs.reap_stale_jobs()


@shared_task(name="diagnostics.tasks.test_connection", soft_time_limit=50, time_limit=60)
def test_connection_task(machine_id: int, token: str) -> None:
    # Read-only (`hostname`), so a lost run costs nothing; the page shows the stored answer.
    from diagnostics import connectivity

    connectivity.run(machine_id, token)
