"""From a diagnosis to a verified fix: offer, request, approve, apply, restart, verify, undo.

A fix job applies the chosen article fixes in one WinRM command, restarts the machine when a
fix needs it and the employee agreed, then verifies: it runs the article's checks again and,
when they pass, asks the employee to connect the VPN themselves and reads the result (RasClient
20225 / 20227 of their connection, logged after the fix) from the event log. A dial from the
portal's WinRM account would use neither the employee's credentials nor their per-user phone
book (shared/facts/windows-runner-review.md D-3/D-4), so it never verifies anything (issue #9).
It ends Fixed only when the employee's own attempt connected. A check that passed before the fix and fails
after it makes the portal put the old values back on its own. A roll-back job restores the
``before`` values of a fix job. Every request, decision and change is audited.

Waiting for a restart holds no worker: the job polls the machine in short turns
(``jobs.Wait``), keeping where it is in ``job.stage`` and its deadline in ``job.stage_until``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from diagnostics import access, assessment, live, plans, remote
from diagnostics.assessment import Reason
from diagnostics.jobs import (
    JobRefused,
    Phase,
    Step,
    Wait,
    agent_restarted,
    awaiting_agent,
    busy_message,
    create_job,
    enqueue,
    execute,
    finish,
    target_for,
)
from diagnostics.models import Article, AuditEntry, Fix, Job, StepResult
from diagnostics.plans import preview_changes, rollback_args
from diagnostics.workflows.diagnosis import check_steps

Restart = Job.Restart
AWAIT_ATTEMPT = "await-attempt"  # the stage of waiting for the employee's own attempt
READBACK = "readback"  # after a drop mid-fix: re-read the planned targets once it answers
READBACK_S = 120  # how long the machine may take to answer again after a drop
ATTEMPT_EVENTS = {"hours": 24, "max": 50}
# Stages of the restart wait, kept in job.stage between turns.
GOING_DOWN = "restart-down"
COMING_UP = "restart-up"
POLL_S = 2  # how often a restarting machine is asked whether it answers
GRACE_S = 120  # after the restart is due, how long it may take to stop answering


@dataclass
class FixOffer:
    """An article fix offered for a diagnosis' proven causes, with what it will change."""

    fix: Fix
    checks: list[Reason]  # the proven causes it answers (failed checks or inferred causes)
    changes: list[dict[str, Any]]


def offered_fixes(diagnosis: Job) -> list[FixOffer]:
    """The fixes of a finished diagnosis' proven, current causes, in article order.

    Never a fix for evidence, for a failure that is not current, or for a setting outside
    the situation it matters in (issue #9): the decision is ``plans.assess``'s.
    """
    if diagnosis.article.status != Article.Status.PUBLISHED:
        return []  # a draft is tried on a KB admin's machine read-only (#17): no fix runs
    found = assessment.assess_job(diagnosis)
    if found is None or not found.fixes:
        return []
    why = assessment.reasons(diagnosis, found)
    facts = {
        r.kb_check.key: r.facts
        for r in diagnosis.steps.filter(phase=Phase.CHECK, kb_check__isnull=False).select_related(
            "kb_check"
        )
    }
    checks = {c.key: c for c in diagnosis.article.checks.all()}
    offers = []
    for fix in Fix.objects.filter(article=diagnosis.article, key__in=found.fixes):
        # Current values come from the failed check this fix answers, where there is one.
        source = next(
            (facts.get(k) for k, c in checks.items() if c.fix_id == fix.pk and k in facts), None
        )
        changes = [
            row
            for step in fix.steps
            for row in preview_changes(step["kind"], step.get("args") or {}, source)
        ]
        offers.append(FixOffer(fix, why.get(fix.key, []), changes))
    return sorted(offers, key=lambda o: o.fix.position)


def _needs_restart(job: Job) -> bool:
    return Fix.objects.filter(
        article=job.article, key__in=job.fix_keys, restart_required=True
    ).exists()


def _fixes_of(job: Job) -> list[Fix]:
    by_key = {f.key: f for f in Fix.objects.filter(article=job.article, key__in=job.fix_keys)}
    return [by_key[k] for k in job.fix_keys if k in by_key]


def _audit(job: Job, action: str, actor: Any = None, changes=None, detail: str = "") -> None:
    AuditEntry.objects.create(
        job=job,
        machine=job.machine,
        actor=actor,
        action=action,
        changes=changes or [],
        detail=detail[:2000],
    )


# --- requests and decisions (called by views and the CLI) ------------------------------------


def request_fix(
    user: Any,
    diagnosis: Job,
    fix_keys: list[str],
    restart: str = Restart.NONE,
    delay_min: int | None = None,
) -> Job:
    """Create a fix job for chosen offered fixes; it waits for approval where one needs it."""
    offers = {o.fix.key: o for o in offered_fixes(diagnosis)}
    chosen = [k for k in dict.fromkeys(fix_keys) if k in offers]
    if not chosen:
        raise JobRefused(_("Choose at least one of the offered fixes."))
    restart_needed = any(offers[k].fix.restart_required for k in chosen)
    if restart_needed and restart not in (Restart.NOW, Restart.DELAY, Restart.LATER):
        raise JobRefused(_("One of these fixes needs a restart: choose when to restart."))
    if not restart_needed:
        restart, delay_min = Restart.NONE, None
    if restart == Restart.DELAY and delay_min not in settings.KAIKETSU_RESTART_DELAYS:
        raise JobRefused(_("Choose one of the offered restart delays."))
    if restart != Restart.DELAY:
        delay_min = None
    approval = any(offers[k].fix.needs_approval for k in chosen)
    with transaction.atomic():
        job = create_job(
            user=user,
            machine=diagnosis.machine,
            article=diagnosis.article,
            parent=diagnosis,
            kind=Job.Kind.FIX,
            status=Job.Status.APPROVAL if approval else Job.Status.QUEUED,
            fix_keys=chosen,
            restart=restart,
            restart_delay_min=delay_min,
            pasted_text=diagnosis.pasted_text,
        )
        changes = [row for k in chosen for row in offers[k].changes]
        _audit(job, AuditEntry.Action.FIX_REQUESTED, user, changes, ", ".join(chosen))
        if not approval:
            transaction.on_commit(lambda: enqueue(job.pk))
    return job


def decide(job: Job, user: Any, approve: bool, note: str = "") -> None:
    """The helpdesk approves (the fix is queued) or declines a fix waiting for approval.

    Declining one's own request withdraws it; approving it is refused (four eyes).
    """
    if approve and not (allowed := access.may_approve(user, job)):
        raise JobRefused(allowed.reason)
    now = timezone.now()
    new = Job.Status.QUEUED if approve else Job.Status.DECLINED
    note = note.strip()[:4000]
    fields: dict[str, Any] = {
        "status": new,
        "decided_by": user,
        "decided_at": now,
        "decision_note": note,
    }
    if not approve:
        fields.update(outcome=Job.Outcome.NONE, finished_at=now, error=note[:4000])
    try:
        with transaction.atomic():
            moved = Job.objects.filter(pk=job.pk, status=Job.Status.APPROVAL).update(**fields)
            if not moved:
                raise JobRefused(_("This fix is no longer waiting for approval."))
            action = AuditEntry.Action.FIX_APPROVED if approve else AuditEntry.Action.FIX_DECLINED
            _audit(job, action, user, detail=note)
            if approve:
                transaction.on_commit(lambda: enqueue(job.pk))
    except IntegrityError:  # approving makes the job active: the machine may be busy
        raise JobRefused(busy_message(job.machine)) from None
    job.refresh_from_db()
    live.publish(job.pk, "done" if not approve else "status", {"status": job.status})


def request_rollback(user: Any, fix_job: Job) -> Job:
    """A roll-back job restoring the values a finished fix job found."""
    if fix_job.kind != Job.Kind.FIX or not fix_job.is_finished:
        raise JobRefused(_("Only a finished fix can be rolled back."))
    if not rollback_steps(fix_job, "r"):
        raise JobRefused(_("This fix changed nothing that can be rolled back."))
    if (
        fix_job.children.filter(kind=Job.Kind.ROLLBACK)
        .exclude(status__in=[Job.Status.ERROR, Job.Status.INTERRUPTED])
        .exists()
    ):
        raise JobRefused(_("This fix has already been rolled back."))
    with transaction.atomic():
        job = create_job(
            user=user,
            machine=fix_job.machine,
            article=fix_job.article,
            parent=fix_job,
            kind=Job.Kind.ROLLBACK,
            restart=Restart.NOW if rollback_restarts(fix_job) else Restart.NONE,
        )
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


def rollback_restarts(fix_job: Job) -> bool:
    """Whether rolling ``fix_job`` back restarts the machine: when the fix restarted it, so
    that the old values take effect the way the new ones did."""
    return fix_job.restart in (Restart.NOW, Restart.DELAY)


def may_retry_with_restart(job: Job) -> bool:
    """True for the latest fix of a diagnosis that ended Not fixed while its restart was left
    to the employee.

    Such a fix takes effect only after a restart, and the portal cannot read whether one
    happened: pressing "verify" before restarting ends here. The way back is the same fix
    again with a restart now (what is already set stays as it is). Fixes that need approval
    are left to the helpdesk rather than sent for approval a second time.
    """
    if not (
        job.kind == Job.Kind.FIX
        and job.status == Job.Status.DONE
        and job.outcome == Job.Outcome.NOT_FIXED
        and job.restart == Restart.LATER
        and job.parent_id is not None
    ):
        return False
    fixes = _fixes_of(job)
    later = job.parent.children.filter(kind=Job.Kind.FIX, created_at__gt=job.created_at)
    return (
        any(f.restart_required for f in fixes)
        and not any(f.needs_approval for f in fixes)
        and not later.exists()
    )


def retry_with_restart(user: Any, job: Job) -> Job:
    """The same fix again, restarting the machine now, then verifying (see above)."""
    if not may_retry_with_restart(job):
        raise JobRefused(_("This fix cannot be run again with a restart."))
    return request_fix(user, job.parent, list(job.fix_keys), Restart.NOW)


def rollback_target(job: Job) -> Job | None:
    """The finished fix whose changes the page's "Roll back" undoes: the job's own, or, for a
    fix run again with a restart (which found everything already set), the earlier fix of the
    same diagnosis that made the changes and has not been rolled back."""
    if job.kind != Job.Kind.FIX or not job.is_finished:
        return None
    if rollback_steps(job, "r"):  # (a PSK or a restart alone cannot be put back)
        return job
    if job.parent_id is None:
        return None
    earlier = job.parent.children.filter(
        kind=Job.Kind.FIX, created_at__lt=job.created_at, steps__phase=Phase.FIX,
        steps__changed=True,
    ).distinct().order_by("-created_at")  # fmt: skip
    for fix in earlier:
        undone = fix.children.filter(kind=Job.Kind.ROLLBACK).exclude(
            status__in=[Job.Status.ERROR, Job.Status.INTERRUPTED]
        )
        if fix.is_finished and not undone.exists() and rollback_steps(fix, "r"):
            return fix
    return None


def rollback_waits_for_restart(job: Job) -> bool:
    """A roll-back that did not restart, of a fix that takes effect only at a restart: the old
    values are written but Windows uses them only after the next restart."""
    return (
        job.kind == Job.Kind.ROLLBACK and job.restart != Restart.NOW and _needs_restart(job.parent)
    )


def rollback_preview(fix_job: Job) -> tuple[list[Step], list[str]]:
    """What a roll-back would put back, and what it cannot (a PSK: Windows cannot read the old
    one back, so nothing was recorded to restore), in words."""
    plan = {s["id"]: s for s in (fix_job.plan or {}).get("steps", [])}
    kept = [
        _what(r.kind, (plan.get(r.step_id) or {}).get("args") or {})
        for r in fix_job.steps.filter(phase=Phase.FIX, changed=True).order_by("position")
        if r.step_id in plan
        and rollback_args(r.kind, plan[r.step_id].get("args") or {}, r.before or {}) is None
    ]
    return rollback_steps(fix_job, "r"), kept


def resume(job: Job, user: Any, restart_now: bool) -> None:
    """Continue a fix waiting for a restart: restart now, or verify (the user restarted).

    The restart choice is written with the move out of WAITING, so a refused resume leaves
    the job as it was (a later "verify" must never find a restart nobody asked for).
    """
    # The note asked for a restart and "Verify"; it must not linger over what happens next.
    changes: dict[str, Any] = {"status": Job.Status.QUEUED, "note": ""}
    if restart_now:
        changes["restart"] = Restart.NOW
    try:
        with transaction.atomic():
            if not Job.objects.filter(pk=job.pk, status=Job.Status.WAITING).update(**changes):
                raise JobRefused(_("This fix is not waiting for a restart."))
            transaction.on_commit(lambda: enqueue(job.pk))
    except IntegrityError:
        raise JobRefused(busy_message(job.machine)) from None
    live.publish(job.pk, "status", {"status": Job.Status.QUEUED})


# --- steps ---------------------------------------------------------------------------------


def fix_steps(job: Job) -> list[Step]:
    steps = []
    for fix in _fixes_of(job):
        for i, step in enumerate(fix.steps, start=1):
            steps.append(
                Step(
                    f"f{fix.position + 1}-{i}",
                    step["kind"],
                    step.get("args") or {},
                    Phase.FIX,
                    fix.tr("title"),
                )
            )
    return steps


def pc_user_language(job: Job) -> str:
    """The language of whoever sits at the machine: the warning before a restart is for them.

    The owner's language (their own request, else their latest job anywhere), else the
    Windows locale the last connection test read, else the portal's default. The requester
    may be the helpdesk, in another language.
    """
    owners = job.machine.owners.all()
    if job.language and owners.filter(pk=job.user_id).exists():
        return job.language
    latest = Job.objects.filter(user__in=owners).exclude(language="").order_by("-created_at")
    if (owner_job := latest.first()) is not None:
        return owner_job.language
    locale = str((job.machine.preflight or {}).get("locale") or "")
    if locale:
        return "ja" if locale.lower().startswith("ja") else "en"
    return settings.LANGUAGE_CODE


def reboot_step(job: Job, prefix: str = "f") -> Step:
    delay = (job.restart_delay_min or 0) * 60 or settings.KAIKETSU_RESTART_NOW_SECONDS
    with translation.override(pc_user_language(job)):
        message = _("Kaiketsu will restart this computer to finish fixing the VPN. Save your work.")
    return Step(
        f"{prefix}-restart",
        "schedule_reboot",
        {"delay_seconds": delay, "message": message},
        Phase.FIX if prefix == "f" else Phase.ROLLBACK,
        _("Restart the machine"),
    )


def verify_steps(job: Job) -> list[Step]:
    """The article's checks again, read-only, then a first look at the event log: what is
    already there is the baseline the employee's attempt must come after."""
    return [*check_steps(job.article, "v", Phase.VERIFY), _events_step(0)]


def _events_step(n: int) -> Step:
    title = _("Your connection attempt (event log)")
    return Step(f"w{n}", "vpn_events", dict(ATTEMPT_EVENTS), Phase.VERIFY, title)


def rollback_steps(fix_job: Job, prefix: str) -> list[Step]:
    """Steps that undo the changed fix steps of ``fix_job``, last change first."""
    changed = fix_job.steps.filter(phase=Phase.FIX, changed=True).order_by("-position")
    plan = {s["id"]: s for s in (fix_job.plan or {}).get("steps", [])}
    steps = []
    for n, result in enumerate(changed, start=1):
        sent = plan.get(result.step_id)
        if sent is None:
            continue
        args = rollback_args(result.kind, sent.get("args") or {}, result.before or {})
        if args is None:
            continue
        title = _("Put back: %(step)s") % {"step": _what(result.kind, args)}
        steps.append(Step(f"{prefix}{n}", result.kind, args, Phase.ROLLBACK, title))
    return steps


def _what(kind: str, args: dict[str, Any]) -> str:
    """A few words naming what a roll-back step puts back."""
    if kind in ("set_service", "set_registry_value"):
        return args["name"]
    if kind == "set_vpn_ipsec":
        return _("the VPN connection's IPsec settings")
    if kind == "set_vpn_psk":
        return _("the VPN connection's pre-shared key")
    return _("the VPN connection's settings")


def planned_steps(job: Job) -> list[Step]:
    """What a fix or roll-back job will run, for the page's pending rows."""
    if job.kind == Job.Kind.ROLLBACK:
        steps = rollback_steps(job.parent, "r")
        if job.restart == Restart.NOW:
            steps.append(reboot_step(job, "r"))
        return steps
    steps = fix_steps(job)
    if job.restart in (Restart.NOW, Restart.DELAY) and _needs_restart(job):
        steps.append(reboot_step(job))
    return steps + verify_steps(job)


# --- running (one turn at a time, called by the engine in the worker) ------------------------


def run(job: Job) -> Wait | None:
    """Take a fix or roll-back job one turn further."""
    if job.stage in (GOING_DOWN, COMING_UP):
        return _restart_turn(job)
    if job.stage == AWAIT_ATTEMPT:
        return _attempt_turn(job)
    if job.stage == READBACK:
        return _readback_turn(job)
    if job.kind == Job.Kind.ROLLBACK:
        return _run_rollback(job)
    return _run_fix(job)


def _after_restart(job: Job) -> Wait | None:
    if job.kind == Job.Kind.ROLLBACK:
        finish(job, Job.Status.DONE, Job.Outcome.ROLLED_BACK)
        return None
    return _verify(job)


def _run_fix(job: Job) -> Wait | None:
    # Resumed after "later" (not: back from the agent with the fix's own report).
    already_applied = job.steps.filter(phase=Phase.FIX).exists() and not awaiting_agent(
        job, fix_steps(job)
    )
    if not already_applied:
        error = execute(job, fix_steps(job))
        # Every fix line that arrived is recorded (by execute) and audited, whatever happened.
        _audit(job, AuditEntry.Action.FIX_APPLIED, job.user, _changes(job, Phase.FIX), error)
        if error:
            return _after_drop(job, error)
    if _needs_restart(job):
        job.refresh_from_db(fields=["restart"])
        if job.restart == Restart.LATER and not already_applied:
            job.note = _("Restart the machine to finish the fix, then press Verify.")
            job.save(update_fields=["note"])
            job.move(Job.Status.RUNNING, Job.Status.WAITING)
            live.publish(job.pk, "done", {"status": job.status})
            return None
        if job.restart in (Restart.NOW, Restart.DELAY):
            return _start_restart(job, reboot_step(job))
    return _verify(job)


def _after_drop(job: Job, error: str) -> Wait | None:
    """The fix plan broke off: a Windows command outlives its connection, so planned steps
    that never reported may still have run. Re-read their targets read-only (once the
    machine answers), record what changed, and end with a roll back of exactly that."""
    job.error = error[:4000]
    job.save(update_fields=["error"])
    _set_stage(job, READBACK, timezone.now() + timedelta(seconds=READBACK_S))
    return _readback_turn(job)


def _readback_turn(job: Job) -> Wait | None:
    planned = fix_steps(job)
    reported = set(job.steps.filter(phase=Phase.FIX).values_list("step_id", flat=True))
    # Every planned target is re-read (what reported back too: the page shows it as it is
    # now); rows are added for the steps that never reported.
    reads = [(s, plans.readback(s.kind, s.args)) for s in planned]
    steps = [
        Step(f"rb{n}", kind, args, Phase.VERIFY, _("Re-read: %(step)s") % {"step": s.title})
        for n, (s, (kind, args)) in enumerate(((s, r) for s, r in reads if r), start=1)
    ]
    if steps and job.steps.filter(step_id=steps[0].id).exists():
        steps = []  # read already (a repeated turn)
    if steps and execute(job, steps):
        if timezone.now() < job.stage_until:
            return Wait(POLL_S)
        return _end_after_drop(
            job,
            _(
                "The machine did not answer again, so its state could "
                "not be re-checked. Ask the helpdesk before retrying."
            ),
        )
    found = {r.step_id: r for r in job.steps.filter(step_id__startswith="rb")}
    made, unknown = [], []
    position = job.steps.count()
    for n, (step, read) in enumerate(((s, r) for s, r in reads if r), start=1):
        if step.id in reported:
            continue
        result = found.get(f"rb{n}")
        after = plans.state_of(step.kind, result.facts if result else None)
        before = plans.state_of(step.kind, _diagnosed_facts(job, *read))
        changed = None if before is None or after is None else before != after
        StepResult.objects.create(
            job=job,
            step_id=step.id,
            phase=Phase.FIX,
            position=position,
            kind=step.kind,
            before=before,
            after=after,
            changed=changed,
            verdict="done" if changed is not None else "error",
            error=str(_("Did not report back (the connection dropped); re-read afterwards.")),
        )
        position += 1
        (made if changed else unknown if changed is None else []).append(step.title)
    unknown += [s.title for s, r in reads if r is None and s.id not in reported]  # a PSK
    _audit(
        job,
        AuditEntry.Action.FIX_APPLIED,
        None,
        _changes(job, Phase.FIX),
        "re-read after the connection dropped",
    )
    parts = [_("The connection dropped during the fix; the machine's state was re-checked.")]
    if made:
        parts.append(
            _(
                "Also changed without reporting back: %(steps)s. Roll back undoes exactly the "
                "changes listed here."
            )
            % {"steps": ", ".join(made)}
        )
    if unknown:
        parts.append(_("Could not be re-read: %(steps)s.") % {"steps": ", ".join(unknown)})
    if not made and not unknown:
        parts.append(_("Nothing else was changed."))
    return _end_after_drop(job, " ".join(parts))


def _diagnosed_facts(job: Job, kind: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The facts the diagnosis read for the same target (kind and args), if it did."""
    sent = {s["id"]: s for s in (job.parent.plan or {}).get("steps", [])}
    for result in job.parent.steps.filter(phase=Phase.CHECK, kind=kind):
        if (sent.get(result.step_id) or {}).get("args") == args:
            return result.facts
    return None


def _end_after_drop(job: Job, note: str) -> None:
    _set_stage(job, "", None)
    job.note = note
    job.save(update_fields=["note"])
    finish(job, Job.Status.ERROR, Job.Outcome.ERROR, job.error)
    return None


def _start_restart(job: Job, step: Step) -> Wait | None:
    """Schedule the restart on the machine, then wait (in turns) for it to go and come back."""
    if not job.steps.filter(step_id=step.id).exists():  # resumed twice: never restart twice
        error = execute(job, [step])
        if error:
            finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
            return None
    due = timezone.now() + timedelta(seconds=step.args["delay_seconds"])
    _set_stage(job, GOING_DOWN, due + timedelta(seconds=GRACE_S))
    job.move(Job.Status.RUNNING, Job.Status.RESTARTING)
    live.publish(job.pk, "status", {"status": job.status})
    return Wait(max(POLL_S, (due - timezone.now()).total_seconds() - POLL_S))


def _restart_turn(job: Job) -> Wait | None:
    """One look at a restarting machine: has it gone away yet, or come back?"""
    now = timezone.now()
    due = job.stage_until - timedelta(seconds=GRACE_S)
    if job.stage == GOING_DOWN and now < due - timedelta(seconds=POLL_S):
        return Wait((due - now).total_seconds())  # a delayed restart: nothing to ask yet
    back = agent_restarted(job) if job.machine.uses_agent else None
    if back is not None:  # the agent checks in from a new boot: it went away and came back
        answering = back
        if back:
            job.stage = COMING_UP
    else:
        answering = _answers(job)
    if job.stage == GOING_DOWN and not answering:
        _set_stage(job, COMING_UP, now + timedelta(seconds=settings.KAIKETSU_RESTART_TIMEOUT))
        return Wait(POLL_S)
    if job.stage == COMING_UP and answering:
        _set_stage(job, "", None)
        job.move(Job.Status.RESTARTING, Job.Status.RUNNING)
        live.publish(job.pk, "status", {"status": job.status})
        return _after_restart(job)
    if now < job.stage_until:
        return Wait(POLL_S)
    if job.stage == GOING_DOWN:
        error = _("%(machine)s did not restart within %(s)s seconds.") % {
            "machine": job.machine.name,
            "s": reboot_step(job).args["delay_seconds"] + GRACE_S,
        }
    else:
        error = _("%(machine)s did not come back within %(s)s seconds after restarting.") % {
            "machine": job.machine.name,
            "s": settings.KAIKETSU_RESTART_TIMEOUT,
        }
    finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
    return None


def _answers(job: Job) -> bool:
    try:
        remote.test_connection(target_for(job.machine), timeout_s=5)
    except remote.RemoteError:
        return False
    return True


def _set_stage(job: Job, stage: str, until: Any) -> None:
    job.stage, job.stage_until = stage, until
    job.save(update_fields=["stage", "stage_until"])


def _verify(job: Job) -> Wait | None:
    """Run the checks again; if they pass, wait (in turns) for the employee's own attempt."""
    error = execute(job, verify_steps(job))
    if error:
        finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
        return None
    verified = job.steps.filter(phase=Phase.VERIFY, kb_check__isnull=False)
    results = {r.step_id: r for r in verified.select_related("kb_check")}
    before = {r.step_id[1:]: r.verdict for r in job.parent.steps.filter(phase=Phase.CHECK)}
    regressions = [
        r
        for step_id, r in results.items()
        if r.kind not in plans.EVIDENCE_KINDS
        and r.verdict == "fail" and before.get(step_id[1:]) == "pass"
    ]  # fmt: skip
    if regressions:
        _auto_rollback(job, regressions)
        return None
    if any(r.verdict != "pass" for r in results.values()):
        finish(job, Job.Status.DONE, Job.Outcome.NOT_FIXED)
        return None
    minutes = max(1, settings.KAIKETSU_ATTEMPT_TIMEOUT // 60)
    job.note = _(
        "The fix is applied and every check passes. Now connect the VPN yourself, as you "
        "usually do: this page reads the result from the machine's event log (for %(n)s "
        "minutes)."
    ) % {"n": minutes}
    job.save(update_fields=["note"])
    until = timezone.now() + timedelta(seconds=settings.KAIKETSU_ATTEMPT_TIMEOUT)
    _set_stage(job, AWAIT_ATTEMPT, until)
    job.move(Job.Status.RUNNING, Job.Status.CONNECT)
    live.publish(job.pk, "status", {"status": job.status})
    return Wait(settings.KAIKETSU_ATTEMPT_POLL_S)


def _attempt_turn(job: Job) -> Wait | None:
    """One look at the event log for the employee's attempt since the fix."""
    polls = job.steps.filter(phase=Phase.VERIFY, step_id__startswith="w")
    baseline = polls.filter(step_id="w0").first()
    evidence = assessment.assess_job(job.parent)
    connection = evidence.evidence.connection if evidence else None
    # A machine that does not answer (the VPN it just connected may carry the default route)
    # is asked again on the next turn; the time limit still holds.
    if not execute(job, [_events_step(polls.count())]):
        latest = polls.order_by("-position").first()
        found = plans.attempt_since(
            baseline.facts if baseline else None, latest.facts if latest else None, connection
        )
        if found is not None:
            return _attempt_found(job, *found)
    if timezone.now() < job.stage_until:
        return Wait(settings.KAIKETSU_ATTEMPT_POLL_S)
    _set_stage(job, "", None)
    job.note = _(
        "No connection attempt arrived within %(n)s minutes, so the fix is applied but not "
        "verified. Connect the VPN; if it fails, run the diagnosis again."
    ) % {"n": max(1, settings.KAIKETSU_ATTEMPT_TIMEOUT // 60)}
    job.save(update_fields=["note"])
    finish(job, Job.Status.DONE, Job.Outcome.UNVERIFIED)
    return None


def _attempt_found(job: Job, result: str, code: int | None) -> None:
    _set_stage(job, "", None)
    if result == "connected":
        job.note = _("Your own connection attempt worked: the VPN is fixed.")
        job.save(update_fields=["note"])
        finish(job, Job.Status.DONE, Job.Outcome.FIXED)
        return None
    job.note = assessment.after_fix_note(job.parent, code) or _(
        "Your connection attempt after the fix failed with %(code)s."
    ) % {"code": code if code is not None else "?"}
    job.save(update_fields=["note"])
    finish(job, Job.Status.DONE, Job.Outcome.NOT_FIXED)
    return None


def _auto_rollback(job: Job, regressions: list[StepResult]) -> None:
    names = ", ".join(r.kb_check.tr("title") for r in regressions if r.kb_check)
    steps = rollback_steps(job, "a")
    error = execute(job, steps) if steps else ""
    job.note = _(
        "Rolled back automatically: %(checks)s passed before the fix and failed after it."
    ) % {"checks": names}
    job.save(update_fields=["note"])
    _audit(job, AuditEntry.Action.AUTO_ROLLBACK, None, _changes(job, Phase.ROLLBACK), job.note)
    finish(job, Job.Status.DONE if not error else Job.Status.ERROR, Job.Outcome.NOT_FIXED, error)


def _run_rollback(job: Job) -> Wait | None:
    error = execute(job, rollback_steps(job.parent, "r"))
    if error:
        finish(job, Job.Status.ERROR, Job.Outcome.ERROR, error)
        return None
    _audit(job, AuditEntry.Action.ROLLBACK, job.user, _changes(job, Phase.ROLLBACK))
    if job.restart == Restart.NOW:
        return _start_restart(job, reboot_step(job, "r"))
    finish(job, Job.Status.DONE, Job.Outcome.ROLLED_BACK)
    return None


def _changes(job: Job, phase: str) -> list[dict[str, Any]]:
    """Audit rows: what each changed step changed, from what to what (never a secret)."""
    rows = []
    for r in job.steps.filter(phase=phase, changed=True).order_by("position"):
        rows.append({"step": r.step_id, "kind": r.kind, "from": r.before, "to": r.after})
    return rows
