"""Employee pages: paste an error, pick a machine, read the article, diagnose, watch the job."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from diagnostics import jobs, kbindex, live
from diagnostics.models import Article, Check, Job, Machine, StepResult

MAX_PASTE_CHARS = 100_000


def _lang() -> str:
    return "en" if (get_language() or "ja").startswith("en") else "ja"


def can_see_all_jobs(user) -> bool:
    return user.is_superuser or user.has_perm("diagnostics.view_job")


def _machine_for(request: HttpRequest, pk) -> Machine:
    """The machine, if the user owns it; 404 for anyone else (no hint that it exists)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404 from None
    return get_object_or_404(Machine, pk=pk, owners=request.user)


def _job_for(request: HttpRequest, pk: int) -> Job:
    """The job, for its owner and for helpdesk staff; 404 for everyone else."""
    qs = Job.objects.select_related("machine", "article", "user")
    if not can_see_all_jobs(request.user):
        qs = qs.filter(user=request.user)
    return get_object_or_404(qs, pk=pk)


def _search_context(request: HttpRequest) -> dict:
    text = request.GET.get("q", "")
    ctx: dict = {"q": text, "result": None, "error": None}
    if len(text) > MAX_PASTE_CHARS:
        ctx["error"] = _(
            "The text is too long (%(n)s characters). Paste only the error message, "
            "at most %(max)s characters."
        ) % {"n": f"{len(text):,}", "max": f"{MAX_PASTE_CHARS:,}"}
    elif text.strip():
        result = kbindex.find(text, _lang())
        ctx["result"] = result
        ctx["highlight"] = result.matches[0].highlight if result.matches else []
    return ctx


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    ctx = _search_context(request)
    ctx["machines"] = request.user.machines.all()
    ctx["machine_id"] = request.GET.get("machine", "")
    if request.htmx:
        return render(request, "diagnostics/home.html#results", ctx)
    return render(request, "diagnostics/home.html", ctx)


@require_GET
@login_required
def article_detail(request: HttpRequest, slug: str) -> HttpResponse:
    article = get_object_or_404(
        Article.objects.prefetch_related(
            Prefetch("checks", queryset=Check.objects.select_related("fix").order_by("position"))
        ),
        slug=slug,
        status=Article.Status.PUBLISHED,
    )
    machines = request.user.machines.all()
    selected = request.GET.get("machine", "")
    return render(
        request,
        "diagnostics/article.html",
        {
            "article": article,
            "machines": machines,
            "machine_id": selected,
            "q": request.GET.get("q", "")[:MAX_PASTE_CHARS],
            "score": request.GET.get("score", ""),
        },
    )


@require_POST
@login_required
def job_create(request: HttpRequest) -> HttpResponse:
    article = get_object_or_404(
        Article, slug=request.POST.get("article", ""), status=Article.Status.PUBLISHED
    )
    if not request.POST.get("machine"):
        messages.error(request, _("Pick one of your machines first."))
        return redirect("diagnostics:article", slug=article.slug)
    machine = _machine_for(request, request.POST.get("machine"))
    try:
        score = float(request.POST.get("score") or "nan")
        score = score if 0.0 <= score <= 1.0 else None
    except ValueError:
        score = None
    try:
        job = jobs.start_diagnosis(
            request.user, machine, article, request.POST.get("q", "")[:MAX_PASTE_CHARS], score
        )
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnostics:article", slug=article.slug)
    return redirect("diagnostics:job-detail", pk=job.pk)


def job_context(job: Job) -> dict:
    """Everything the job page and its live fragments need, from the database."""
    checks = list(job.article.checks.select_related("fix").order_by("position", "id"))
    results = {r.step_id: r for r in job.steps.select_related("kb_check__fix")}
    rows = [
        {"step_id": f"c{i}", "check": c, "result": results.get(f"c{i}")}
        for i, c in enumerate(checks, start=1)
    ]
    done = sum(1 for r in rows if r["result"] is not None)
    failed = [
        r for r in rows if r["result"] is not None and r["result"].verdict in ("fail", "error")
    ]
    return {
        "job": job,
        "rows": rows,
        "done": done,
        "total": len(rows),
        "percent": int(100 * done / len(rows)) if rows else 100,
        "failed": failed,
    }


def step_row_context(job: Job, step_id: str) -> dict:
    result = (
        StepResult.objects.select_related("kb_check__fix").filter(job=job, step_id=step_id).first()
    )
    return {
        "row": {"step_id": step_id, "check": result.kb_check if result else None, "result": result}
    }


@require_GET
@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_for(request, pk)
    # Read the stream position before the database: anything newer is replayed by the
    # event stream, and rows are replaced by id, so nothing is missed or shown twice.
    after = live.last_id(job.pk)
    job.refresh_from_db()
    ctx = job_context(job)
    ctx["after"] = after
    if request.htmx:
        return render(request, "diagnostics/job.html#job-body", ctx)
    return render(request, "diagnostics/job.html", ctx)
