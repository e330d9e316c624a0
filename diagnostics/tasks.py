"""Thin Celery tasks: the engine (jobs.py) runs a turn with the workflow the job's kind names.

Queues: every task here goes to the default queue (KAIKETSU_QUEUE), served by a worker on a
thread pool, because each one waits on the network (a WinRM call, a poll) rather than the CPU.
CPU-heavy work (the KB's matcher index, CSV import and export) runs in the web process that
asks for it and is not a task.
"""

from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure
from django.conf import settings

from diagnostics import jobs, workflows
from diagnostics.workflows import connection, scan


@shared_task(
    name=jobs.RUN_TASK,
    soft_time_limit=settings.KAIKETSU_JOB_TIME_LIMIT,
    time_limit=settings.KAIKETSU_JOB_TIME_LIMIT + 30,
    acks_late=True,
)
def run_job_task(job_id: int, turn: int = 0) -> None:
    # Never retried: a fix may have run. A redelivered message finds its turn taken and stops.
    jobs.run_job(job_id, turn, workflows.run)


@task_failure.connect(sender=run_job_task)
def _turn_lost(sender=None, exception=None, args=None, **kwargs) -> None:
    # Celery's parent process knows at once when a pool child dies under a turn (prefork's
    # WorkerLostError) or a hard time limit kills it; the reaper is the net for the rest.
    if isinstance(exception, WorkerLostError | TimeLimitExceeded) and args:
        jobs.turn_lost(int(args[0]), int(args[1]) if len(args) > 1 else 0, repr(exception))


@shared_task(name="diagnostics.tasks.reap_jobs", soft_time_limit=50, time_limit=60)
def reap_jobs() -> int:
    return jobs.reap_stale_jobs()


@shared_task(name=scan.TICK_TASK, soft_time_limit=50, time_limit=60)
def scan_tick(scan_id: int) -> None:
    scan.tick(scan_id)


@shared_task(name="diagnostics.tasks.tick_scans", soft_time_limit=50, time_limit=60)
def tick_scans() -> int:
    return scan.tick_all()


@shared_task(name="diagnostics.tasks.test_connection", soft_time_limit=50, time_limit=60)
def test_connection_task(machine_id: int, token: str) -> None:
    # Read-only (`hostname`), so a lost run costs nothing; the page shows the stored answer.
    connection.run(machine_id, token)
