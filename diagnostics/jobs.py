"""Job workflows: start, run, finish, reap. The one place where job state changes.

Views and the CLI call start_diagnosis() (and fixes.request_fix() & co.); the Celery task
calls run_job(); the beat schedule calls reap_stale_jobs(). Every path ends a job in a
terminal state with what arrived kept. Fix, verification and roll-back workflows live in
fixes.py and use the machinery here (execute(), finish()).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from diagnostics import live, remote
from diagnostics.models import Article, Check, Job, Machine, Secret, StepResult
from diagnostics.plans import PlanError, PlanStep, build_plan, evaluate, parse_line

log = logging.getLogger(__name__)

MAX_TRANSCRIPT = 200_000
MAX_PASTE = 100_000
Phase = StepResult.Phase


class JobRefused(Exception):
    """A job cannot be started or moved (busy machine, nothing to run, wrong state)."""


@dataclass
class Step:
    """One planned step: what runs on the host, where it shows, and how it is judged."""

    id: str
    kind: str
    args: dict[str, Any]
    phase: str
    title: str
    check: Check | None = None
    expect: list[dict[str, Any]] | None = field(default=None)  # check kinds only


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


def check_steps(article: Article, prefix: str = "c", phase: str = Phase.CHECK) -> list[Step]:
    """The article's checks, in order, as steps with ids c1, c2, ... (or v1, v2, ...).

    A diagnosis always reads the event log: whether the VPN fails *now* decides whether any
    fix may be offered (issue #9), so an article without an evidence check gets one.
    """
    from diagnostics import assessment  # assessment reads the models jobs writes

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


def planned_steps(job: Job) -> list[Step]:
    """Every step a job will run, known before it runs (the page shows them as pending)."""
    if job.kind == Job.Kind.DIAGNOSE:
        return check_steps(job.article)
    from diagnostics import fixes  # fixes builds on this module

    return fixes.planned_steps(job)


def _resolve_secret(name: str) -> str:
    secret = Secret.objects.filter(name=name).first()
    if secret is None:
        raise PlanError(f"the secret {name!r} is not in the secret store")
    return secret.get_value()


# --- starting ------------------------------------------------------------------------------


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
        pasted_text=pasted_text.replace("\x00", "")[:MAX_PASTE],  # PostgreSQL refuses NUL
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
    fields.setdefault("language", translation.get_language() or settings.LANGUAGE_CODE)
    try:
        with transaction.atomic():
            job = Job.objects.create(**fields)
    except IntegrityError:
        raise JobRefused(busy_message(fields["machine"])) from None
    # Ids restart when a database is recreated while Redis keeps streams for a day: a new
    # job must never replay an old job's events.
    live.discard(job.pk)
    return job


def time_limit(job: Job) -> int:
    """Seconds the task may take: a fix may also wait for the machine to restart and verify."""
    base = settings.KAIKETSU_JOB_TIME_LIMIT
    if job.kind == Job.Kind.DIAGNOSE:
        return base
    delay = (job.restart_delay_min or 0) * 60
    return 3 * base + delay + settings.KAIKETSU_RESTART_TIMEOUT


def enqueue(job_id: int) -> None:
    """Hand a job to Celery; if the broker cannot be reached, end the job with that reason."""
    from diagnostics.tasks import run_job_task  # tasks imports jobs

    job = Job.objects.get(pk=job_id)
    limit = time_limit(job)
    try:
        run_job_task.apply_async(
            args=[job_id],
            soft_time_limit=limit,
            time_limit=limit + 30,
            retry=True,
            retry_policy={"max_retries": 3},
        )
    except Exception as exc:  # kombu raises several types for "broker unreachable"
        log.error("job %s could not be queued: %s", job_id, exc)
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.ERROR,
            outcome=Job.Outcome.ERROR,
            error=_("The job queue (Redis) is unavailable; nothing was run. Try again shortly."),
            finished_at=timezone.now(),
        )


def claim(job_id: int) -> bool:
    """Atomically move a queued job to running. False if it already started (redelivery)."""
    now = timezone.now()
    return bool(
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.RUNNING,
            started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
            heartbeat_at=now,
        )
    )


# --- running -------------------------------------------------------------------------------


class _Recorder:
    """Receives the host's lines as they arrive: saves each step, then tells open pages."""

    def __init__(self, job: Job, steps: list[Step], first_position: int):
        self.job = job
        self.steps = {s.id: s for s in steps}
        self.known_steps = set(self.steps)
        self.positions = {s.id: first_position + i for i, s in enumerate(steps)}
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
        problem = parse_line(line, self.known_steps)
        if problem:
            self.bad_lines.append(problem)
            return
        step = self.steps[line["step"]]
        verdict = "done" if line["ok"] else "error"
        if step.expect is not None:
            verdict, _failed = evaluate(step.expect, line)
        try:
            StepResult.objects.create(
                job=self.job,
                step_id=step.id,
                phase=step.phase,
                position=self.positions[step.id],
                kb_check=step.check,
                kind=step.kind,
                facts=line.get("facts") or {},
                before=line.get("before"),
                after=line.get("after"),
                changed=line.get("changed"),
                verdict=verdict,
                error=str(line.get("error") or "")[:4000],
                duration_ms=max(0, int(line.get("ms") or 0)),
            )
        except IntegrityError:  # the same step reported twice: keep the first
            self.bad_lines.append(f"step {step.id} reported twice")
            return
        except DataError:  # e.g. a NUL character, which PostgreSQL cannot store
            self.bad_lines.append(f"step {step.id} reported a value that cannot be stored")
            return
        Job.objects.filter(pk=self.job.pk).update(
            heartbeat_at=timezone.now(), step_count=F("step_count") + 1
        )
        live.publish(self.job.pk, "step", {"step": step.id})


def execute(job: Job, steps: list[Step]) -> str:
    """Run steps on the job's machine as ONE WinRM command; '' or what went wrong.

    Each result is saved as it arrives; the plan (secrets masked) and the bounded output are
    added to the job, whatever happens.
    """
    plan_steps = [PlanStep(s.id, s.kind, s.args) for s in steps]
    try:
        to_send, to_show = build_plan(job.pk, plan_steps, _resolve_secret)
    except PlanError as exc:
        return _("The plan could not be built: %(error)s") % {"error": exc}
    job.plan = {**to_show, "steps": [*(job.plan or {}).get("steps", []), *to_show["steps"]]}
    job.save(update_fields=["plan"])

    recorder = _Recorder(job, steps, first_position=job.steps.count())
    deadline = max(10, settings.KAIKETSU_JOB_TIME_LIMIT - 10)
    try:
        outcome = remote.run_plan(target_for(job.machine), to_send, recorder, deadline_s=deadline)
    except remote.RemoteError as exc:
        _keep_output(job, exc.outcome)  # what arrived before the failure stays readable
        return f"{remote_headline(exc.kind, job.machine.name)}\n{exc}"
    _keep_output(job, outcome)
    return _problems(job, recorder, outcome)


def remote_headline(kind: str, machine: str) -> str:
    """One sentence in the reader's language for why the machine could not do the job."""
    texts = {
        "refused": _("%(m)s could not be reached: is it switched on and on the network?"),
        "timeout": _("%(m)s stopped answering before the job finished."),
        "auth": _("%(m)s refused the portal's account: its credentials need updating."),
        "tls": _("%(m)s's certificate could not be verified."),
        "protocol": _("The connection to %(m)s broke off."),
        "garbage": _("%(m)s sent output the portal does not understand."),
        "exit": _("The runner on %(m)s stopped with an error."),
    }
    return texts.get(kind, _("%(m)s could not run the job.")) % {"m": machine}


def _keep_output(job: Job, outcome: remote.RunOutcome | None) -> None:
    if outcome is None:
        return
    sep = "\n" if job.transcript else ""
    # A host may print anything, NUL included, which PostgreSQL text cannot hold.
    transcript = outcome.transcript.replace("\x00", "\\0")
    job.transcript = (job.transcript + sep + transcript)[-MAX_TRANSCRIPT:]
    job.stderr = (job.stderr + sep + outcome.stderr.replace("\x00", "\\0"))[-20_000:]
    job.save(update_fields=["transcript", "stderr"])


def _problems(job: Job, recorder: _Recorder, outcome: remote.RunOutcome) -> str:
    name = job.machine.name
    if recorder.fatal:
        return f"{name}: the runner could not run the plan: {recorder.fatal}"
    if outcome.garbage or recorder.bad_lines:
        sample = (outcome.garbage or recorder.bad_lines)[0][:120]
        return f"{name}: the host sent output that is not a step result ({sample!r})"
    if not (outcome.complete or recorder.ended):
        return f"{name}: the output ended before the last step"
    return ""


def run_job(job_id: int) -> None:
    """Run a queued job to its next resting state. Only one call can claim a job."""
    if not claim(job_id):
        log.info("job %s was already claimed; not running it again", job_id)
        return
    job = Job.objects.select_related("machine__credential", "article", "parent").get(pk=job_id)
    live.publish(job.pk, "status", {"status": job.status})
    with in_language(job):
        try:
            if job.kind == Job.Kind.DIAGNOSE:
                _run_diagnosis(job)
            else:
                from diagnostics import fixes

                fixes.run(job)
        except SoftTimeLimitExceeded:
            finish(job, Job.Status.ERROR, Job.Outcome.ERROR, _("The job hit its time limit."))


def in_language(job: Job) -> translation.override:
    """Write what the job stores (notes, errors) in the language of who started it."""
    return translation.override(job.language or settings.LANGUAGE_CODE)


def _run_diagnosis(job: Job) -> None:
    error = execute(job, check_steps(job.article))
    if error:
        finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
        return
    from diagnostics import assessment

    steps = list(job.steps.filter(phase=Phase.CHECK).select_related("kb_check__fix"))
    found = assessment.assess_steps(job.article, steps)
    job.note = assessment.verdict_text(found)
    job.save(update_fields=["note"])
    healthy = found.outcome == Job.Outcome.HEALTHY
    finish(job, Job.Status.DONE, Job.Outcome.HEALTHY if healthy else Job.Outcome.PROBLEMS)


def finish(job: Job, status: Job.Status, outcome: Job.Outcome, error: str = "") -> None:
    if job.finish(status, outcome, error):
        live.publish(job.pk, "done", {"status": status, "outcome": outcome})


def reap_stale_jobs(now: Any = None) -> int:
    """End active jobs whose worker died (no heartbeat within the limit) as interrupted."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.KAIKETSU_REAP_AFTER)
    reaped = 0
    stale = Job.objects.filter(
        status__in=[Job.Status.RUNNING, Job.Status.RESTARTING], heartbeat_at__lt=cutoff
    )
    for job in stale:
        with in_language(job):
            reason = _("The worker running this job stopped; the steps above are what arrived.")
        if job.mark_interrupted(reason):
            live.publish(job.pk, "done", {"status": job.status, "outcome": job.outcome})
            reaped += 1
    return reaped
