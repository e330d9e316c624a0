"""The web half of the agent channel (issue #14): what the agent's calls do to jobs.

The engine (``jobs.execute``) hands plans to ``AgentTask`` rows and waits; these functions,
called by ``views/agent.py``, give a machine its oldest waiting plan, record the lines it
posts with the engine's own recorder (database, Redis stream, live page) and wake the job when
the plan has ended. Every check is made before anything is written, so a bad call changes
nothing.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from diagnostics import jobs, live, vault
from diagnostics.agents import AgentRefused
from diagnostics.jobs import MAX_TRANSCRIPT, Recorder, Step
from diagnostics.models import AgentTask, Check, Job, Machine
from diagnostics.plans import parse_line


def agent_fetch(machine: Machine) -> tuple[AgentTask, dict[str, Any]] | None:
    """The oldest plan waiting for this machine, now marked sent; None when there is none.

    The plan leaves the database as it leaves for the PC: only its masked copy stays.
    """
    waiting = AgentTask.objects.filter(machine=machine, status=AgentTask.Status.WAITING)
    for task in waiting.select_related("job").order_by("id"):
        if task.job.status not in Job.ACTIVE:  # the job ended meanwhile (cancelled, reaped)
            jobs.take_task(task)
            continue
        plan = json.loads(vault.decrypt(task.plan_encrypted))
        now = timezone.now()
        if waiting.filter(pk=task.pk).update(
            status=AgentTask.Status.SENT,
            sent_at=now,
            agent_boot=machine.agent_boot,
            plan_encrypted="",
        ):
            task.status, task.sent_at = AgentTask.Status.SENT, now
            live.publish(task.job_id, "status", {"status": task.job.status, "agent": "sent"})
            return task, plan
    return None


def agent_broke_off(machine: Machine) -> None:
    """The agent asks for work while a plan it fetched never ended: it restarted or crashed
    mid-plan. That plan ends now as a broken connection, and its job goes on."""
    broken = AgentTask.objects.filter(machine=machine, status=AgentTask.Status.SENT)
    for task_id, job_id in broken.values_list("pk", "job_id"):
        if broken.filter(pk=task_id).update(
            status=AgentTask.Status.DONE, failure="protocol", done_at=timezone.now()
        ):
            jobs.wake_job(job_id)


MAX_AGENT_LINE = 1024 * 1024


def agent_lines(machine: Machine, task_id: int, text: str) -> int:
    """Record result lines the agent posted for one of its tasks; how many were recorded.

    Every line is checked before any is recorded, so a bad batch changes nothing. The last
    line (``end`` or ``fatal``) ends the task and wakes its job.
    """
    task = AgentTask.objects.filter(pk=task_id, machine=machine).select_related("job").first()
    if task is None:  # another machine's task looks exactly like one that does not exist
        raise AgentRefused(404, "no such task for this machine")
    if task.status != AgentTask.Status.SENT or task.job.is_finished:  # e.g. cancelled, reaped
        raise AgentRefused(409, "this task is not running; its lines are closed")
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_AGENT_LINE:
            raise AgentRefused(413, f"line {number} is longer than 1 MiB")
        try:
            line = json.loads(raw)
        except ValueError:
            raise AgentRefused(400, f"line {number} is not JSON") from None
        if not isinstance(line, dict):
            raise AgentRefused(400, f"line {number} is not a JSON object")
        if "end" not in line and "fatal" not in line:
            problem = parse_line(line, {s["id"] for s in task.steps})
            if problem:
                raise AgentRefused(400, f"line {number}: {problem}")
        lines.append(line)
    if task.lines + len(lines) > len(task.steps) + 2:
        raise AgentRefused(413, "more lines than the plan has steps")
    job = task.job
    checks = {c.pk: c for c in Check.objects.filter(pk__in=[s["check"] for s in task.steps])}
    steps = [
        Step(s["id"], s["kind"], {}, s["phase"], s["title"], checks.get(s["check"]), s["expect"])
        for s in task.steps
    ]
    recorder = Recorder(job, steps, task.first_position)
    recorder.known_steps = {s.id for s in steps}
    for line in lines:
        recorder(line)
    transcript = "\n".join(json.dumps(line, ensure_ascii=True) for line in lines)
    sep = "\n" if task.transcript else ""
    task.transcript = (task.transcript + sep + transcript)[-MAX_TRANSCRIPT:]
    task.lines += len(lines)
    task.last_line_at = timezone.now()
    task.fatal = task.fatal or recorder.fatal
    task.bad_lines = [*task.bad_lines, *recorder.bad_lines][:20]
    task.ended = task.ended or recorder.ended
    fields = ["transcript", "lines", "last_line_at", "fatal", "bad_lines", "ended"]
    if task.ended or task.fatal:
        task.status, task.done_at = AgentTask.Status.DONE, timezone.now()
        fields += ["status", "done_at"]
    task.save(update_fields=fields)
    if task.status == AgentTask.Status.DONE:
        jobs.wake_job(job.pk)
    return len(lines)
