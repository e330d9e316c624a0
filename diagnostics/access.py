"""Who may do what: every "may" rule of the portal, and the one decorator that guards a view.

Roles are groups (``roles.py``) holding model permissions; superusers hold every permission.
Employees hold none: they reach only what they own, which the object helpers below check.
Views, templates (through ``nav``) and management commands ask here, never ``has_perm``
directly, so a rule changes in one place. Anyone refused gets 404, not 403: the existence of
another employee's job, or of a helpdesk page, is no business of theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _

from diagnostics.models import Fix, HandOver, Job, Machine

APPROVE_FIX = "diagnostics.approve_fix"  # Job's own permission, given to the helpdesk


# --- who may, by role ------------------------------------------------------------------------


def can_see_all_jobs(user: Any) -> bool:
    """The helpdesk: every job's page, the history, its export and re-runs."""
    return user.has_perm("diagnostics.view_job")


def can_cancel_jobs(user: Any) -> bool:
    """Stop a queued or waiting job of any machine (and free the machine): the helpdesk."""
    return can_see_all_jobs(user)


def can_see_dashboard(user: Any) -> bool:
    return user.has_perm("diagnostics.view_job")


def can_scan_fleet(user: Any) -> bool:
    """Start fleet scans (read-only checks on many machines) and read their results: the
    helpdesk, who may already re-run any machine's diagnosis."""
    return can_see_all_jobs(user)


def can_answer_handovers(user: Any) -> bool:
    """The hand-over inbox: read, take, reply and close what employees hand over."""
    return can_see_all_jobs(user)


def can_see_blind_spots(user: Any) -> bool:
    """The texts nothing matched: the helpdesk, and KB admins who write the missing articles."""
    return can_see_dashboard(user) or can_edit_kb(user)


def can_approve_fixes(user: Any) -> bool:
    """May see the approval queue and decide (see ``may_approve`` for one fix)."""
    return user.has_perm(APPROVE_FIX)


def can_see_machines(user: Any) -> bool:
    """The machines list and its connection test (which runs only `hostname`)."""
    return user.has_perm("diagnostics.view_machine")


def can_import_machines(user: Any) -> bool:
    """The CSV import creates machines and, with "update", changes existing ones."""
    return user.has_perm("diagnostics.add_machine") and user.has_perm("diagnostics.change_machine")


def can_change_machine_targets(user: Any) -> bool:
    """Decide where a credential goes: a machine's address, port, scheme, TLS verification
    and credential. Administrators only (superusers, or whoever holds this permission): the
    helpdesk manages owners and metadata, never where secrets are sent (issue #16)."""
    return user.has_perm("diagnostics.change_machine_target")


def can_edit_kb(user: Any) -> bool:
    """Write articles in the admin: the admin itself also wants staff status."""
    return user.is_staff and user.has_perm("diagnostics.add_article")


def can_use_admin(user: Any) -> bool:
    return user.is_active and user.is_staff


# --- who may, per object ---------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A yes, or a no with the reason to show (already in the user's language)."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def may_approve(user: Any, job: Job) -> Decision:
    """Whether ``user`` may approve or decline the fix ``job``.

    Four eyes: whoever requested a fix never decides on it, whatever their role,
    so a helpdesk member's fix on their own machine waits for a colleague.
    """
    if not can_approve_fixes(user):
        return Decision(False, _("Only the helpdesk approves fixes."))
    if job.user_id == user.pk:
        return Decision(
            False, _("You requested this fix: another member of the helpdesk must approve it.")
        )
    wrote = Fix.objects.filter(article_id=job.article_id, key__in=job.fix_keys, steps_author=user)
    if wrote.exists():
        return Decision(
            False, _("You wrote this fix's steps: another member of the helpdesk must approve it.")
        )
    return Decision(True)


def may_approve_steps(user: Any, fix: Fix) -> Decision:
    """Whether ``user`` may approve a fix's changed steps in the admin: a second KB admin,
    never the one who changed them (#16: what runs on employees' machines takes four eyes)."""
    if not can_edit_kb(user):
        return Decision(False, _("Only KB admins approve a fix's steps."))
    if not fix.awaits_second_admin:
        return Decision(False, _("These steps need no approval."))
    if fix.steps_author_id == user.pk:
        return Decision(False, _("You changed these steps: another KB admin must approve them."))
    return Decision(True)


def can_act_on_machine(user: Any, machine: Machine) -> bool:
    """Run jobs on it: its owners, and the helpdesk (a re-run, the command line)."""
    return can_see_all_jobs(user) or machine.owners.filter(pk=user.pk).exists()


def case_jobs(user: Any) -> Q:
    """The jobs of ``user``'s cases: their own, and the follow-ups someone else started from
    one of them (the helpdesk's fix of their diagnosis, its roll back or its retry), which run
    on the same machine and which the employee must be able to follow and answer. A case is
    at most three deep: diagnosis, fix, roll back."""
    return Q(user=user) | Q(parent__user=user) | Q(parent__parent__user=user)


def in_case_of(user: Any, job: Job) -> bool:
    """``case_jobs`` for one job."""
    while job is not None:
        if job.user_id == user.pk:
            return True
        job = job.parent
    return False


def can_act_on_job(user: Any, job: Job) -> bool:
    """Fix, roll back or resume: the employee of the job's case while still an owner of the
    machine, and the helpdesk."""
    if can_see_all_jobs(user):
        return True
    return in_case_of(user, job) and can_act_on_machine(user, job.machine)


def visible_jobs(user: Any) -> QuerySet[Job]:
    """The jobs ``user`` may see: their cases' (``case_jobs``), or all of them for the
    helpdesk."""
    qs = Job.objects.select_related("machine", "article", "user")
    return qs if can_see_all_jobs(user) else qs.filter(case_jobs(user))


def machine_for(user: Any, pk: Any) -> Machine:
    """The machine, if ``user`` owns it; 404 for anyone else (no hint that it exists)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404 from None
    return get_object_or_404(Machine, pk=pk, owners=user)


def job_for(user: Any, pk: int) -> Job:
    """The job, for its owner and for the helpdesk; 404 for everyone else."""
    return get_object_or_404(visible_jobs(user), pk=pk)


def own_job(user: Any, pk: int) -> Job:
    """The job, for the employee who started it only (hand it over); 404 for everyone else."""
    return get_object_or_404(Job.objects.select_related("machine", "article"), pk=pk, user=user)


def own_handover(user: Any, pk: int) -> HandOver:
    """A hand-over, for the employee who made it only; 404 for everyone else (the helpdesk
    answers in its inbox)."""
    return get_object_or_404(HandOver.objects.select_related("job", "machine"), pk=pk, user=user)


def handover_to_answer(user: Any, pk: int) -> HandOver:
    """A hand-over, for the helpdesk; 404 for everyone else."""
    if not can_answer_handovers(user):
        raise Http404
    related = ("user", "assignee", "job__article", "machine")
    return get_object_or_404(HandOver.objects.select_related(*related), pk=pk)


def job_to_act_on(user: Any, pk: int) -> Job:
    """A job whose machine ``user`` may act on (``can_act_on_job``); 404 for everyone else."""
    job = job_for(user, pk)
    if not can_act_on_job(user, job):
        raise Http404
    return job


# --- the one decorator -----------------------------------------------------------------------


def required(rule: Callable[[Any], bool]) -> Callable:
    """Log in first; then 404 unless ``rule(user)`` holds. Guards every role-only view."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not rule(request.user):
                raise Http404
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


# --- templates -------------------------------------------------------------------------------


class _Can:
    """``{{ can.approve_fixes }}`` and the like, each asked only when a template reads it."""

    def __init__(self, user: Any) -> None:
        self._user = user

    def __getattr__(self, name: str) -> bool:
        rule = _NAV_RULES.get(name)
        if rule is None:
            raise AttributeError(name)
        return self._user.is_authenticated and rule(self._user)


_NAV_RULES: dict[str, Callable[[Any], bool]] = {
    "see_all_jobs": can_see_all_jobs,
    "cancel_jobs": can_cancel_jobs,
    "see_dashboard": can_see_dashboard,
    "approve_fixes": can_approve_fixes,
    "answer_handovers": can_answer_handovers,
    "see_blind_spots": can_see_blind_spots,
    "scan_fleet": can_scan_fleet,
    "see_machines": can_see_machines,
    "import_machines": can_import_machines,
    "edit_kb": can_edit_kb,
    "use_admin": can_use_admin,
}


def nav(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the same rules for links as for the views they lead to."""
    user = getattr(request, "user", None)
    return {"can": _Can(user)} if user is not None else {}
