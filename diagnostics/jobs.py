"""The job engine: create, enqueue, claim, execute, record, pause, finish, reap.

It knows jobs, plans and the transport, and nothing of the workflows above it (diagnosis, fix,
roll back, scan): a workflow is a function ``run(job) -> Wait | None`` that the task passes in
(``diagnostics.workflows.run``). One task run is one *turn*: it claims the job by
compare-and-set on ``Job.turn``, lets the workflow act, and either ends there or, when the
workflow returns ``Wait(seconds)``, schedules the next turn. A job that waits (for a machine to
restart, for the employee's own attempt) therefore holds no worker, only a row and a message.

Every path ends a job in a terminal state with what arrived kept; the reaper ends what a dead
worker left behind and re-sends what a lost message left waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from diagnostics import live, remote
from diagnostics.models import AuditEntry, Check, Job, Machine, Secret, StepResult
from diagnostics.plans import PlanError, PlanStep, build_plan, evaluate, parse_line

log = logging.getLogger(__name__)

RUN_TASK = "diagnostics.tasks.run_job"
MAX_TRANSCRIPT = 200_000
MAX_PASTE = 100_000
# A turn's wait is cut into slices no longer than this: a Redis broker holds a delayed message
# unacknowledged in the worker, and the reaper re-sends a turn whose message was lost.
MAX_WAIT_S = 30
HEARTBEAT_S = 15  # a running turn says it is alive this often (KAIKETSU_REAP_AFTER is 4 beats)
Phase = StepResult.Phase


class JobRefused(Exception):
    """A job cannot be started or moved (busy machine, nothing to run, wrong state)."""


@dataclass(frozen=True)
class Wait:
    """Returned by a workflow: run me again in ``seconds``, without holding a worker."""

    seconds: float


Workflow = Callable[[Job], "Wait | None"]


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
    """Connection details for a machine; the password is decrypted only here, for the call.

    Every plan, test and poll goes through here, so this is where the portal refuses to send
    the credential (and with it any secret of the plan) to a target no administrator approved
    or whose identity is unverified: RemoteError kind "untrusted", nothing contacted.
    """
    refusal = machine.credential_refusal()
    if refusal:
        raise remote.RemoteError("untrusted", refusal)
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


def _resolve_secret(name: str) -> str:
    secret = Secret.objects.filter(name=name).first()
    if secret is None:
        raise PlanError(f"the secret {name!r} is not in the secret store")
    return secret.get_value()


# --- creating and queueing -------------------------------------------------------------------


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
    if "pasted_text" in fields:  # PostgreSQL refuses NUL; a paste is never longer than this
        fields["pasted_text"] = fields["pasted_text"].replace("\x00", "")[:MAX_PASTE]
    try:
        with transaction.atomic():
            job = Job.objects.create(**fields)
    except IntegrityError:
        raise JobRefused(busy_message(fields["machine"])) from None
    # Ids restart when a database is recreated while Redis keeps streams for a day: a new
    # job must never replay an old job's events.
    live.discard(job.pk)
    return job


def enqueue(job_id: int) -> None:
    """Queue the first turn of a queued job (new, approved or resumed).

    Does nothing for a job that is not queued (its turn is already under way): only the
    engine schedules later turns.
    """
    job = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).only("turn").first()
    if job is not None:
        _send(job_id, job.turn, 0, only_if=Q(status=Job.Status.QUEUED))


def _send(job_id: int, turn: int, countdown: float, only_if: Q | None = None) -> bool:
    """Mark turn ``turn`` due and send its message; False if the turn moved on meanwhile.

    The message carries the turn it may claim and the claim needs the turn marked due, so a
    duplicate (a redelivery, the reaper resending a lost turn) never runs a job twice.
    """
    wake = timezone.now() + timedelta(seconds=countdown)
    if not Job.objects.filter(only_if or Q(), pk=job_id, turn=turn).update(wake_at=wake):
        return False
    limit = settings.KAIKETSU_JOB_TIME_LIMIT
    try:
        current_app.send_task(
            RUN_TASK,
            args=[job_id, turn],
            countdown=countdown or None,
            soft_time_limit=limit,
            time_limit=limit + 30,
            retry=True,
            retry_policy={"max_retries": 3},
        )
    except Exception as exc:  # kombu raises several types for "broker unreachable"
        log.error("job %s turn %s could not be queued: %s", job_id, turn, exc)
        job = Job.objects.get(pk=job_id)
        if turn == 0 and job.status == Job.Status.QUEUED:  # nothing ran yet: say so now
            with in_language(job):
                reason = _(
                    "The job queue (Redis) is unavailable; nothing was run. Try again shortly."
                )
            finish(job, Job.Status.ERROR, Job.Outcome.ERROR, reason)
        # A job already under way keeps its wake_at: the reaper sends its turn again.
    return True


def claim(job_id: int, turn: int) -> bool:
    """Take turn ``turn`` of an active job, atomically: False if it is taken, not due, or the
    job ended.

    The first turn moves the job from queued to running; later turns keep its status (a job
    restarting its machine stays "restarting" while the workflow polls).
    """
    now = timezone.now()
    return bool(
        Job.objects.filter(
            pk=job_id, turn=turn, status__in=Job.ACTIVE, wake_at__isnull=False
        ).update(
            turn=F("turn") + 1,
            status=Case(
                When(status=Job.Status.QUEUED, then=Value(Job.Status.RUNNING)),
                default=F("status"),
            ),
            started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
            heartbeat_at=now,
            wake_at=None,
        )
    )


def run_job(job_id: int, turn: int, workflow: Workflow) -> None:
    """One turn of a job: claim it, let the workflow act, then end or schedule the next turn."""
    was = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if not claim(job_id, turn):
        log.info("job %s turn %s was already taken or the job ended; nothing to do", job_id, turn)
        return
    job = Job.objects.select_related("machine__credential", "article", "parent").get(pk=job_id)
    if was == Job.Status.QUEUED:  # later turns keep their status: nothing new to show
        live.publish(job.pk, "status", {"status": job.status})
    with in_language(job), _heartbeat(job.pk):
        try:
            wait = workflow(job)
        except SoftTimeLimitExceeded:
            wait = None
            finish(job, Job.Status.ERROR, Job.Outcome.ERROR, _("The job hit its time limit."))
        except Exception:
            # A bug or a database failure: end the job now, with what arrived kept, rather
            # than leave it "running" for the reaper to find minutes later.
            log.exception("job %s turn %s failed", job.pk, turn)
            wait = None
            finish(
                job,
                Job.Status.ERROR,
                Job.Outcome.ERROR,
                _("The portal failed while running this job; the steps above are what arrived."),
            )
    if wait is not None and not job.is_finished:
        Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
        _send(job.pk, job.turn, countdown=min(max(wait.seconds, 0.2), MAX_WAIT_S))


@contextmanager
def _heartbeat(job_id: int) -> Iterator[None]:
    """Say "this turn is alive" every HEARTBEAT_S while it runs, however long a step takes.

    A worker that dies (killed, machine gone) stops beating, and the reaper ends its job
    after KAIKETSU_REAP_AFTER seconds instead of after the longest possible turn.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            Job.objects.filter(pk=job_id, status__in=Job.ACTIVE).update(heartbeat_at=timezone.now())
            connection.close()  # one connection per beat, not one held per running turn

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def in_language(job: Job) -> translation.override:
    """Write what the job stores (notes, errors) in the language of who started it."""
    return translation.override(job.language or settings.LANGUAGE_CODE)


# --- executing a plan ----------------------------------------------------------------------------


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
                cannot=line.get("cannot"),  # parse_line checked its reason
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
    """Run steps on the job's machine as ONE WinRM command; '' or what went wrong, in words.

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
        "untrusted": _("The portal did not contact %(m)s, to keep its credential safe."),
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
    """Why a plan that ran did not report properly, in the job's language ('' when it did)."""
    name = job.machine.name
    if recorder.fatal:
        return _("%(m)s: the runner could not run the plan: %(reason)s") % {
            "m": name,
            "reason": recorder.fatal,
        }
    if outcome.garbage or recorder.bad_lines:
        sample = (outcome.garbage or recorder.bad_lines)[0][:120]
        return _("%(m)s: the host sent output that is not a step result (%(sample)s)") % {
            "m": name,
            "sample": repr(sample),
        }
    if not (outcome.complete or recorder.ended):
        return _("%(m)s: the output ended before the last step") % {"m": name}
    return ""


# --- ending --------------------------------------------------------------------------------------


def finish(job: Job, status: Job.Status, outcome: Job.Outcome, error: str = "") -> None:
    """End a job once, and tell its open pages."""
    if job.finish(status, outcome, error):
        live.publish(job.pk, "done", {"status": status, "outcome": outcome})


def cancel(job: Job, user: Any) -> None:
    """The helpdesk stops a job no turn is running (queued, waiting for a restart or for the
    employee): it ends as cancelled, the machine is free, and a late turn finds nothing to do
    (``claim`` wants an active job). Refused, with the reason, for any other state."""
    with in_language(job):
        reason = _("Cancelled by %(user)s before its next step.") % {"user": user.get_username()}
    if not job.cancel(reason):
        job.refresh_from_db(fields=["status"])
        raise JobRefused(
            _("Job #%(id)s is %(status)s: only a queued or waiting job can be cancelled.")
            % {"id": job.pk, "status": job.get_status_display()}
        )
    AuditEntry.objects.create(
        actor=user, action=AuditEntry.Action.CANCELLED, job=job, machine_id=job.machine_id
    )
    live.publish(job.pk, "done", {"status": job.status, "outcome": job.outcome})


def turn_lost(job_id: int, turn: int, why: str) -> bool:
    """Celery saw turn ``turn`` die with its process (a pool child killed, a hard time limit):
    end the job now rather than when the reaper notices the silence. Only if that turn is
    still the job's latest and running, so a turn that had handed over does nothing."""
    job = Job.objects.filter(
        pk=job_id, turn=turn + 1, wake_at__isnull=True, status__in=Job.ACTIVE
    ).first()
    if job is None:
        return False
    with in_language(job):
        reason = _("The worker running this job stopped; the steps above are what arrived.")
    log.warning("job %s turn %s was lost with its worker process: %s", job_id, turn, why)
    if job.mark_interrupted(reason):
        live.publish(job.pk, "done", {"status": job.status, "outcome": job.outcome})
        return True
    return False


def reap_stale_jobs(now: Any = None) -> int:
    """Tidy what dead workers and lost messages left behind; returns how many jobs it touched.

    - A running job with no heartbeat for KAIKETSU_REAP_AFTER seconds lost its worker
      mid-turn: it ends as interrupted, with what arrived kept.
    - A queued or paused job whose next turn is overdue by KAIKETSU_RESEND_AFTER seconds lost
      its message (a worker killed while holding it, Redis restarted without its data): the
      turn is sent again. A duplicate is harmless: only one message can claim a turn.
    - A job queued that long ago whose first message was never sent (the web process died
      between its commit and the send) is sent now, so it cannot hold its machine forever.
    """
    now = now or timezone.now()
    touched = 0
    overdue = now - timedelta(seconds=settings.KAIKETSU_RESEND_AFTER)
    late = Job.objects.filter(status__in=Job.ACTIVE, wake_at__lt=overdue)
    for job_id, turn in late.values_list("pk", "turn"):
        if _send(job_id, turn, 0, only_if=Q(wake_at__lt=overdue)):
            log.warning("job %s: turn %s was overdue; sent it again", job_id, turn)
            touched += 1
    unsent = Q(status=Job.Status.QUEUED, wake_at__isnull=True)
    never_sent = Job.objects.filter(unsent, turn=0, created_at__lt=overdue)
    for job_id in never_sent.values_list("pk", flat=True):
        if _send(job_id, 0, 0, only_if=unsent):
            log.warning("job %s: its first turn was never sent; sent it now", job_id)
            touched += 1
    cutoff = now - timedelta(seconds=settings.KAIKETSU_REAP_AFTER)
    stale = Job.objects.filter(
        status__in=Job.ACTIVE, wake_at__isnull=True, heartbeat_at__lt=cutoff
    ).exclude(status=Job.Status.QUEUED)
    for job in stale:
        with in_language(job):
            reason = _("The worker running this job stopped; the steps above are what arrived.")
        if job.mark_interrupted(reason):
            live.publish(job.pk, "done", {"status": job.status, "outcome": job.outcome})
            touched += 1
    return touched
