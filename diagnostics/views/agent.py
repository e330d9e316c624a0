"""The agent's HTTP endpoints (issue #14): enrol, long-poll for work, post result lines.

These are the only URLs the internet must reach (docs/agent.md). They are not user pages: no
session, no CSRF (nothing a browser could be tricked into sending carries the agent's
credential), every call but enrolment authenticated by the machine's own credential. A refusal
is a JSON ``{"error": ...}`` with the status that says why, and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from diagnostics import agent_inbox, agents
from diagnostics.models import Machine

MAX_ENROL_BODY = 4096
WORK_PER_WINDOW = 30  # polls per 10 s: an agent polls once per answer, so this is a loop
LINES_PER_WINDOW = 300


def _refused(error: agents.AgentRefused) -> JsonResponse:
    return JsonResponse({"error": str(error)}, status=error.status)


def _checked_in(request: HttpRequest, what: str, most: int) -> Machine:
    """The calling machine (credential checked, flood limited), its last-seen updated."""
    machine = agents.authenticate(request.headers.get("Authorization", ""))
    agents.limit_rate(machine, what, most)
    fields: dict[str, Any] = {"agent_last_seen": timezone.now()}
    for field, name in (("agent_boot", "boot"), ("agent_version", "version")):
        value = request.GET.get(name, "")[:64]
        if value:
            fields[field] = value[: Machine._meta.get_field(field).max_length]
    Machine.objects.filter(pk=machine.pk).update(**fields)
    for field, value in fields.items():
        setattr(machine, field, value)
    return machine


@csrf_exempt
@require_POST
def enrol(request: HttpRequest) -> HttpResponse:
    if len(request.body) > MAX_ENROL_BODY:
        return JsonResponse({"error": "enrolment body too large"}, status=413)
    try:
        body = json.loads(request.body)
        fields = {k: str(body[k]) for k in agents.PROTOCOL["enrol_fields"]}
    except (ValueError, TypeError, KeyError):
        need = ", ".join(agents.PROTOCOL["enrol_fields"])
        return JsonResponse({"error": f"expected a JSON object with {need}"}, status=400)
    try:
        machine, credential = agents.enrol(
            fields["token"], fields["computer_name"], fields["version"], fields["boot"]
        )
    except agents.AgentRefused as error:
        return _refused(error)
    return JsonResponse(
        {
            "machine": machine.name,
            "credential": credential,
            "public_key": agents.public_key(),
            "poll_seconds": settings.KAIKETSU_AGENT_POLL_SECONDS,
        }
    )


def _start_poll(request: HttpRequest) -> Machine:
    try:
        machine = _checked_in(request, "work", WORK_PER_WINDOW)
        agent_inbox.agent_broke_off(machine)  # a plan it fetched and never ended is over
        return machine
    finally:
        connection.close()


def _fetch(machine: Machine) -> dict[str, Any] | None:
    try:
        found = agent_inbox.agent_fetch(machine)
        if found is None:
            return None
        task, plan = found
        return {"task": task.pk, **agents.sign_plan(task.job_id, task.pk, machine, plan)}
    finally:
        connection.close()  # a held poll keeps no database connection


@require_GET
async def work(request: HttpRequest) -> HttpResponse:
    """Long poll: the next signed plan for this machine, or 204 after the poll time."""
    try:
        machine = await sync_to_async(_start_poll)(request)
    except agents.AgentRefused as error:
        return _refused(error)
    seconds = settings.KAIKETSU_AGENT_POLL_SECONDS

    async def fetch() -> dict[str, Any] | None:
        # Off the shared thread: one slow database call must not queue every other poll.
        return await sync_to_async(_fetch, thread_sensitive=False)(machine)

    # The wake-up is published after the task is committed; the timer only covers a lost one.
    found = await agents.hub.wait(machine.pk, fetch, timeout=seconds, recheck_s=seconds)
    if not found:
        return HttpResponse(status=agents.PROTOCOL["status"]["no_work"])
    return JsonResponse(found)


@csrf_exempt
@require_POST
def lines(request: HttpRequest, task: int) -> HttpResponse:
    """Result lines of one of the machine's tasks, as the runner wrote them (JSON lines)."""
    try:
        machine = _checked_in(request, "lines", LINES_PER_WINDOW)
        if len(request.body) > agents.PROTOCOL["max_lines_body"]:
            raise agents.AgentRefused(413, "body larger than 1 MiB")
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise agents.AgentRefused(400, "the body is not UTF-8") from None
        recorded = agent_inbox.agent_lines(machine, task, text)
    except agents.AgentRefused as error:
        return _refused(error)
    return JsonResponse({"recorded": recorded})
