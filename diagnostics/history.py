"""Helpdesk job history queries: filters, text search and keyset pages. No HTTP here.

Pages are keyset pages on (created_at, id), newest first: a page is "the next N jobs older
than this cursor", so a page costs the same at job 50 and at job 900,000, and jobs that
arrive between two fetches never shift rows into the next page (no gaps, no duplicates).

Text search looks in four places, all on the job row: the pasted error, the machine name,
Job.error and Job.step_errors (its steps' distinct errors, gathered as they arrive). Each is
searched on its own, ordered and limited on its own, and the pages are merged here: on
PostgreSQL every branch can then pick its own index (the trigram index when the text is
rare, the (created_at, id) walk when it is common), which an OR of them in one query
cannot. The two error columns, whose match counts PostgreSQL misjudges, get a strategy
chosen in code (see _error_matches).
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone

from diagnostics.models import Job, Machine, StepResult

PAGE_SIZE = 50
EXPORT_BATCH = 2000
MIN_SEARCH_CHARS = 3  # a trigram index needs three characters; shorter would scan every row
MAX_SEARCH_CHARS = 200
ERROR_HITS_CAP = 500  # fewer error matches than this: look them up; more: walk the jobs
ERROR_SCAN_CHUNK = 2000
ERROR_SCAN_CHUNKS = 5
RELATED = ("user", "machine", "article")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: the next page starts strictly after (older than) it."""

    created_at: datetime
    id: int


@dataclass
class Filters:
    """What the helpdesk asked for. User and machine match any part of the name, in any case
    (``tanaka`` finds ``TANAKA-H``); the article is resolved to its id from the URL's slug."""

    user: str = ""
    machine: str = ""
    article_id: int | None = None
    status: str = ""
    kind: str = ""
    outcome: str | None = None  # "" is a real outcome (none yet), so None means "any"
    date_from: date | None = None
    date_to: date | None = None
    text: str = ""
    empty: bool = False  # a name in the URL matched nothing: the answer is no rows


@dataclass
class Page:
    jobs: list[Job]
    next_cursor: str = ""


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe token for a cursor."""
    # Integer microseconds: a float timestamp would round and could skip a row at a tie.
    micros = (cursor.created_at - EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor | None:
    """The cursor in a token, or None for an empty or malformed one (start at the top)."""
    if not token or len(token) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        micros, pk = raw.split(".")
        created = EPOCH + timedelta(microseconds=int(micros))
        return Cursor(created, int(pk)) if 0 < int(pk) < 2**63 else None  # a database id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError, OSError):
        return None


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def filtered(filters: Filters) -> QuerySet[Job]:
    """Jobs matching every filter except the text search, unordered."""
    qs = Job.objects.all()
    if filters.empty:
        return qs.none()
    if filters.user:
        users = get_user_model().objects.filter(username__icontains=filters.user)
        qs = qs.filter(user_id__in=users.values("pk"))
    if filters.machine:
        machines = Machine.objects.filter(name__icontains=filters.machine)
        qs = qs.filter(machine_id__in=machines.values("pk"))
    if filters.article_id is not None:
        qs = qs.filter(article_id=filters.article_id)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.kind:
        qs = qs.filter(kind=filters.kind)
    if filters.outcome is not None:
        qs = qs.filter(outcome=filters.outcome)
    if filters.date_from:
        qs = qs.filter(created_at__gte=_day_start(filters.date_from))
    if filters.date_to:  # the whole "to" day is included
        qs = qs.filter(created_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    return qs


def after(qs: QuerySet[Job], cursor: Cursor | None) -> QuerySet[Job]:
    """Rows strictly older than the cursor, newest first.

    `created_at <= c` is the index bound (a deep page seeks straight to its place);
    the OR only settles ties at exactly that instant.
    """
    if cursor is not None:
        qs = qs.filter(created_at__lte=cursor.created_at).filter(
            Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id)
        )
    return qs.order_by("-created_at", "-id")


Key = tuple[datetime, int]  # (created_at, id): the keyset order


def search_branches(qs: QuerySet[Job], text: str) -> list[QuerySet[Job]]:
    """One queryset per place the text may be in (errors, on jobs and steps: _error_matches)."""
    machines = Machine.objects.filter(name__icontains=text).values("pk")
    return [
        qs.filter(pasted_text__icontains=text),
        qs.filter(machine_id__in=machines),
    ]


def _probe_chunk(base: QuerySet[Job], text: str, cursor: Cursor | None) -> list[Key]:
    """The next ERROR_SCAN_CHUNK jobs after the cursor (all of them, matching or not)."""
    return list(after(base, cursor).values_list("created_at", "id")[:ERROR_SCAN_CHUNK])


def _with_error(keys: list[Key], text: str) -> list[Key]:
    """The keys whose job, or one of its steps, has an error containing the text.

    Probed by job id. LOWER() rather than icontains' UPPER(): it keeps PostgreSQL off the
    trigram indexes, which it would pick on a bad estimate and then read every match.
    """
    low = text.lower()
    matched = set(
        Job.objects.annotate(error_low=Lower("error"), steps_low=Lower("step_errors"))
        .filter(id__in=[pk for _, pk in keys])
        .filter(Q(error_low__contains=low) | Q(steps_low__contains=low))
        .values_list("id", flat=True)
    )
    return [key for key in keys if key[1] in matched]


def _error_hits(text: str) -> list[int] | None:
    """Ids of the jobs whose errors contain the text, or None when there are too many."""
    hits: list[int] = []
    for column in ("error", "step_errors"):  # one query each: each has its trigram index
        hits += (
            Job.objects.filter(**{f"{column}__icontains": text})
            .exclude(**{column: ""})
            .order_by()
            .values_list("id", flat=True)[:ERROR_HITS_CAP]
        )
        if len(hits) >= ERROR_HITS_CAP:
            return None
    return hits


def _error_matches(
    base: QuerySet[Job], text: str, cursor: Cursor | None, limit: int
) -> tuple[list[Key], Key | None]:
    """Jobs whose error or step errors contain the text: (keys, scan boundary or None).

    PostgreSQL misjudges how many of 1,000,000 jobs a LIKE matches, and either plan is slow
    when it guesses wrong, so the choice is made here. First the newest ERROR_SCAN_CHUNK
    jobs are probed by id: a common text fills the page there. If that chunk has no match
    at all, the trigram indexes count the matches: a rare text (fewer than ERROR_HITS_CAP)
    is looked up by job id. Otherwise the walk goes on for at most ERROR_SCAN_CHUNKS chunks
    and returns the oldest key it looked at: the page must end there (older rows were not
    searched yet) and the next page goes on from it.
    """
    start = cursor
    found: list[Key] = []
    for n in range(ERROR_SCAN_CHUNKS):
        chunk = _probe_chunk(base, text, cursor)
        found += _with_error(chunk, text)
        if len(found) >= limit or len(chunk) < ERROR_SCAN_CHUNK:
            return found[:limit], None
        cursor = Cursor(*chunk[-1])
        # A match among the newest chunk says the text is common (thousands of hits over
        # the table): asking the trigram index would only read them all. Keep walking.
        if n == 0 and not found:
            hits = _error_hits(text)
            if hits is not None:
                qs = after(base.filter(id__in=set(hits)), start)
                return list(qs.values_list("created_at", "id")[:limit]), None
    return found, (cursor.created_at, cursor.id)


def page_ids(filters: Filters, cursor: Cursor | None, limit: int) -> tuple[list[Key], Key | None]:
    """Keys of the next `limit` jobs after the cursor, newest first, and a scan boundary.

    With a boundary, only rows at or newer than it were searched: the caller ends the page
    there and continues from the boundary.
    """
    base = filtered(filters)
    if not filters.text:
        return list(after(base, cursor).values_list("created_at", "id")[:limit]), None
    keys: set[Key] = set()
    for branch in search_branches(base, filters.text):
        keys.update(after(branch, cursor).values_list("created_at", "id")[:limit])
    steps, boundary = _error_matches(base, filters.text, cursor, limit)
    keys.update(steps)
    if boundary is not None:
        keys = {key for key in keys if key >= boundary}
    return heapq.nlargest(limit, keys), boundary


def fetch_page(filters: Filters, cursor: Cursor | None, size: int = PAGE_SIZE) -> Page:
    """One page of jobs (user, machine and article joined) and the cursor of the next."""
    if filters.text:
        keys, boundary = page_ids(filters, cursor, size + 1)
        by_id = Job.objects.select_related(*RELATED).in_bulk([pk for _, pk in keys[:size]])
        jobs = [by_id[pk] for _, pk in keys[:size] if pk in by_id]
        if len(keys) > size:
            last: Key | None = keys[size - 1]
        else:
            last = boundary  # a short page from a bounded scan: more may be older
    else:
        rows = list(after(filtered(filters), cursor).select_related(*RELATED)[: size + 1])
        jobs = rows[:size]
        last = (jobs[-1].created_at, jobs[-1].pk) if len(rows) > size else None
    return Page(jobs=jobs, next_cursor=encode_cursor(Cursor(*last)) if last else "")


EXPORT_FIELDS = (
    "id",
    "created_at",
    "user__username",
    "machine__name",
    "article__slug",
    "kind",
    "status",
    "outcome",
    "error",
)


def _failed_checks() -> Coalesce:
    """Per job row: its failed or unrunnable checks (and verifications), 0 when none."""
    failed = (
        StepResult.objects.filter(
            job_id=OuterRef("pk"),
            verdict__in=[StepResult.Verdict.FAIL, StepResult.Verdict.ERROR],
            phase__in=[StepResult.Phase.CHECK, StepResult.Phase.VERIFY],
        )
        .order_by()
        .values("job_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(failed), 0)


def export_rows(filters: Filters, batch: int = EXPORT_BATCH) -> Iterator[list[tuple]]:
    """Every matching job as EXPORT_FIELDS + failed check count, newest first.

    Keyset batches of plain tuples (no model instances): memory stays constant and a
    100,000-row export costs a few seconds, whatever the filters. The failed count is a
    correlated subquery: one probe of the (job, step_id) index per job.
    """
    cursor: Cursor | None = None
    fields = (*EXPORT_FIELDS, "failed")
    while True:
        boundary = None
        if filters.text:
            keys, boundary = page_ids(filters, cursor, batch)
            found = (
                Job.objects.filter(pk__in=[pk for _, pk in keys])
                .annotate(failed=_failed_checks())
                .values_list(*fields)
            )
            by_id = {row[0]: row for row in found}
            rows = [by_id[pk] for _, pk in keys if pk in by_id]
        else:
            qs = after(filtered(filters), cursor).annotate(failed=_failed_checks())
            rows = list(qs.values_list(*fields)[:batch])
        if rows:
            yield rows
        if len(rows) == batch:
            cursor = Cursor(rows[-1][1], rows[-1][0])
        elif boundary is not None:  # a bounded step scan stopped here: go on from it
            cursor = Cursor(*boundary)
        else:
            return


def diff_rows(before: object, after_: object) -> list[dict]:
    """A fix step's before/after as rows: setting, before, after, changed."""
    before = before if isinstance(before, dict) else {}
    after_ = after_ if isinstance(after_, dict) else {}
    keys = list(dict.fromkeys([*before, *after_]))
    return [
        {
            "setting": key,
            "before": before.get(key),
            "after": after_.get(key),
            "changed": before.get(key) != after_.get(key),
        }
        for key in keys
    ]


def bounded(text: str, limit: int = 20_000) -> str:
    """Head and tail of a long output, with the cut said in the middle."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n… [{len(text) - limit:,} characters cut] …\n{text[-half:]}"
