"""The diagnosis workflow: an article's checks, run once on one machine, judged in the portal."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from diagnostics import assessment
from diagnostics.jobs import JobRefused, Step, create_job, enqueue, execute, finish
from diagnostics.models import Article, Job, Machine, StepResult

Phase = StepResult.Phase


def check_steps(article: Article, prefix: str = "c", phase: str = Phase.CHECK) -> list[Step]:
    """The article's checks, in order, as steps with ids c1, c2, ... (or v1, v2, ...).

    A diagnosis always reads the event log: whether the VPN fails *now* decides whether any
    fix may be offered (issue #9), so an article without an evidence check gets one.
    """
    steps = [
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
    if phase == Phase.CHECK and assessment.needs_evidence_step(article):
        steps.append(
            Step(
                f"{prefix}-{assessment.EVIDENCE_STEP_ID}",
                "vpn_events",
                dict(assessment.EVIDENCE_ARGS),
                phase,
                _("Your recent VPN connection attempts (event log)"),
                expect=[],
            )
        )
    return steps


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
    """Run the checks in one command; judge them against the evidence (issue #9).

    The outcome is healthy when nothing fails now and nothing is left that cannot be told;
    the verdict in words (evidence first) becomes the job's note.
    """
    error = execute(job, check_steps(job.article))
    if error:
        finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
        return
    # A check that could not tell (error, unknown) never counts as healthy (issue #10), and a
    # fix follows only from a proven, current cause (issue #9): plans.assess judges both.
    steps = list(job.steps.filter(phase=Phase.CHECK).select_related("kb_check__fix"))
    found = assessment.assess_steps(job.article, steps)
    job.note = assessment.verdict_text(found)
    job.save(update_fields=["note"])
    healthy = found.outcome == Job.Outcome.HEALTHY
    finish(job, Job.Status.DONE, Job.Outcome.HEALTHY if healthy else Job.Outcome.PROBLEMS)
