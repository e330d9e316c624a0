"""The KB admin's pages outside the Django admin: trying a draft article on a machine."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from diagnostics import access, jobs
from diagnostics.models import Article
from diagnostics.workflows.diagnosis import start_diagnosis


@require_POST
@access.required(access.can_edit_kb)
def try_on_machine(request: HttpRequest, pk: int) -> HttpResponse:
    """Run a draft's checks (a diagnosis: read-only, a draft offers no fix) on a machine the
    KB admin owns, and show the verdict page an employee would get."""
    article = get_object_or_404(Article, pk=pk)
    preview = redirect("admin:diagnostics_article_preview", article.pk)
    if article.status != Article.Status.DRAFT:
        messages.error(
            request, _("A published article is tried from its page, like an employee would.")
        )
        return preview
    machine = access.machine_for(request.user, request.POST.get("machine"))
    try:
        job = start_diagnosis(request.user, machine, article)
    except jobs.JobRefused as exc:
        messages.error(request, str(exc))
        return preview
    return redirect("diagnostics:job-detail", pk=job.pk)
