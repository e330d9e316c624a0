"""Helpdesk console: the dashboard, the machines list, CSV import and the connection test.

Everything here is for helpdesk staff and superusers. Anyone else gets 404, as for another
employee's job: the console's existence is no business of theirs.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import OuterRef, Q, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import get_language, gettext, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnostics import access, charts, connectivity, dashboard, machine_import
from diagnostics.models import Job, Machine, active_lang

MACHINES_PER_PAGE = 50
OUTCOME_COLORS = {
    Job.Outcome.HEALTHY: "#1e7f4f",
    Job.Outcome.PROBLEMS: "#c0392b",
    Job.Outcome.FIXED: "#2457c5",
    Job.Outcome.NOT_FIXED: "#7d1d12",
    Job.Outcome.ROLLED_BACK: "#b7791f",
    Job.Outcome.UNVERIFIED: "#6b7f99",
    Job.Outcome.ERROR: "#8e5ea2",
    Job.Outcome.NONE: "#aab4c0",
}


def _title(row: dict, prefix: str) -> str:
    lang = active_lang()
    other = "en" if lang == "ja" else "ja"
    return row[f"{prefix}title_{lang}"] or row[f"{prefix}title_{other}"]


def _day(day: dt.date) -> str:
    return f"{day.month}/{day.day}"


def _dashboard_context(now: dt.datetime) -> dict:
    per_day = dashboard.jobs_per_day(now)
    series = [
        charts.Series(
            key=value or "none",
            label=str(label) if value else gettext("Not finished"),
            color=OUTCOME_COLORS[value],
            values=per_day.series(value),
        )
        for value, label in Job.Outcome.choices
    ]
    articles = dashboard.top_articles(now)
    checks = dashboard.failing_checks(now)
    for row in articles:
        row["title"] = _title(row, "article__")
    for row in checks:
        row["title"] = _title(row, "kb_check__")
    weeks = dashboard.fix_success(now)
    return {
        "days": dashboard.DAYS,
        "weeks_n": dashboard.WEEKS,
        "threshold": dashboard.THRESHOLD,
        "jobs_total": per_day.total,
        "per_day_chart": charts.stacked_bars(
            gettext("Jobs per day by outcome"),
            [_day(d) for d in per_day.days],
            series,
            empty=gettext("No jobs in this period."),
        ),
        "per_day_legend": charts.legend(series),
        "articles_chart": charts.horizontal_bars(
            gettext("Diagnoses per article"),
            [
                (
                    a["title"],
                    a["n"],
                    reverse("diagnostics:article", args=[a["article__slug"]]),
                )
                for a in articles
            ],
            empty=gettext("No diagnoses in this period."),
        ),
        "checks": checks,
        "checks_chart": charts.horizontal_bars(
            gettext("Failing checks"),
            [(f"{c['title']} ({c['kb_check__article__slug']})", c["n"], "") for c in checks],
            color="#c0392b",
            empty=gettext("No check failed in this period."),
        ),
        "fix_chart": charts.rate_columns(
            gettext("Fix success rate per week"),
            [_day(w["week"]) for w in weeks],
            [w["rate"] for w in weeks],
            [
                gettext("%(fixed)s fixed, %(not_fixed)s not fixed")
                % {"fixed": w["fixed"], "not_fixed": w["not_fixed"]}
                for w in weeks
            ],
            empty=gettext("No fix finished in this period."),
        ),
        "repeated": dashboard.repeated_failures(now),
        "unmatched": dashboard.unmatched_texts(now),
        "handovers": dashboard.handover_counts(now),
    }


@require_GET
@access.required(access.can_see_dashboard)
def dashboard_view(request: HttpRequest) -> HttpResponse:
    # Aggregates over a million jobs take a moment: share them for a minute, per language.
    ctx = cache.get_or_set(
        f"dashboard:{get_language()}",
        lambda: _dashboard_context(timezone.now()),
        settings.KAIKETSU_DASHBOARD_CACHE_SECONDS,
    )
    # The draft link leads into the admin: only for those the admin lets add an article.
    ctx["can_draft"] = access.can_edit_kb(request.user)
    return render(request, "diagnostics/console/dashboard.html", ctx)


@require_GET
@access.required(access.can_see_blind_spots)
def unmatched_view(request: HttpRequest) -> HttpResponse:
    """The texts nothing matched, with their one-click draft: also for KB admins, who write
    the missing articles but are not the helpdesk (the dashboard is not theirs)."""
    ctx = {
        "unmatched": dashboard.unmatched_texts(timezone.now()),
        "threshold": dashboard.THRESHOLD,
        "can_draft": access.can_edit_kb(request.user),
    }
    return render(request, "diagnostics/console/unmatched.html", ctx)


def machines_with_last_diagnosis():
    """Machines with their credential and their latest diagnosis, in one query."""
    last = Job.objects.filter(machine=OuterRef("pk"), kind=Job.Kind.DIAGNOSE).order_by(
        "-created_at", "-id"
    )
    return (
        Machine.objects.select_related("credential")
        .prefetch_related("owners")
        .annotate(
            last_job_id=Subquery(last.values("id")[:1]),
            last_status=Subquery(last.values("status")[:1]),
            last_outcome=Subquery(last.values("outcome")[:1]),
            last_at=Subquery(last.values("created_at")[:1]),
        )
        .order_by("name")
    )


@require_GET
@access.required(access.can_see_machines)
def machines(request: HttpRequest) -> HttpResponse:
    qs = machines_with_last_diagnosis()
    q = request.GET.get("q", "").replace("\x00", "").strip()[:100]  # PostgreSQL refuses NUL
    if q:
        qs = qs.filter(
            Q(name__icontains=q) | Q(address__icontains=q) | Q(owners__username__icontains=q)
        ).distinct()
    page = Paginator(qs, MACHINES_PER_PAGE).get_page(request.GET.get("page"))
    statuses = dict(Job.Status.choices)
    outcomes = dict(Job.Outcome.choices)
    for machine in page:
        # Why the portal will not send the credential there (an unapproved or unverified
        # target): the helpdesk sees it before a test connection says so.
        machine.refusal = machine.credential_refusal()
        machine.last_label = (
            outcomes.get(machine.last_outcome) if machine.last_outcome else None
        ) or statuses.get(machine.last_status, "")
    return render(
        request,
        "diagnostics/console/machines.html",
        {"page": page, "q": q, "can_import": access.can_import_machines(request.user)},
    )


def _csv_text(request: HttpRequest) -> str:
    upload = request.FILES.get("file")
    if upload is not None:
        if upload.size > machine_import.MAX_BYTES:
            raise ValueError(gettext("The file is too large (at most 2 MB)."))
        return machine_import.decode(upload.read())
    return request.POST.get("csv", "")


@require_http_methods(["GET", "POST"])
@access.required(access.can_import_machines)
def machines_import(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST action=check: the dry run. POST action=import: write all or none."""
    ctx: dict = {"update": bool(request.POST.get("update")), "report": None, "csv": ""}
    if request.method == "GET":
        return render(request, "diagnostics/console/import.html", ctx)
    try:
        text = _csv_text(request)
    except ValueError as exc:
        messages.error(request, str(exc))
        return render(request, "diagnostics/console/import.html", ctx, status=400)
    ctx["csv"] = text
    if request.POST.get("action") == "import":
        try:
            result = machine_import.import_machines(text, user=request.user, update=ctx["update"])
        except machine_import.ImportRefused as exc:
            ctx["report"] = exc.args[0]
            messages.error(request, gettext("Nothing was imported: the file has bad rows."))
            return render(request, "diagnostics/console/import.html", ctx, status=400)
        messages.success(
            request,
            ngettext(
                "Imported %(created)s new machine, updated %(updated)s.",
                "Imported %(created)s new machines, updated %(updated)s.",
                result.created,
            )
            % {"created": result.created, "updated": result.updated},
        )
        return redirect("diagnostics:machines")
    ctx["report"] = machine_import.check(text, user=request.user, update=ctx["update"])
    return render(request, "diagnostics/console/import.html", ctx)


@require_POST
@access.required(access.can_see_machines)
def machine_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Enqueue a connection test and answer with the polling fragment (or its page)."""
    machine = get_object_or_404(Machine, pk=pk)
    token = connectivity.start(machine)
    if not request.htmx:
        return redirect("diagnostics:machine-test-result", pk=machine.pk, token=token)
    ctx = {"machine": machine, "token": token, "test": connectivity.result(machine.pk, token)}
    return render(request, "diagnostics/console/machines.html#test-result", ctx)


@require_GET
@access.required(access.can_see_machines)
def machine_test_result(request: HttpRequest, pk: int, token: str) -> HttpResponse:
    machine = get_object_or_404(Machine, pk=pk)
    test = connectivity.result(machine.pk, token)
    if test is None:
        raise Http404
    ctx = {"machine": machine, "token": token, "test": test}
    if request.htmx:
        return render(request, "diagnostics/console/machines.html#test-result", ctx)
    return render(request, "diagnostics/console/test_result.html", ctx)
