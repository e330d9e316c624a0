"""Employee pages: paste an error, pick a machine, read the article, diagnose, watch the job."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnostics import (
    access,
    assessment,
    audit_words,
    dashboard,
    handovers,
    jobs,
    kbindex,
    live,
    match_words,
    plans,
    workflows,
)
from diagnostics.models import AgentTask, Article, Check, Job, StepResult, active_lang
from diagnostics.workflows import fixes
from diagnostics.workflows.diagnosis import start_diagnosis

MAX_PASTE_CHARS = 100_000


def _search_context(data: QueryDict) -> dict:
    text = data.get("q", "")
    ctx: dict = {"q": text, "result": None, "error": None}
    if len(text) > MAX_PASTE_CHARS:
        ctx["error"] = _(
            "The text is too long (%(n)s characters). Paste only the error message, "
            "at most %(max)s characters."
        ) % {"n": f"{len(text):,}", "max": f"{MAX_PASTE_CHARS:,}"}
    elif text.strip():
        lang = active_lang()
        result = kbindex.find(text, lang)
        ctx["result"] = result
        ctx["lang"] = lang
        ctx["codes"] = match_words.code_rows(result, lang)
        ctx["highlight"] = result.matches[0].highlight if result.matches else []
    return ctx


@require_http_methods(["GET", "POST"])
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The paste box. The form POSTs (a long paste never travels in a URL, and only a
    request carrying the CSRF token may add to the blind spots); a GET link still searches."""
    data = request.POST if request.method == "POST" else request.GET
    ctx = _search_context(data)
    result = ctx["result"]
    # The button, with or without htmx; never a keystroke of the live suggestions, never a GET
    # (a cross-site link must not write to the dashboard).
    submitted = request.method == "POST" and ("go" in data or not request.htmx)
    if result is not None and not result.confident and submitted:
        # A submitted search that found nothing good: the dashboard lists these as the
        # knowledge base's blind spots.
        dashboard.record_unmatched(ctx["q"], result.matches[0].score if result.matches else None)
    ctx["machines"] = request.user.machines.all()
    ctx["machine_id"] = data.get("machine", "")
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
    machine = access.machine_for(request.user, request.POST.get("machine"))
    try:
        score = float(request.POST.get("score") or "nan")
        score = score if 0.0 <= score <= 1.0 else None
    except ValueError:
        score = None
    try:
        job = start_diagnosis(
            request.user, machine, article, request.POST.get("q", "")[:MAX_PASTE_CHARS], score
        )
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnostics:article", slug=article.slug)
    return redirect("diagnostics:job-detail", pk=job.pk)


def _rows(job: Job, results: dict[str, StepResult]) -> list[dict]:
    """Planned steps (pending until their result arrives), then any unplanned results."""
    planned = workflows.planned_steps(job)
    rows = [
        {"step_id": s.id, "title": s.title, "phase": s.phase, "check": s.check,
         "phase_label": StepResult.Phase(s.phase).label, "result": results.get(s.id)}
        for s in planned
    ]  # fmt: skip
    known = {s.id for s in planned}
    for r in sorted(results.values(), key=lambda r: r.position):
        if r.step_id not in known:  # e.g. an automatic roll-back
            title = r.kb_check.tr("title") if r.kb_check else r.get_phase_display()
            rows.append(
                {"step_id": r.step_id, "title": title, "phase": r.phase, "check": r.kb_check,
                 "phase_label": r.get_phase_display(), "result": r}
            )  # fmt: skip
    return rows


def _finding(row: dict | None, kind: str, fix_title: str = "", inferred: dict | None = None):
    """One entry of the verdict: the problem in the employee's words, its cause, the action."""
    if inferred is not None:  # a cause no check reads: its title already names the problem
        problem = inferred["title"].get(active_lang()) or inferred["title"].get("en", "")
        cause = inferred["explanation"].get(active_lang()) or inferred["explanation"].get("en", "")
    elif row["check"] is not None:
        problem, cause = assessment.problem_words(row["check"])
    else:
        problem, cause = row["title"], ""
    return {"kind": kind, "problem": problem, "cause": cause, "fix": fix_title, "row": row}


def _findings(
    job: Job, rows: list[dict], offers: list, found: plans.Assessment | None
) -> list[dict]:
    """What the verdict lists: proven problems first, then suspects, then what could not tell.

    A diagnosis is read through its assessment, so a failed check that does not apply here
    (``when``) or that no current error points to is never called a problem; a fix job's
    verification lists every check that still fails.
    """
    failed = [
        r
        for r in rows
        if r["result"] is not None
        and r["result"].verdict in ("fail", "error", "unknown")
        and r["phase"] in ("check", "verify")
    ]
    cannot = [_finding(r, "cannot") for r in failed if r["result"].verdict != "fail"]
    if found is None:
        return [_finding(r, "problem") for r in failed if r["result"].verdict == "fail"] + cannot
    offered = {o.fix.key: o.fix.tr("title") for o in offers}
    status = {f.key: f for f in found.findings}
    out = []
    for row in failed:
        finding = status.get(row["check"].key) if row["check"] is not None else None
        if finding is not None and finding.status == plans.CauseStatus.PROVEN:
            out.append(_finding(row, "problem", offered.get(finding.fix or "", "")))
    inferred = {c["key"]: c for c in job.article.inferred or []}
    for finding in found.with_status(plans.CauseStatus.PROVEN):
        if finding.inferred and finding.key in inferred:
            out.append(
                _finding(None, "problem", offered.get(finding.fix or "", ""), inferred[finding.key])
            )
    for row in failed:
        finding = status.get(row["check"].key) if row["check"] is not None else None
        if finding is not None and finding.status == plans.CauseStatus.SUSPECT:
            out.append(_finding(row, "suspect"))
    return out + cannot


def job_context(job: Job) -> dict:
    """Everything the job page and its live fragments need, from the database."""
    results = {r.step_id: r for r in job.steps.select_related("kb_check__fix")}
    rows = _rows(job, results)
    done = sum(1 for r in rows if r["result"] is not None)
    offers = fixes.offered_fixes(job) if job.outcome == Job.Outcome.PROBLEMS else []
    found = assessment.assess_job(job)  # None unless a finished diagnosis
    findings = _findings(job, rows, offers, found) if job.status == Job.Status.DONE else []
    return {
        "job": job,
        "rows": rows,
        "done": done,
        "total": len(rows),
        "percent": int(100 * done / len(rows)) if rows else 100,
        "findings": findings,
        "problems": [f for f in findings if f["kind"] == "problem"],
        "cannot_tell": any(f["kind"] == "cannot" for f in findings),
        # The evidence and what it means, worded now in the reader's language.
        "verdict_text": assessment.verdict_text(found) if found else "",
        "offers": offers,
        "children": list(job.children.order_by("-created_at")),
        "can_retry": fixes.may_retry_with_restart(job),
        "restart_now_seconds": settings.KAIKETSU_RESTART_NOW_SECONDS,
        # What a finished roll-back could not put back (a PSK), so the page never claims all.
        "kept": fixes.rollback_preview(job.parent)[1]
        if job.kind == Job.Kind.ROLLBACK and job.is_finished
        else [],
        "rollback_target": fixes.rollback_target(job),
        "rollback_waits": fixes.rollback_waits_for_restart(job) and job.is_finished,
        "handover": handovers.for_job(job),
        # A plan handed to the machine's agent and not fetched yet (issue #14).
        "agent_waiting": not job.is_finished
        and job.agent_tasks.filter(status=AgentTask.Status.WAITING).exists(),
    }


def step_row_context(job: Job, step_id: str) -> dict:
    results = {
        r.step_id: r for r in job.steps.select_related("kb_check__fix").filter(step_id=step_id)
    }
    row = next((r for r in _rows(job, results) if r["step_id"] == step_id), None)
    return {"row": row or {"step_id": step_id, "title": step_id, "result": None}}


@require_GET
@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    # Read the stream position before the database: anything newer is replayed by the
    # event stream, and rows are replaced by id, so nothing is missed or shown twice.
    after = live.last_id(pk)
    job = access.job_for(request.user, pk)
    ctx = job_context(job)
    ctx["after"] = after
    if request.htmx:
        return render(request, "diagnostics/job.html#job-body", ctx)
    return render(request, "diagnostics/job.html", ctx)


@login_required
def fix_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """Show exactly what each offered fix changes; on POST, request the chosen fixes."""
    diagnosis = access.job_to_act_on(request.user, pk)
    offers = fixes.offered_fixes(diagnosis)
    if not offers:
        messages.error(request, _("This diagnosis offers no automatic fix."))
        return redirect("diagnostics:job-detail", pk=diagnosis.pk)
    if request.method == "POST":
        try:
            delay = int(request.POST.get("delay") or 0) or None
        except ValueError:
            delay = None
        try:
            job = fixes.request_fix(
                request.user,
                diagnosis,
                request.POST.getlist("fix"),
                request.POST.get("restart", ""),
                delay,
            )
        except jobs.JobRefused as exc:
            messages.error(request, str(exc))
            return redirect("diagnostics:fix-confirm", pk=diagnosis.pk)
        return redirect("diagnostics:job-detail", pk=job.pk)
    return render(
        request,
        "diagnostics/fix_confirm.html",
        {
            "job": diagnosis,
            "offers": offers,
            "needs_restart": any(o.fix.restart_required for o in offers),
            # Fixes that need the helpdesk start unticked unless nothing else is offered.
            "all_need_approval": all(o.fix.needs_approval for o in offers),
            "delays": settings.KAIKETSU_RESTART_DELAYS,
            "restart_now_seconds": settings.KAIKETSU_RESTART_NOW_SECONDS,
        },
    )


@login_required
def job_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    """Say what a roll-back puts back, what it cannot and whether it restarts; on POST, do it."""
    fix_job = access.job_to_act_on(request.user, pk)  # the case's employee, or the helpdesk
    if request.method == "POST":
        try:
            job = fixes.request_rollback(request.user, fix_job)
        except jobs.JobRefused as exc:
            messages.error(request, str(exc))
            return redirect("diagnostics:job-detail", pk=fix_job.pk)
        return redirect("diagnostics:job-detail", pk=job.pk)
    steps, kept = fixes.rollback_preview(fix_job)
    if fix_job.kind != Job.Kind.FIX or not steps:
        messages.error(request, _("This fix changed nothing that can be rolled back."))
        return redirect("diagnostics:job-detail", pk=fix_job.pk)
    return render(
        request,
        "diagnostics/rollback_confirm.html",
        {
            "job": fix_job,
            "steps": steps,
            "kept": kept,
            "restarts": fixes.rollback_restarts(fix_job),
            "restart_now_seconds": settings.KAIKETSU_RESTART_NOW_SECONDS,
        },
    )


@require_POST
@login_required
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Run a fix that ended Not fixed again with a restart now (it needed one)."""
    fix_job = access.job_to_act_on(request.user, pk)
    try:
        job = fixes.retry_with_restart(request.user, fix_job)
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnostics:job-detail", pk=fix_job.pk)
    return redirect("diagnostics:job-detail", pk=job.pk)


@require_POST
@login_required
def job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = access.job_to_act_on(request.user, pk)
    try:
        fixes.resume(job, request.user, restart_now=request.POST.get("action") == "restart")
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
    return redirect("diagnostics:job-detail", pk=job.pk)


@require_GET
@access.required(access.can_approve_fixes)
def approvals(request: HttpRequest) -> HttpResponse:
    """The helpdesk's queue of fixes waiting for approval."""
    waiting = list(
        Job.objects.filter(status=Job.Status.APPROVAL)
        .select_related("machine", "article", "user", "parent__article")
        .prefetch_related("audit")
        .order_by("created_at")
    )
    for job in waiting:  # one's own request shows why, instead of a button that is refused
        job.approval = access.may_approve(request.user, job)
        job.card = audit_words.approval_card(job)
    return render(request, "diagnostics/approvals.html", {"jobs": waiting})


@require_POST
@access.required(access.can_approve_fixes)
def approval_decide(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=pk)
    approve = request.POST.get("decision") == "approve"
    try:
        fixes.decide(job, request.user, approve, request.POST.get("note", "")[:2000])
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Approved.") if approve else _("Declined."))
    return redirect("diagnostics:approvals")
