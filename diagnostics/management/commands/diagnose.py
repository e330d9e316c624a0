import json
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from diagnostics import access, assessment, jobs
from diagnostics.models import Article, Job, Machine, StepResult
from diagnostics.workflows import fixes
from diagnostics.workflows.diagnosis import start_diagnosis

UNTAKEN_S = 10  # a queued job nobody took this long: ask the workers again


def _queue_and_broker() -> tuple[str, str]:
    from kombu.utils.url import maybe_sanitize_url

    from diagnostics.tasks import run_job_task
    from portal.celery import app

    queue = app.amqp.router.route({}, run_job_task.name)["queue"].name
    return queue, maybe_sanitize_url(app.conf.broker_url)


def _no_worker_message(queue: str, broker: str) -> str:
    return (
        f"no Celery worker consumes the queue {queue!r} on {broker}, so the job would never "
        "start: start the demo (`make run`) or a worker (`celery -A portal worker`) with the "
        "same REDIS_URL and KAIKETSU_QUEUE as this command"
    )


def queue_consumed(waits: tuple[float, ...] = (0.5, 2.0, 5.0)) -> bool | None:
    """Does a running worker consume the jobs' queue? None when no worker answered at all.

    Asks the workers for their queues with a short wait, then longer ones (7.5 s in all).
    Workers that answered, none of them with the queue, are a "no" (a second terminal with
    other settings than the demo). Silence is not: a worker busy with many turns may answer
    late, so the caller starts the job and asks again only if nobody takes it.
    """
    from portal.celery import app

    queue, _broker = _queue_and_broker()
    answered = False
    for wait in waits:
        replies = app.control.inspect(timeout=wait).active_queues() or {}
        if any(q.get("name") == queue for queues in replies.values() for q in queues or ()):
            return True
        # Other workers (another install's queue on the same Redis) may answer first while
        # ours is busy: keep asking for the whole sequence before saying "no".
        answered = answered or bool(replies)
    return False if answered else None


def require_worker() -> None:
    """Raise CommandError if Redis does not answer, or workers answer and none takes our queue.

    The message names the queue and the Redis (password hidden): the usual cause is a second
    terminal with other settings than the running demo, and the job would wait for nobody.
    """
    import redis

    from portal.celery import app

    queue, broker = _queue_and_broker()
    client = redis.Redis.from_url(app.conf.broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise CommandError(
            f"Redis at {broker} does not answer ({exc}): is `make run` (or your Redis) running?"
        ) from None
    finally:
        client.close()
    if queue_consumed() is False:
        raise CommandError(_no_worker_message(queue, broker))


def step_json(step: StepResult, findings: dict[str, str] | None = None) -> dict:
    title = step.kb_check.title_en if step.kb_check else step.kind
    out = {
        "title": title,
        "kind": step.kind,
        "verdict": step.verdict,
        "facts": step.facts,
        "error": step.error,
    }
    if findings is not None and step.kb_check is not None:
        # How the diagnosis judged it (issue #9): proven, suspect, ruled_out, not_applicable,
        # cannot_tell; "evidence" for the event log.
        out["cause"] = findings.get(step.kb_check.key, step.kb_check.role)
    return out


def _outcome(job: Job) -> str:
    if job.status in (Job.Status.WAITING, Job.Status.APPROVAL, Job.Status.DECLINED):
        return "not_fixed"
    return job.outcome if job.status == Job.Status.DONE else "error"


def job_json(job: Job) -> dict:
    """DESIGN.md contract 3: the diagnosis as stored, its evidence and the fixes it offers."""
    found = assessment.assess_job(job)
    findings = {f.key: f.status for f in found.findings} if found else None
    offers = fixes.offered_fixes(job)
    return {
        "job": job.pk,
        "status": job.status,
        "outcome": _outcome(job),
        "error": job.error,
        "note": job.note,
        "steps": [
            step_json(s, findings)
            for s in job.steps.select_related("kb_check").order_by("position")
        ],
        "evidence": found.evidence.as_json() if found else None,
        "fixes_offered": [
            {
                "key": o.fix.key,
                "title": o.fix.title_en,
                "needs_approval": o.fix.needs_approval,
                "needs_restart": o.fix.restart_required,
            }
            for o in offers
        ],
        "fix": None,
    }


def fix_json(job: Job, skipped: list[dict]) -> dict:
    """The ``fix`` object: what a fix job applied, skipped, and each fix step's diff."""
    titles = {s.id: s.title for s in fixes.fix_steps(job)}
    steps = job.steps.filter(phase=StepResult.Phase.FIX).order_by("position")
    return {
        "job": job.pk,
        "status": job.status,
        "outcome": _outcome(job),
        "error": job.error,
        "note": job.note,
        "applied": list(job.fix_keys) if job.steps.filter(phase="fix").exists() else [],
        "skipped": skipped,
        "steps": [
            {
                "title": titles.get(s.step_id, s.kind),
                "kind": s.kind,
                "before": s.before,
                "after": s.after,
                "changed": s.changed,
            }
            for s in steps
        ],
    }


class Command(BaseCommand):
    help = (
        "Diagnose a machine with an article's checks through the same Celery path as the "
        "browser (a worker must be running); waits and prints the steps and the outcome."
    )

    def add_arguments(self, parser):
        parser.add_argument("--machine", required=True, help="machine name")
        parser.add_argument("--article", required=True, help="article slug")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
        parser.add_argument("--fix", action="store_true", help="apply the offered fixes")
        parser.add_argument("--user", help="run as this user (default: the machine's first owner)")
        parser.add_argument("--wait", type=float, default=settings.KAIKETSU_JOB_TIME_LIMIT + 60)

    def handle(self, *args, machine, article, as_json, fix, user, wait, **options):
        target = Machine.objects.filter(name=machine).first()
        if target is None:
            raise CommandError(f"no machine named {machine!r}")
        art = Article.objects.filter(slug=article, status=Article.Status.PUBLISHED).first()
        if art is None:
            raise CommandError(f"no published article {article!r}")
        runner = self._user(user, target)
        if not access.can_act_on_machine(runner, target):
            raise CommandError(f"{runner.get_username()} neither owns {machine} nor is helpdesk")
        self.as_json = as_json
        require_worker()
        try:
            with transaction.atomic():
                job = start_diagnosis(runner, target, art)  # nothing was pasted
        except jobs.JobRefused as exc:
            raise CommandError(str(exc)) from None
        job = self._follow(job, wait)
        self.skipped: list[dict] = []
        fix_job = self._fix(job, runner, wait) if fix else None
        if as_json:
            result = job_json(job)  # the diagnosis' own outcome, never the fix's
            if fix_job is not None:
                result["fix"] = fix_json(fix_job, self.skipped)
            elif self.skipped:  # offered, but nothing this user could apply
                result["fix"] = {
                    "job": None,
                    "status": None,
                    "outcome": "not_fixed",
                    "applied": [],
                    "skipped": self.skipped,
                    "steps": [],
                }
            self.stdout.write(json.dumps(result, ensure_ascii=False))

    def _follow(self, job: Job, wait: float) -> Job:
        """Print each step as it arrives (unless --json) until the job rests."""
        shown: set[str] = set()
        deadline = time.monotonic() + wait
        ask_after = time.monotonic() + UNTAKEN_S
        while True:
            job.refresh_from_db()
            if job.status == Job.Status.QUEUED and ask_after and time.monotonic() > ask_after:
                ask_after = 0.0  # once: nobody took the job, and no worker answered before
                if not queue_consumed():
                    message = _no_worker_message(*_queue_and_broker())
                    jobs.finish(job, Job.Status.ERROR, Job.Outcome.ERROR, message)
                    raise CommandError(message)
            if not self.as_json:
                for step in job.steps.select_related("kb_check").exclude(step_id__in=shown):
                    shown.add(step.step_id)
                    self.stdout.write(self._line(step))
            if job.is_finished or job.status in (Job.Status.WAITING, Job.Status.APPROVAL):
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"job {job.pk} did not finish in {wait:.0f} s (is a worker running?)"
                )
            time.sleep(0.2)
        if not self.as_json:
            outcome = job_json(job)["outcome"]
            self.stdout.write(f"job {job.pk} ({job.kind}): {job.status} / {outcome}")
            for text in (job.note, job.error):
                if text:
                    self.stdout.write(text)
        return job

    def _fix(self, diagnosis: Job, user, wait: float) -> Job | None:
        """Apply every offered fix, consenting to a restart now, and wait for verification."""
        offers = fixes.offered_fixes(diagnosis)
        # Four eyes (access.may_approve): the user who requests a fix never approves it, so
        # a fix that needs approval is left to the helpdesk's queue, whoever runs this.
        keys = [o.fix.key for o in offers if not o.fix.needs_approval]
        skipped = [o.fix.key for o in offers if o.fix.key not in keys]
        self.skipped = [{"key": k, "why": "needs the helpdesk's approval"} for k in skipped]
        if skipped and not self.as_json:
            self.stdout.write(f"needs the helpdesk's approval, not applied: {', '.join(skipped)}")
        if not keys:
            if not self.as_json:
                self.stdout.write("no automatic fix to apply")
            return None
        try:
            with transaction.atomic():
                fix_job = fixes.request_fix(user, diagnosis, keys, Job.Restart.NOW)
        except jobs.JobRefused as exc:
            raise CommandError(str(exc)) from None
        if not self.as_json:
            self.stdout.write(f"fix job {fix_job.pk}: {', '.join(keys)} (restart now if needed)")
        # The fix may restart the machine, then waits for the employee's own attempt.
        budget = wait + settings.KAIKETSU_RESTART_TIMEOUT + settings.KAIKETSU_ATTEMPT_TIMEOUT
        return self._follow(fix_job, budget)

    def _user(self, username, machine):
        User = get_user_model()
        if username:
            found = User.objects.filter(username=username).first()
            if found is None:
                raise CommandError(f"no user {username!r}")
            return found
        owner = machine.owners.order_by("id").first()
        found = owner or User.objects.filter(is_superuser=True).order_by("id").first()
        if found is None:
            raise CommandError("the machine has no owner and there is no superuser: use --user")
        return found

    def _line(self, step: StepResult) -> str:
        title = step.kb_check.title_en if step.kb_check else step.kind
        mark = {
            "pass": "PASS",
            "fail": "FAIL",
            "error": "ERROR",
            "unknown": "UNKNOWN",
            "done": "DONE",
        }[step.verdict]
        if step.verdict == "done" and step.changed is False:
            mark = "SAME"
        detail = f"  {step.error}" if step.error else ""
        return f"{mark:<6}{title} ({step.duration_ms} ms){detail}"
