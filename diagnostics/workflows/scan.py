"""Fleet scan: "who else has this problem?" An article's checks on many machines, bounded.

The helpdesk picks an article and a set of machines; each machine gets an ordinary diagnosis
job (read-only checks, never fixes), started at most ``Scan.concurrency`` at a time so a scan
of the whole fleet leaves room for employees' own jobs. A tick starts what fits and schedules
the next tick; ticks are idempotent (the start index moves by compare-and-set), and beat ticks
every unfinished scan too, so a lost tick message only slows a scan down.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from diagnostics.jobs import JobRefused, create_job, enqueue
from diagnostics.models import Article, Job, Machine, Scan, StepResult

TICK_TASK = "diagnostics.tasks.scan_tick"
TICK_S = 1.0


@dataclass
class Selection:
    """Which machines a scan covers: every filter given narrows the set."""

    owner: str = ""  # a user name or e-mail, exact, case-insensitive
    name_pattern: str = ""  # shell-style, e.g. "pc-tokyo-*"; case-insensitive
    failed_days: int | None = None  # machines with a failed check or job in the last N days

    def machines(self) -> QuerySet[Machine]:
        qs = Machine.objects.order_by("name")
        if self.owner:
            qs = qs.filter(
                Q(owners__username__iexact=self.owner) | Q(owners__email__iexact=self.owner)
            ).distinct()
        if self.failed_days:
            since = timezone.now() - timedelta(days=self.failed_days)
            failed = Job.objects.filter(
                created_at__gte=since,
                outcome__in=[Job.Outcome.PROBLEMS, Job.Outcome.NOT_FIXED, Job.Outcome.ERROR],
            )
            qs = qs.filter(pk__in=failed.values("machine_id"))
        if self.name_pattern:
            pattern = self.name_pattern.lower()
            names = [
                n for n in qs.values_list("name", flat=True) if fnmatch.fnmatch(n.lower(), pattern)
            ]
            qs = qs.filter(name__in=names)
        return qs

    def describe(self) -> str:
        parts = []
        if self.owner:
            parts.append(_("owner %(owner)s") % {"owner": self.owner})
        if self.name_pattern:
            parts.append(_("name %(pattern)s") % {"pattern": self.name_pattern})
        if self.failed_days:
            parts.append(_("failed in the last %(n)s days") % {"n": self.failed_days})
        return ", ".join(parts) or _("all machines")


def start_scan(user: Any, article: Article, selection: Selection) -> Scan:
    """Create a scan over the selected machines and send its first tick once committed."""
    if not article.checks.exists():
        raise JobRefused(_("This article has no automated checks."))
    ids = list(selection.machines().values_list("pk", flat=True))
    if not ids:
        raise JobRefused(_("No machine matches this selection."))
    scan = Scan.objects.create(
        article=article,
        created_by=user,
        selection=selection.describe()[:300],
        machine_ids=ids,
        concurrency=settings.KAIKETSU_SCAN_CONCURRENCY,
    )
    transaction.on_commit(lambda: send_tick(scan.pk))
    return scan


def send_tick(scan_id: int, countdown: float = 0) -> None:
    current_app.send_task(TICK_TASK, args=[scan_id], countdown=countdown or None)


def tick(scan_id: int) -> bool:
    """Start as many of the scan's machines as its concurrency allows; True while unfinished."""
    scan = Scan.objects.filter(pk=scan_id, finished_at__isnull=True).first()
    if scan is None:
        return False
    start = scan.next_index
    # A machine counts as in flight from the moment a tick claims its index (its job may not
    # exist yet), so two ticks at once can never start more than the concurrency between them.
    ended = scan.jobs.filter(status__in=Job.TERMINAL).count()
    in_flight = start - ended - len(scan.skipped)
    batch = scan.machine_ids[start : start + max(0, scan.concurrency - in_flight)]
    if batch:
        # Only one tick may start this batch: the others find the index moved and stop.
        if not Scan.objects.filter(pk=scan.pk, next_index=start).update(
            next_index=start + len(batch)
        ):
            return True
        machines = Machine.objects.in_bulk(batch)
        skipped = [_start_one(scan, machines.get(pk), pk) for pk in batch]
        skipped = [s for s in skipped if s]
        if skipped:
            with transaction.atomic():
                fresh = Scan.objects.select_for_update().get(pk=scan.pk)
                fresh.skipped = [*fresh.skipped, *skipped]
                fresh.save(update_fields=["skipped"])
    elif start >= len(scan.machine_ids) and in_flight <= 0:
        Scan.objects.filter(pk=scan.pk, finished_at__isnull=True).update(finished_at=timezone.now())
        return False
    send_tick(scan.pk, TICK_S)
    return True


def _start_one(scan: Scan, machine: Machine | None, pk: int) -> dict | None:
    """One machine's diagnosis; what to record instead when it cannot start."""
    if machine is None:
        return {"machine": pk, "name": "", "why": _("The machine was deleted.")}
    try:
        job = create_job(
            user=scan.created_by,
            machine=machine,
            article=scan.article,
            kind=Job.Kind.DIAGNOSE,
            scan=scan,
        )
    except JobRefused as exc:
        return {"machine": pk, "name": machine.name, "why": str(exc)}
    enqueue(job.pk)
    return None


def tick_all() -> int:
    """Tick every unfinished scan (beat): a scan whose tick message was lost goes on."""
    ids = list(Scan.objects.filter(finished_at__isnull=True).values_list("pk", flat=True))
    return sum(tick(pk) for pk in ids)


# --- reading a scan --------------------------------------------------------------------------


@dataclass
class Summary:
    total: int
    running: int = 0
    healthy: int = 0
    problems: int = 0
    unreachable: int = 0  # could not run: the machine did not answer or refused
    skipped: int = 0
    failing_checks: list[dict[str, Any]] = field(default_factory=list)  # per check: title, n

    @property
    def done(self) -> int:
        return self.healthy + self.problems + self.unreachable + self.skipped

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def summary(scan: Scan) -> Summary:
    """Counts for the progress view, each equal to a count of the scan's own jobs."""
    counts = dict(
        scan.jobs.values_list("outcome").annotate(n=Count("pk")).values_list("outcome", "n")
    )
    running = scan.jobs.exclude(status__in=Job.TERMINAL).count()
    failing = (
        StepResult.objects.filter(job__scan=scan, phase=StepResult.Phase.CHECK)
        .exclude(verdict=StepResult.Verdict.PASS)
        .values("kb_check_id", "kb_check__title_ja", "kb_check__title_en", "kb_check__position")
        .annotate(n=Count("pk"))
        .order_by("kb_check__position")
    )
    return Summary(
        total=len(scan.machine_ids),
        running=running,
        healthy=counts.get(Job.Outcome.HEALTHY, 0),
        problems=counts.get(Job.Outcome.PROBLEMS, 0),
        unreachable=counts.get(Job.Outcome.ERROR, 0),
        skipped=len(scan.skipped),
        failing_checks=list(failing),
    )
