"""Fleet scans for the helpdesk: start one, watch it live, filter and export its results."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django import forms
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from diagnostics import access
from diagnostics.jobs import JobRefused
from diagnostics.models import Article, Job, Scan, StepResult
from diagnostics.views.history import csv_cell
from diagnostics.workflows import scan as scans

RESULTS = {  # the results table's filter: URL word -> which jobs
    "problems": {"outcome": Job.Outcome.PROBLEMS},
    "healthy": {"outcome": Job.Outcome.HEALTHY},
    "unreachable": {"outcome": Job.Outcome.ERROR},
    "running": {"status__in": Job.ACTIVE},
}


class ScanForm(forms.Form):
    article = forms.ModelChoiceField(
        Article.objects.filter(status=Article.Status.PUBLISHED), label=gettext_lazy("Article")
    )
    owner = forms.CharField(
        label=gettext_lazy("Owner (user name or e-mail)"), required=False, max_length=150
    )
    name_pattern = forms.CharField(
        label=gettext_lazy("Machine name pattern, e.g. pc-tokyo-*"), required=False, max_length=100
    )
    failed_days = forms.IntegerField(
        label=gettext_lazy("Only machines that failed in the last N days"),
        required=False,
        min_value=1,
        max_value=365,
    )

    def selection(self) -> scans.Selection:
        data = self.cleaned_data
        return scans.Selection(
            data["owner"].strip(), data["name_pattern"].strip(), data["failed_days"]
        )


@require_http_methods(["GET", "POST"])
@access.required(access.can_scan_fleet)
def scan_list(request: HttpRequest) -> HttpResponse:
    form = ScanForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            scan = scans.start_scan(request.user, form.cleaned_data["article"], form.selection())
        except JobRefused as exc:
            messages.error(request, str(exc))
        else:
            return redirect("diagnostics:scan", pk=scan.pk)
    recent = Scan.objects.select_related("article", "created_by")[:30]
    return render(request, "diagnostics/console/scans.html", {"form": form, "scans": recent})


@require_GET
@access.required(access.can_scan_fleet)
def scan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scan = get_object_or_404(Scan.objects.select_related("article", "created_by"), pk=pk)
    show = request.GET.get("show", "")
    results = _results(scan, show)
    ctx = {
        "scan": scan,
        "summary": scans.summary(scan),
        "results": results,
        "show": show if show in RESULTS else "",
        "filters": [
            ("", _("All")),
            ("problems", _("Problems found")),
            ("healthy", _("No problem found")),
            ("unreachable", _("Could not run")),
            ("running", _("Running")),
        ],
    }
    if request.htmx:
        return render(request, "diagnostics/console/scan.html#scan-live", ctx)
    return render(request, "diagnostics/console/scan.html", ctx)


def _results(scan: Scan, show: str):
    failing = StepResult.objects.filter(phase=StepResult.Phase.CHECK).exclude(
        verdict=StepResult.Verdict.PASS
    )
    return (
        scan.jobs.filter(**RESULTS.get(show, {}))
        .select_related("machine")
        .prefetch_related(
            Prefetch("steps", queryset=failing.select_related("kb_check"), to_attr="failing")
        )
        .order_by("machine__name")
    )


@require_GET
@access.required(access.can_scan_fleet)
def scan_export(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    scan = get_object_or_404(Scan, pk=pk)
    rows = _results(scan, request.GET.get("show", ""))

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        buffer.write("\ufeff")  # the BOM: Excel then reads the file as UTF-8 (Japanese text)
        out = csv.writer(buffer)
        out.writerow(["machine", "job", "status", "outcome", "failing checks", "error"])
        for job in rows.iterator(chunk_size=500):
            failing = "; ".join(s.kb_check.key for s in job.failing if s.kb_check)
            row = [job.machine.name, job.pk, job.status, job.outcome, failing, job.error[:300]]
            out.writerow([csv_cell(v) for v in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        for skipped in scan.skipped:
            out.writerow([skipped.get("name", ""), "", "skipped", "", "", csv_cell(skipped["why"])])
        yield buffer.getvalue()

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="kaiketsu-scan-{scan.pk}.csv"'
    return response
