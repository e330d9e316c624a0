"""Hand-overs and "my jobs": the employee's side and the helpdesk's inbox.

The employee hands over their own jobs (or a text nothing matched) and reads the answers;
anyone else gets 404. The inbox (open / mine / closed) is the helpdesk's; they take, reply and
close there. Every move is ``handovers.py``'s; these views only check who asks and redirect.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from diagnostics import access, assessment, handovers, history
from diagnostics.handovers import HandOverRefused
from diagnostics.models import HandOver, HandOverMessage, Job, StepResult

MAX_TEXT_CHARS = 100_000  # as the paste box: a longer text is cut, like a search
JOBS_PER_PAGE = 30
INBOX_PAGE = 50
TABS = ("open", "mine", "closed")


def _site(request: HttpRequest) -> str:
    """This portal's address as the person asking reached it: the e-mails' links start here."""
    return request.build_absolute_uri("/").rstrip("/")


def _thread() -> Prefetch:
    return Prefetch("messages", queryset=HandOverMessage.objects.select_related("author"))


# --- the employee ----------------------------------------------------------------------------


@require_POST
@login_required
def job_handover(request: HttpRequest, pk: int) -> HttpResponse:
    job = access.own_job(request.user, pk)
    try:
        handovers.hand_over_job(request.user, job, request.POST.get("note", ""), _site(request))
    except HandOverRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("The helpdesk has this job with its whole transcript."))
    return redirect("diagnostics:job-detail", pk=job.pk)


@require_POST
@login_required
def handover_create(request: HttpRequest) -> HttpResponse:
    """From "no confident match": the pasted text, the machine if one was picked, a note."""
    picked = request.POST.get("machine")
    machine = access.machine_for(request.user, picked) if picked else None
    try:
        handover = handovers.hand_over_text(
            request.user,
            request.POST.get("q", "")[:MAX_TEXT_CHARS],
            machine,
            request.POST.get("note", ""),
            _site(request),
        )
    except HandOverRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnostics:home")
    messages.success(request, _("The helpdesk has your text. Their answer appears here."))
    return redirect("diagnostics:handover", pk=handover.pk)


@require_GET
@login_required
def handover_detail(request: HttpRequest, pk: int) -> HttpResponse:
    handover = access.own_handover(request.user, pk)
    template = "_handover_live.html" if request.htmx else "handover.html"  # the poll: its part
    return render(request, f"diagnostics/{template}", {"handover": handover})


@require_POST
@login_required
def handover_reply(request: HttpRequest, pk: int) -> HttpResponse:
    handover = access.own_handover(request.user, pk)
    try:
        handovers.reply(handover, request.user, request.POST.get("body", ""), _site(request))
    except HandOverRefused as exc:
        messages.error(request, str(exc))
    if handover.job_id:
        return redirect("diagnostics:job-detail", pk=handover.job_id)
    return redirect("diagnostics:handover", pk=handover.pk)


@require_GET
@login_required
def my_jobs(request: HttpRequest) -> HttpResponse:
    """The employee's jobs (the helpdesk's follow-ups of them too), what waits for the
    helpdesk, and their hand-overs' answers."""
    own = Job.objects.filter(access.case_jobs(request.user)).select_related("machine", "article")
    page = Paginator(own.order_by("-created_at", "-id"), JOBS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    cases = (
        HandOver.objects.filter(user=request.user)
        .select_related("machine", "job__article")
        .prefetch_related(_thread())
        .order_by("-updated_at", "-id")[:20]
    )
    cases = list(cases)
    for case in cases:  # the helpdesk's latest answer, shown under each case
        case.last_reply = next((m for m in reversed(case.messages.all()) if m.from_helpdesk), None)
    ctx = {
        "page": page,
        "waiting": list(own.filter(status=Job.Status.APPROVAL).order_by("created_at")),
        "handovers": cases,
    }
    return render(request, "diagnostics/my_jobs.html", ctx)


# --- the helpdesk ----------------------------------------------------------------------------


def _inbox_rows(user, tab: str):
    qs = HandOver.objects.select_related("user", "machine", "assignee", "job__article").annotate(
        n_messages=Count("messages")
    )
    if tab == "closed":
        return qs.filter(status=HandOver.Status.CLOSED).order_by("-closed_at", "-id")
    qs = qs.exclude(status=HandOver.Status.CLOSED)
    if tab == "mine":
        qs = qs.filter(assignee=user)
    return qs.order_by("created_at", "id")  # a queue: the longest waiting first


@require_GET
@access.required(access.can_answer_handovers)
def inbox(request: HttpRequest) -> HttpResponse:
    tab = request.GET.get("tab", "open")
    if tab not in TABS:
        tab = "open"
    page = Paginator(_inbox_rows(request.user, tab), INBOX_PAGE).get_page(request.GET.get("page"))
    open_cases = HandOver.objects.exclude(status=HandOver.Status.CLOSED)
    counts = {
        "open": open_cases.count(),
        "mine": open_cases.filter(assignee=request.user).count(),
    }
    return render(
        request, "diagnostics/inbox/list.html", {"page": page, "tab": tab, "counts": counts}
    )


def _evidence(job: Job | None) -> dict:
    """What the job found, for the helpdesk: the verdict in words, what failed, its output."""
    if job is None:
        return {}
    found = assessment.assess_job(job)
    failing = job.steps.filter(
        verdict__in=[StepResult.Verdict.FAIL, StepResult.Verdict.ERROR, StepResult.Verdict.UNKNOWN]
    ).select_related("kb_check")
    return {
        "verdict": assessment.verdict_text(found) if found else "",
        "failing": list(failing.order_by("position")),
        "transcript": history.bounded(job.transcript),
    }


@require_GET
@access.required(access.can_answer_handovers)
def inbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    handover = access.handover_to_answer(request.user, pk)
    ctx = {
        "handover": handover,
        "thread": list(handover.messages.select_related("author")),
        **_evidence(handover.job),
    }
    return render(request, "diagnostics/inbox/detail.html", ctx)


def _helpdesk_move(request: HttpRequest, pk: int, move: str) -> HttpResponse:
    handover = access.handover_to_answer(request.user, pk)
    text = request.POST.get("body", "")
    try:
        if move == "reply":
            handovers.reply(handover, request.user, text, _site(request), helpdesk=True)
            messages.success(request, _("Your reply is sent."))
        elif move == "take":
            handovers.take(handover, request.user)
            messages.success(request, _("You hold this hand-over."))
        else:
            handovers.close(handover, request.user, text, _site(request))
            messages.success(request, _("Closed."))
    except HandOverRefused as exc:
        messages.error(request, str(exc))
    return redirect("diagnostics:inbox-detail", pk=handover.pk)


@require_POST
@access.required(access.can_answer_handovers)
def inbox_reply(request: HttpRequest, pk: int) -> HttpResponse:
    return _helpdesk_move(request, pk, "reply")


@require_POST
@access.required(access.can_answer_handovers)
def inbox_take(request: HttpRequest, pk: int) -> HttpResponse:
    return _helpdesk_move(request, pk, "take")


@require_POST
@access.required(access.can_answer_handovers)
def inbox_close(request: HttpRequest, pk: int) -> HttpResponse:
    return _helpdesk_move(request, pk, "close")
