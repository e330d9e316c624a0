"""Server-sent events for a running job, fed by the job's Redis stream (ASGI, async).

Each event carries ready HTML rendered from the database in the viewer's language; the
browser's htmx SSE extension swaps it in by event name: one name per step row, "progress"
after every event, "verdict" on a change of status (approved, restarting, back up) and
"done" at the end. EventSource resends Last-Event-ID on reconnect, so a dropped connection
resumes where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.loader import render_to_string

from diagnostics import access, live
from diagnostics.models import Job
from diagnostics.views.pages import job_context, step_row_context

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
FINAL_PARTS = ("progress", "steps-table", "verdict")


def _sse(event: str, html: str, event_id: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in html.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def _render_step(request: HttpRequest, job: Job, step_id: str) -> str:
    ctx = step_row_context(job, step_id)
    return render_to_string("diagnostics/job.html#step-row", ctx, request=request)


def _is_finished(job: Job) -> bool:
    job.refresh_from_db(fields=["status"])
    return job.is_finished


def _render(request: HttpRequest, job: Job, *parts: str) -> list[str]:
    """Partials of the job page, rendered from the job as it is now in the database.

    With the request, as the page itself is: the forms that arrive live (verify, restart
    now, roll back, hand over) carry the viewer's CSRF token, or their POST is refused.
    """
    job.refresh_from_db(from_queryset=Job.objects.select_related("machine", "article", "user"))
    ctx = job_context(job)
    return [
        render_to_string(f"diagnostics/job.html#{part}", ctx, request=request) for part in parts
    ]


async def _events(request: HttpRequest, job: Job, after: str) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    if job.is_finished:
        progress, table, verdict = await sync_to_async(_render)(request, job, *FINAL_PARTS)
        yield _sse("progress", progress)
        yield _sse("steps", table)
        yield _sse("done", verdict)
        return
    async for item in live.follow(job.pk, after):
        if item is None:
            yield ": keep-alive\n\n"
            continue
        event_id, event, data = item
        if event == "step" and isinstance(data.get("step"), str):
            html = await sync_to_async(_render_step)(request, job, data["step"])
            yield _sse(f"step-{data['step']}", html, event_id)
        finished = event == "done" or await sync_to_async(_is_finished)(job)
        if not finished and event == "status":  # approved, restarting, back up
            progress, verdict = await sync_to_async(_render)(request, job, "progress", "verdict")
            yield _sse("progress", progress, event_id)
            yield _sse("verdict", verdict, event_id)
            continue
        if not finished:  # only the bar: the verdict and the table wait for the end
            (progress,) = await sync_to_async(_render)(request, job, "progress")
            yield _sse("progress", progress, event_id)
            continue
        progress, table, verdict = await sync_to_async(_render)(request, job, *FINAL_PARTS)
        yield _sse("progress", progress, event_id)
        yield _sse("steps", table, event_id)  # rows no one planned (an automatic roll-back)
        yield _sse("done", verdict, event_id)
        return


async def job_events(request: HttpRequest, pk: int) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        raise Http404
    request.user = user
    job = await sync_to_async(access.job_for)(user, pk)
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    if not STREAM_ID.match(after):
        after = "0"
    response = StreamingHttpResponse(_events(request, job, after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
