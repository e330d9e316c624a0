"""The helpdesk dashboard's numbers: one aggregate query per chart, plain data out.

Every function takes the moment "now" so tests (and a dashboard viewed at midnight) agree on
the window. Days and weeks are counted in the portal's time zone (TIME_ZONE), as staff read them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Min, Q
from django.db.models.functions import TruncDate, TruncWeek
from django.urls import reverse
from django.utils import timezone

from diagnostics import matching
from diagnostics.matching import THRESHOLD
from diagnostics.models import HandOver, Job, StepResult, UnmatchedPaste

DAYS = 30
WEEKS = 12
TOP = 10
# An outcome that means the machine still has (or may still have) the problem.
FAILURE_OUTCOMES = (Job.Outcome.PROBLEMS, Job.Outcome.NOT_FIXED, Job.Outcome.ERROR)
# The admin's add form reads GET parameters as initial values; keep the link a sane length.
DRAFT_TEXT_CHARS = 1500


def window_start(now: dt.datetime, days: int = DAYS) -> dt.datetime:
    """Local midnight ``days - 1`` days before today: "the last 30 days" includes today."""
    today = timezone.localtime(now).date()
    first = today - dt.timedelta(days=days - 1)
    return timezone.make_aware(dt.datetime.combine(first, dt.time.min))


@dataclass
class DailyOutcomes:
    days: list[dt.date]
    counts: dict[tuple[dt.date, str], int] = field(default_factory=dict)

    def series(self, outcome: str) -> list[int]:
        return [self.counts.get((day, outcome), 0) for day in self.days]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def jobs_per_day(now: dt.datetime, days: int = DAYS) -> DailyOutcomes:
    """Jobs created per local day by outcome, for the last ``days`` days (today included)."""
    start = window_start(now, days)
    rows = (
        Job.objects.filter(created_at__gte=start, created_at__lte=now)
        .annotate(day=TruncDate("created_at"))
        .values("day", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    first = timezone.localtime(start).date()
    result = DailyOutcomes(
        days=[first + dt.timedelta(days=i) for i in range(days)],
    )
    for row in rows:
        result.counts[(row["day"], row["outcome"])] = row["n"]
    return result


def top_articles(now: dt.datetime, days: int = DAYS, limit: int = TOP) -> list[dict]:
    """Articles by number of diagnoses started for them (a diagnosis follows a match)."""
    return list(
        Job.objects.filter(
            kind=Job.Kind.DIAGNOSE, created_at__gte=window_start(now, days), created_at__lte=now
        )
        .values("article_id", "article__slug", "article__title_ja", "article__title_en")
        .annotate(n=Count("id"))
        .order_by("-n", "article__slug")[:limit]
    )


def failing_checks(now: dt.datetime, days: int = DAYS, limit: int = TOP) -> list[dict]:
    """Knowledge-base checks by number of results with verdict fail or error ."""
    return list(
        StepResult.objects.filter(
            kb_check__isnull=False,
            verdict__in=[StepResult.Verdict.FAIL, StepResult.Verdict.ERROR],
            # Served by the partial index of migration 0005 (failing results only).
            created_at__gte=window_start(now, days),
            created_at__lte=now,
        )
        .values(
            "kb_check_id",
            "kb_check__key",
            "kb_check__title_ja",
            "kb_check__title_en",
            "kb_check__article__slug",
        )
        .annotate(
            n=Count("id"),
            fail=Count("id", filter=Q(verdict=StepResult.Verdict.FAIL)),
            error=Count("id", filter=Q(verdict=StepResult.Verdict.ERROR)),
        )
        .order_by("-n", "kb_check__article__slug", "kb_check__key")[:limit]
    )


def fix_success(now: dt.datetime, weeks: int = WEEKS) -> list[dict]:
    """Per week (Monday, local time): fixed, not_fixed and fixed / (fixed + not_fixed)."""
    today = timezone.localtime(now).date()
    monday = today - dt.timedelta(days=today.weekday())
    first = monday - dt.timedelta(weeks=weeks - 1)
    start = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
    rows = (
        Job.objects.filter(
            kind=Job.Kind.FIX,
            outcome__in=[Job.Outcome.FIXED, Job.Outcome.NOT_FIXED],
            created_at__gte=start,
            created_at__lte=now,
        )
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(
            fixed=Count("id", filter=Q(outcome=Job.Outcome.FIXED)),
            not_fixed=Count("id", filter=Q(outcome=Job.Outcome.NOT_FIXED)),
        )
        .order_by()
    )
    by_week = {_as_date(row["week"]): row for row in rows}
    result = []
    for i in range(weeks):
        week = first + dt.timedelta(weeks=i)
        row = by_week.get(week, {})
        fixed, not_fixed = row.get("fixed", 0), row.get("not_fixed", 0)
        total = fixed + not_fixed
        result.append(
            {
                "week": week,
                "fixed": fixed,
                "not_fixed": not_fixed,
                "rate": fixed / total if total else None,
            }
        )
    return result


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    return value


def repeated_failures(now: dt.datetime, days: int = DAYS, minimum: int = 2) -> list[dict]:
    """Machines with at least ``minimum`` jobs ending in problems, not fixed or error."""
    return list(
        Job.objects.filter(
            outcome__in=FAILURE_OUTCOMES,
            created_at__gte=window_start(now, days),
            created_at__lte=now,
        )
        .values("machine_id", "machine__name")
        .annotate(n=Count("id"), last=Max("created_at"))
        .filter(n__gte=minimum)
        .order_by("-n", "machine__name")
    )


def record_unmatched(text: str, best_score: float | None) -> None:
    """Count a searched text that found no confident article (equal texts together)."""
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    normalised = matching.normalize(text)
    if not normalised:
        return
    digest = hashlib.sha256(normalised.encode("utf-8")).hexdigest()
    now = timezone.now()
    seen = UnmatchedPaste.objects.filter(digest=digest).update(
        count=F("count") + 1, last_seen=now, best_score=best_score
    )
    if not seen:
        try:
            with transaction.atomic():
                UnmatchedPaste.objects.create(
                    digest=digest, text=text.strip()[:2000], best_score=best_score
                )
        except IntegrityError:  # the same text from someone else at the same moment
            UnmatchedPaste.objects.filter(digest=digest).update(count=F("count") + 1)


def unmatched_texts(now: dt.datetime, days: int = DAYS, limit: int = 20) -> list[dict]:
    """Pasted texts the matcher was not confident about: the knowledge base's blind spots.

    Two traces: searches that found no confident article (UnmatchedPaste), and diagnoses
    started anyway from a weak or missing score. Equal texts are counted together.
    """
    since = window_start(now, days)
    rows = (
        Job.objects.filter(
            Q(match_score__isnull=True) | Q(match_score__lt=THRESHOLD),
            kind=Job.Kind.DIAGNOSE,
            created_at__gte=since,
            created_at__lte=now,
        )
        .exclude(pasted_text="")
        .values("pasted_text")
        .annotate(n=Count("id"), last=Max("created_at"), best=Max("match_score"))
        .order_by("-n", "-last")[:limit]
    )
    merged = {row["pasted_text"]: dict(row) for row in rows}
    searches = UnmatchedPaste.objects.filter(last_seen__gte=since, last_seen__lte=now).order_by(
        "-count", "-last_seen"
    )[:limit]
    for paste in searches:
        row = merged.setdefault(
            paste.text, {"pasted_text": paste.text, "n": 0, "last": paste.last_seen, "best": None}
        )
        row["n"] += paste.count
        row["last"] = max(row["last"], paste.last_seen)
        scores = [s for s in (row["best"], paste.best_score) if s is not None]
        row["best"] = max(scores) if scores else None
    ranked = sorted(merged.values(), key=lambda r: (-r["n"], -r["last"].timestamp()))[:limit]
    return [{**row, "draft_url": draft_article_url(row["pasted_text"])} for row in ranked]


def _is_japanese(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


def draft_article_url(text: str) -> str:
    """The admin's "add article" page with the pasted text prefilled, as a draft."""
    text = text.strip()[:DRAFT_TEXT_CHARS]
    lang = "ja" if _is_japanese(text) else "en"
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    params = {
        "status": "draft",
        f"title_{lang}": first_line[:200],
        f"summary_{lang}": text,
    }
    return reverse("admin:diagnostics_article_add") + "?" + urlencode(params)


def handover_counts(now: dt.datetime, days: int = DAYS) -> dict:
    """Hand-overs still open (how many nobody took, how long they wait) and, for those closed
    in the last ``days`` days, the median hours from hand-over to close."""
    day_ago = now - dt.timedelta(days=1)
    waiting = HandOver.objects.exclude(status=HandOver.Status.CLOSED).filter(created_at__lte=now)
    counts = waiting.aggregate(
        open=Count("id"),
        untaken=Count("id", filter=Q(status=HandOver.Status.OPEN)),
        over_a_day=Count("id", filter=Q(created_at__lt=day_ago)),
        oldest=Min("created_at"),
    )
    closed = HandOver.objects.filter(
        status=HandOver.Status.CLOSED, closed_at__gte=window_start(now, days), closed_at__lte=now
    ).values_list("created_at", "closed_at")
    hours = sorted((end - start).total_seconds() / 3600 for start, end in closed)
    counts["closed"] = len(hours)
    counts["median_hours"] = round(hours[len(hours) // 2], 1) if hours else None
    return counts
