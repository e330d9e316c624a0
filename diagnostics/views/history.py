"""Helpdesk pages: the job history, one job in full, re-run, and the CSV export.

Only helpdesk staff (the view_job permission) and superusers get here; for anyone else the
pages do not exist (404), as employees have their own job page.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from diagnostics import access, audit_words, handovers, history, jobs
from diagnostics.models import Article, AuditEntry, Job
from diagnostics.workflows.diagnosis import start_diagnosis

OUTCOME_NONE = "none"  # the URL's word for Job.Outcome.NONE (""), which a select cannot carry
POLL_SECONDS = 2
STILL_CHANGING = {*Job.ACTIVE, Job.Status.APPROVAL, Job.Status.WAITING}  # rows that poll


# The dates a filter may name. Outside them the day's bounds overflow Python's datetime in
# the time zone (0001-01-01, 9999-12-31), and no job of this portal lies there anyway.
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2099, 12, 31)


def _in_range(day: dt.date) -> None:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise forms.ValidationError(
            _("Give a date between %(first)s and %(last)s.")
            % {"first": FIRST_DAY.isoformat(), "last": LAST_DAY.isoformat()}
        )


class HistoryFilterForm(forms.Form):
    """The history's filters, all in the URL so a view can be shared by link."""

    user = forms.CharField(label=gettext_lazy("User"), required=False, max_length=150)
    machine = forms.CharField(label=gettext_lazy("Machine"), required=False, max_length=63)
    article = forms.ChoiceField(label=gettext_lazy("Article"), required=False)
    status = forms.ChoiceField(
        label=gettext_lazy("Status"),
        required=False,
        choices=[("", gettext_lazy("Any"))] + list(Job.Status.choices),
    )
    kind = forms.ChoiceField(
        label=gettext_lazy("Kind"),
        required=False,
        choices=[("", gettext_lazy("Any"))] + list(Job.Kind.choices),
    )
    outcome = forms.ChoiceField(
        label=gettext_lazy("Outcome"),
        required=False,
        choices=[("", gettext_lazy("Any")), (OUTCOME_NONE, gettext_lazy("None yet"))]
        + [(v, label) for v, label in Job.Outcome.choices if v],
    )
    date_from = forms.DateField(
        label=gettext_lazy("From"),
        required=False,
        validators=[_in_range],
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    date_to = forms.DateField(
        label=gettext_lazy("To"),
        required=False,
        validators=[_in_range],
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    q = forms.CharField(
        label=gettext_lazy("Search"),
        required=False,
        max_length=history.MAX_SEARCH_CHARS,
        widget=forms.TextInput(attrs={"type": "search"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        articles = Article.objects.order_by("slug").values_list("slug", flat=True)
        self.fields["article"].choices = [("", _("Any"))] + [(s, s) for s in articles]

    def clean_q(self) -> str:
        text = " ".join(self.cleaned_data["q"].split())
        if text and len(text) < history.MIN_SEARCH_CHARS:
            raise forms.ValidationError(
                _("Search for at least %(n)d characters.") % {"n": history.MIN_SEARCH_CHARS}
            )
        return text

    def to_filters(self) -> history.Filters:
        """The filters, the article's slug resolved to its id (one query when given)."""
        # An invalid field (a too-short search) is left out; the valid ones still apply.
        data: dict = {}
        if self.is_bound:
            self.is_valid()
            data = self.cleaned_data
        f = history.Filters(
            status=data.get("status", ""),
            kind=data.get("kind", ""),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            text=data.get("q", ""),
        )
        outcome = data.get("outcome", "")
        if outcome:
            f.outcome = "" if outcome == OUTCOME_NONE else outcome
        f.user = (data.get("user") or "").strip()
        f.machine = (data.get("machine") or "").strip()
        slug = (data.get("article") or "").strip()
        if slug:
            f.article_id = Article.objects.filter(slug=slug).values_list("pk", flat=True).first()
            f.empty = f.article_id is None
        return f


def _filter_form(request: HttpRequest) -> HistoryFilterForm:
    return HistoryFilterForm(request.GET)


@require_GET
@access.required(access.can_see_all_jobs)
def job_list(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    filters = form.to_filters()
    page = history.fetch_page(filters, history.decode_cursor(request.GET.get("after", "")))
    query = request.GET.copy()
    query.pop("after", None)
    ctx = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "is_first": not request.GET.get("after"),
        "poll_seconds": POLL_SECONDS,
        "active": STILL_CHANGING,
    }
    if request.htmx:
        return render(request, "diagnostics/history/list.html#history-results", ctx)
    return render(request, "diagnostics/history/list.html", ctx)


def _steps_with_diffs(job: Job) -> list[dict]:
    steps = job.steps.select_related("kb_check").order_by("position", "id")
    return [
        {
            "result": step,
            "diff": history.diff_rows(step.before, step.after)
            if step.before is not None or step.after is not None
            else [],
        }
        for step in steps
    ]


def _timeline(job: Job, steps: list[dict]) -> list[tuple]:
    events = [(job.created_at, _("Queued"), "")]
    if job.decided_at:
        events.append((job.decided_at, _("Decided"), job.get_status_display()))
    if job.started_at:
        events.append((job.started_at, _("Started"), ""))
    for row in steps:
        r = row["result"]
        events.append((r.created_at, f"{r.step_id} {r.kind}", r.get_verdict_display()))
    if job.handed_over_at:
        events.append((job.handed_over_at, _("Handed to the helpdesk"), ""))
    if job.finished_at:
        events.append((job.finished_at, _("Finished"), job.get_status_display()))
    return sorted(events, key=lambda e: e[0])


@require_GET
@access.required(access.can_see_all_jobs)
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = access.job_for(request.user, pk)
    if request.htmx and request.GET.get("row"):
        # The history polls the rows of running jobs here; a finished row stops polling.
        ctx = {
            "job": job,
            "poll_seconds": POLL_SECONDS,
            "active": STILL_CHANGING,
        }
        return render(request, "diagnostics/history/list.html#history-row", ctx)
    steps = _steps_with_diffs(job)
    entries = AuditEntry.objects.filter(job=job).select_related("actor", "job__article")
    audit = [
        {"entry": e, "sentence": audit_words.sentence(e), "changes": audit_words.changes(e)}
        for e in entries.order_by("at", "id")
    ]
    ctx = {
        "job": job,
        "cancellable": job.status in Job.CANCELLABLE,
        "steps": steps,
        "timeline": _timeline(job, steps),
        "audit": audit,
        "handover": handovers.for_job(job),
        "plan_json": json.dumps(job.plan, indent=2, ensure_ascii=False),
        "transcript": history.bounded(job.transcript),
        "stderr": history.bounded(job.stderr),
    }
    return render(request, "diagnostics/history/detail.html", ctx)


@require_POST
@access.required(access.can_see_all_jobs)
def job_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    job = access.job_for(request.user, pk)
    try:
        new = start_diagnosis(
            request.user, job.machine, job.article, job.pasted_text, job.match_score
        )
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnostics:helpdesk-job", pk=job.pk)
    return redirect("diagnostics:job-detail", pk=new.pk)


@require_POST
@access.required(access.can_cancel_jobs)
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = access.job_for(request.user, pk)
    try:
        jobs.cancel(job, request.user)
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _("Job #%(id)s was cancelled; %(machine)s is free.")
            % {"id": job.pk, "machine": job.machine.name},
        )
    return redirect("diagnostics:helpdesk-job", pk=job.pk)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """Text a spreadsheet would run as a formula gets a leading quote (CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


CSV_HEADER = [
    "id",
    "created_at",
    "user",
    "machine",
    "article",
    "kind",
    "status",
    "outcome",
    "failed_checks",
    "error",
]


def _csv_chunks(filters: history.Filters) -> Iterator[str]:
    """The CSV, one chunk per keyset batch: memory holds one batch, never the export."""
    tz = timezone.get_current_timezone()  # once: localtime() per row costs a third of the time
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # the BOM: Excel then reads the file as UTF-8 (Japanese text)
    writer.writerow(CSV_HEADER)
    for batch in history.export_rows(filters):
        writer.writerows(
            (
                pk,
                created.astimezone(tz).isoformat(timespec="seconds"),
                csv_cell(user),
                csv_cell(machine),
                article,
                kind,
                status,
                outcome,
                failed,
                csv_cell(error),
            )
            for pk, created, user, machine, article, kind, status, outcome, error, failed in batch
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()  # no job matched: the BOM and the header


@require_GET
@access.required(access.can_see_all_jobs)
def job_export(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    if not form.is_valid():
        # The page leaves a bad filter out and says so beside it; a download cannot say it,
        # and exporting more than was asked for is worse than exporting nothing.
        problems = [f"{form[name].label}: {' '.join(errs)}" for name, errs in form.errors.items()]
        return HttpResponse(
            "\n".join(problems), status=400, content_type="text/plain; charset=utf-8"
        )
    filters = form.to_filters()
    response = StreamingHttpResponse(_csv_chunks(filters), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="kaiketsu-jobs-{stamp}.csv"'
    return response
