"""The diagnosis workflow: an article's checks, run once on one machine, judged in the portal."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from diagnostics.jobs import JobRefused, Step, create_job, enqueue, execute, finish
from diagnostics.models import Article, Job, Machine, StepResult

Phase = StepResult.Phase


def check_steps(article: Article, prefix: str = "c", phase: str = Phase.CHECK) -> list[Step]:
    """The article's checks, in order, as steps with ids c1, c2, ... (or v1, v2, ...)."""
    return [
        Step(
            f"{prefix}{i}",
            check.kind,
            check.args,
            phase,
            check.tr("title"),
            check=check,
            expect=check.expect,
        )
        for i, check in enumerate(
            article.checks.select_related("fix").order_by("position", "id"), start=1
        )
    ]


def start_diagnosis(
    user: Any,
    machine: Machine,
    article: Article,
    pasted_text: str = "",
    match_score: float | None = None,
) -> Job:
    """Create a queued diagnosis job and enqueue it once the transaction commits."""
    if not article.checks.exists():
        raise JobRefused(_("This article has no automated checks."))
    job = create_job(
        user=user,
        machine=machine,
        article=article,
        kind=Job.Kind.DIAGNOSE,
        pasted_text=pasted_text,
        match_score=match_score,
    )
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def run(job: Job) -> None:
    """Run the checks in one command; the outcome is healthy only when every check passed."""
    error = execute(job, check_steps(job.article))
    if error:
        finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
        return
    failing = job.steps.exclude(verdict__in=["pass", "done"]).exists()
    finish(job, Job.Status.DONE, Job.Outcome.PROBLEMS if failing else Job.Outcome.HEALTHY)
