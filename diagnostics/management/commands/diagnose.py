import json
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from diagnostics import jobs
from diagnostics.models import Article, Job, Machine, StepResult


def step_json(step: StepResult) -> dict:
    title = step.kb_check.title_en if step.kb_check else step.kind
    return {
        "title": title,
        "kind": step.kind,
        "verdict": step.verdict,
        "facts": step.facts,
        "error": step.error,
    }


def job_json(job: Job) -> dict:
    outcome = job.outcome if job.status == Job.Status.DONE else "error"
    return {
        "job": job.pk,
        "status": job.status,
        "outcome": outcome,
        "error": job.error,
        "steps": [step_json(s) for s in job.steps.select_related("kb_check").order_by("position")],
        "fix": None,
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
        if fix:
            raise CommandError("--fix is not available yet: fix jobs come with issue #5")
        target = Machine.objects.filter(name=machine).first()
        if target is None:
            raise CommandError(f"no machine named {machine!r}")
        art = Article.objects.filter(slug=article, status=Article.Status.PUBLISHED).first()
        if art is None:
            raise CommandError(f"no published article {article!r}")
        runner = self._user(user, target)
        with transaction.atomic():
            try:
                job = jobs.start_diagnosis(runner, target, art, pasted_text="(command line)")
            except jobs.JobRefused as exc:
                raise CommandError(str(exc)) from None
        shown: set[str] = set()
        deadline = time.monotonic() + wait
        while True:
            job.refresh_from_db()
            if not as_json:
                for step in job.steps.select_related("kb_check").exclude(step_id__in=shown):
                    shown.add(step.step_id)
                    self.stdout.write(self._line(step))
            if job.is_finished:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"job {job.pk} did not finish in {wait:.0f} s (is a worker running?)"
                )
            time.sleep(0.2)
        if as_json:
            self.stdout.write(json.dumps(job_json(job), ensure_ascii=False))
        else:
            self.stdout.write(f"job {job.pk}: {job.status} / {job_json(job)['outcome']}")
            if job.error:
                self.stdout.write(job.error)

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
        mark = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "done": "DONE"}[step.verdict]
        detail = f"  {step.error}" if step.error else ""
        return f"{mark:<6}{title} ({step.duration_ms} ms){detail}"
