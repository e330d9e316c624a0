"""Server-sent events for a running job, fed by the job's Redis stream (ASGI, async).

Each event carries ready HTML rendered from the database in the viewer's language; the
browser's htmx SSE extension swaps it in by event name: one name per step row, "progress"
after every event, "verdict" on a change of status (approved, restarting, back up) and
"done" at the end. EventSource resends Last-Event-ID on reconnect, so a dropped connection
resumes where it stopped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from diagnostics import access, live
from diagnostics.models import Job
from diagnostics.views.pages import job_context, step_row_context

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
FINAL_PARTS = ("progress", "steps-table", "verdict")

# Streams open in this process, per user: a person needs one per job page they watch;
# hundreds are a script or a loop, and each costs the process a socket and renders.
_open_streams: Counter[int] = Counter()


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
    try:
        async for chunk in _followed(request, job, after):
            yield chunk
    except live.LiveUnavailable:
        return  # Redis stalled or went away: the browser reconnects after `retry` and resumes


async def _followed(request: HttpRequest, job: Job, after: str) -> AsyncIterator[str]:
    """The events of a job still under way, as they arrive, until its end."""
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


class _Counted:
    """A user's event stream, counted among their open streams from the view on until it ends,
    fails, is cancelled (the page closed) or is dropped unsent: counting at the view, not at
    the first byte, so that pages opened at the same moment cannot all pass the cap."""

    def __init__(self, user_id: int, events: AsyncIterator[str]) -> None:
        self.user_id, self.events, self.counted = user_id, events, True
        _open_streams[user_id] += 1

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> str:
        try:
            return await anext(self.events)
        except BaseException:  # the end, an error or a cancelled page: no longer open
            self.release()
            raise

    def release(self) -> None:
        if self.counted:
            self.counted = False
            _open_streams[self.user_id] -= 1
            if not _open_streams[self.user_id]:
                del _open_streams[self.user_id]

    def __del__(self) -> None:
        self.release()


def _refusal(user_id: int) -> HttpResponse | None:
    """A 429 when this user, or everyone together, already holds the most streams allowed."""
    if _open_streams[user_id] >= settings.KAIKETSU_SSE_PER_USER:
        why = _("You have too many live job pages open. Close some and reload this one.")
    elif _open_streams.total() >= settings.KAIKETSU_SSE_TOTAL:
        why = _("The portal is following too many live job pages. Reload in a minute.")
    else:
        return None
    return HttpResponse(why, status=429, content_type="text/plain; charset=utf-8")


async def job_events(request: HttpRequest, pk: int) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        raise Http404
    request.user = user
    job = await sync_to_async(access.job_for)(user, pk)
    refusal = _refusal(user.pk)
    if refusal is not None:
        return refusal
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    if not STREAM_ID.match(after):
        after = "0"
    events = _Counted(user.pk, _events(request, job, after))
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
