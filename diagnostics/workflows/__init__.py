"""The workflows above the job engine, and the one place that dispatches a job to its workflow.

Adding a job kind means: a module here with ``run(job) -> jobs.Wait | None`` (and
``planned_steps(job)`` for the page's pending rows), and one line in each table below.
"""

from __future__ import annotations

from diagnostics.jobs import Step, Wait
from diagnostics.models import Job
from diagnostics.workflows import diagnosis, fixes

_RUN = {
    Job.Kind.DIAGNOSE: diagnosis.run,
    Job.Kind.FIX: fixes.run,
    Job.Kind.ROLLBACK: fixes.run,
}


def run(job: Job) -> Wait | None:
    """Take a job one turn further with its kind's workflow."""
    return _RUN[job.kind](job)


def planned_steps(job: Job) -> list[Step]:
    """Every step a job will run, known before it runs (the page shows them as pending)."""
    if job.kind == Job.Kind.DIAGNOSE:
        return diagnosis.check_steps(job.article)
    return fixes.planned_steps(job)
