"""Job workflows: start, run, finish, reap. The one place where job state changes.

Views and the CLI call start_diagnosis(); the Celery task calls run_job(); the beat schedule
calls reap_stale_jobs(). Every path ends a job in a terminal state with what arrived kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from diagnostics import live, remote
from diagnostics.models import Article, Check, Job, Machine, Secret, StepResult
from diagnostics.plans import PlanError, PlanStep, build_plan, evaluate, parse_line

log = logging.getLogger(__name__)

MAX_TRANSCRIPT = 200_000
MAX_PASTE = 100_000


class JobRefused(Exception):
    """A job cannot be started (e.g. the article has no automated checks)."""


@dataclass
class _Step:
    plan_step: PlanStep
    check: Check | None


def target_for(machine: Machine) -> remote.Target:
    """Connection details for a machine; the password is decrypted only here, for the call."""
    cred = machine.credential
    return remote.Target(
        name=machine.name,
        address=machine.address,
        port=machine.port,
        scheme=machine.scheme,
        username=cred.username,
        password=cred.get_password(),
        verify_tls=machine.verify_tls and settings.KAIKETSU_WINRM_VERIFY_TLS,
    )


def _diagnosis_steps(article: Article) -> list[_Step]:
    return [
        _Step(PlanStep(f"c{i}", check.kind, check.args), check)
        for i, check in enumerate(article.checks.order_by("position", "id"), start=1)
    ]


def _resolve_secret(name: str) -> str:
    secret = Secret.objects.filter(name=name).first()
    if secret is None:
        raise PlanError(f"the secret {name!r} is not in the secret store")
    return secret.get_value()


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
        pasted_text=pasted_text[:MAX_PASTE],
        match_score=match_score,
    )
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def busy_message(machine: Machine) -> str:
    """What keeps a machine busy, and since when, in words for the employee."""
    active = machine.jobs.filter(status__in=Job.ACTIVE).order_by("created_at").first()
    if active is None:
        return _("%(machine)s is busy with another job. Try again in a moment.") % {
            "machine": machine.name
        }
    since = timezone.localtime(active.started_at or active.created_at)
    return _(
        "%(machine)s is busy: %(kind)s #%(id)s (%(status)s) since %(since)s. "
        "Try again when it has finished."
    ) % {
        "machine": machine.name,
        "kind": active.get_kind_display(),
        "id": active.pk,
        "status": active.get_status_display(),
        "since": since.strftime("%H:%M:%S"),
    }


def create_job(**fields: Any) -> Job:
    """Insert a job; the database's per-machine lock refuses a second active one."""
    try:
        with transaction.atomic():
            return Job.objects.create(**fields)
    except IntegrityError:
        raise JobRefused(busy_message(fields["machine"])) from None


def enqueue(job_id: int) -> None:
    """Hand a job to Celery; if the broker cannot be reached, end the job with that reason."""
    from diagnostics.tasks import run_job_task  # tasks imports jobs

    try:
        run_job_task.apply_async(args=[job_id], retry=True, retry_policy={"max_retries": 3})
    except Exception as exc:  # kombu raises several types for "broker unreachable"
        log.error("job %s could not be queued: %s", job_id, exc)
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.ERROR,
            outcome=Job.Outcome.ERROR,
            error="The job queue (Redis) is unavailable; nothing was run. Try again shortly.",
            finished_at=timezone.now(),
        )


def claim(job_id: int) -> bool:
    """Atomically move a queued job to running. False if it already started (redelivery)."""
    now = timezone.now()
    return bool(
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.RUNNING, started_at=now, heartbeat_at=now
        )
    )


class _Recorder:
    """Receives the host's lines as they arrive: saves each step, then tells open pages."""

    def __init__(self, job: Job, steps: list[_Step]):
        self.job = job
        self.steps = {s.plan_step.id: s for s in steps}
        self.positions = {s.plan_step.id: i for i, s in enumerate(steps)}
        self.fatal = ""
        self.bad_lines: list[str] = []
        self.ended = False

    def __call__(self, line: dict[str, Any]) -> None:
        if "end" in line:
            self.ended = True
            return
        if "fatal" in line:
            self.fatal = str(line["fatal"])[:1000]
            return
        problem = parse_line(line, set(self.steps))
        if problem:
            self.bad_lines.append(problem)
            return
        step = self.steps[line["step"]]
        verdict = "done" if line["ok"] else "error"
        if step.check is not None:
            verdict, _ = evaluate(step.check.expect, line)
        try:
            StepResult.objects.create(
                job=self.job,
                step_id=line["step"],
                position=self.positions[line["step"]],
                kb_check=step.check,
                kind=step.plan_step.kind,
                facts=line.get("facts") or {},
                before=line.get("before"),
                after=line.get("after"),
                changed=line.get("changed"),
                verdict=verdict,
                error=str(line.get("error") or "")[:4000],
                duration_ms=max(0, int(line.get("ms") or 0)),
            )
        except IntegrityError:  # the same step reported twice: keep the first
            self.bad_lines.append(f"step {line['step']} reported twice")
            return
        Job.objects.filter(pk=self.job.pk).update(
            heartbeat_at=timezone.now(), step_count=F("step_count") + 1
        )
        live.publish(self.job.pk, "step", {"step": line["step"]})


def run_job(job_id: int) -> None:
    """Run a queued job to a terminal state. Safe to call twice: only one call claims it."""
    if not claim(job_id):
        log.info("job %s was already claimed; not running it again", job_id)
        return
    job = Job.objects.select_related("machine__credential", "article").get(pk=job_id)
    live.publish(job.pk, "status", {"status": job.status})
    steps = _diagnosis_steps(job.article)
    try:
        to_send, to_show = build_plan(job.pk, [s.plan_step for s in steps], _resolve_secret)
    except PlanError as exc:
        _finish(job, Job.Status.ERROR, Job.Outcome.ERROR, f"The plan could not be built: {exc}")
        return
    job.plan = to_show
    job.save(update_fields=["plan"])

    recorder = _Recorder(job, steps)
    deadline = max(10, settings.KAIKETSU_JOB_TIME_LIMIT - 10)
    try:
        outcome = remote.run_plan(target_for(job.machine), to_send, recorder, deadline_s=deadline)
    except remote.RemoteError as exc:
        _keep_output(job, exc.outcome)  # what arrived before the failure stays readable
        _finish(job, Job.Status.ERROR, Job.Outcome.ERROR, str(exc))
        return
    except SoftTimeLimitExceeded:
        _finish(job, Job.Status.ERROR, Job.Outcome.ERROR, "The job hit its time limit.")
        return
    _keep_output(job, outcome)

    problems = _problems(job, recorder, outcome)
    if problems:
        _finish(job, Job.Status.ERROR, Job.Outcome.ERROR, problems)
        return
    failing = job.steps.exclude(verdict__in=["pass", "done"]).exists()
    _finish(job, Job.Status.DONE, Job.Outcome.PROBLEMS if failing else Job.Outcome.HEALTHY)


def _keep_output(job: Job, outcome: remote.RunOutcome | None) -> None:
    if outcome is None:
        return
    job.transcript = outcome.transcript[:MAX_TRANSCRIPT]
    job.stderr = outcome.stderr[:20_000]
    job.save(update_fields=["transcript", "stderr"])


def _problems(job: Job, recorder: _Recorder, outcome: remote.RunOutcome) -> str:
    name = job.machine.name
    if recorder.fatal:
        return f"{name}: the runner could not run the plan: {recorder.fatal}"
    if outcome.exit_code != 0:
        tail = outcome.stderr.strip()[-300:]
        return f"{name}: the runner exited with code {outcome.exit_code}" + (
            f": {tail}" if tail else ""
        )
    if outcome.garbage or recorder.bad_lines:
        sample = (outcome.garbage or recorder.bad_lines)[0][:120]
        return f"{name}: the host sent output that is not a step result ({sample!r})"
    if not (outcome.complete or recorder.ended):
        return f"{name}: the output ended before the last step"
    return ""


def _finish(job: Job, status: Job.Status, outcome: Job.Outcome, error: str = "") -> None:
    if job.finish(status, outcome, error):
        live.publish(job.pk, "done", {"status": status, "outcome": outcome})


def reap_stale_jobs(now: Any = None) -> int:
    """End running jobs whose worker died (no heartbeat within the limit) as interrupted."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.KAIKETSU_REAP_AFTER)
    reaped = 0
    stale = Job.objects.filter(
        status__in=[Job.Status.RUNNING, Job.Status.RESTARTING], heartbeat_at__lt=cutoff
    )
    for job in stale:
        if job.mark_interrupted("The worker running this job stopped; the steps above arrived."):
            live.publish(job.pk, "done", {"status": job.status, "outcome": job.outcome})
            reaped += 1
    return reaped
