"""Audit entries and the changes a fix asks for, in words, for the helpdesk (translated).

Audit rows keep plain JSON: a request's changes as ``{setting, current, new}`` (the preview the
employee confirmed), what ran as ``{step, kind, from, to}``. Pages show them as sentences and
values as JSON (``true``, ``2``), never a Python repr, and a pre-shared key as what happens to
it, never as asterisks that look like a value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from diagnostics import assessment
from diagnostics.models import AuditEntry, Fix, Job

PSK_SETTING = "pre-shared key"  # plans.preview_changes' name for the PSK row
PSK_KIND = "set_vpn_psk"
DROPPED = "re-read after the connection dropped"  # fixes.py's detail for a re-read


@dataclass(frozen=True)
class Change:
    """One setting: its name, what it is now (or was), what it becomes; words, not reprs."""

    setting: str
    old: str
    new: str
    secret: bool = False


def value_text(value: Any) -> str:
    """A setting's value as the helpdesk reads it: JSON for numbers, booleans and lists."""
    if value is None:
        return _("not set")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _psk(new: str) -> Change:
    return Change(_("pre-shared key"), _("cannot be read (Windows never shows it)"), new, True)


def requested(changes: list[dict[str, Any]]) -> list[Change]:
    """A fix request's preview rows: what each setting is now and what it will become."""
    rows = []
    for row in changes:
        setting = row.get("setting", "")
        if setting == PSK_SETTING:
            rows.append(_psk(_("will be replaced with the company key from the secret store")))
        elif setting == "restart":
            seconds = row.get("new") or 0
            rows.append(Change(_("restart"), "-", _("in %(n)s seconds") % {"n": seconds}))
        else:
            rows.append(Change(setting, value_text(row.get("current")), value_text(row.get("new"))))
    return rows


def _target(step: dict[str, Any] | None, kind: str) -> str:
    """What a fix step changed, named from the plan's (masked) args."""
    args = (step or {}).get("args") or {}
    if kind in ("set_service", "set_registry_value") and args.get("name"):
        return str(args["name"])
    if args.get("name"):
        return _("VPN connection %(name)s") % {"name": args["name"]}
    return kind


def applied(changes: list[dict[str, Any]], plan: dict[str, Any] | None) -> list[Change]:
    """What ran: every field a step changed, from -> to, named after its target."""
    steps = {s.get("id"): s for s in (plan or {}).get("steps", [])}
    rows = []
    for row in changes:
        kind = row.get("kind", "")
        if kind == PSK_KIND:
            rows.append(_psk(_("replaced with the company key")))
            continue
        target = _target(steps.get(row.get("step")), kind)
        before, after = row.get("from") or {}, row.get("to") or {}
        for key in dict.fromkeys([*before, *after]):
            if before.get(key) != after.get(key):
                rows.append(
                    Change(
                        f"{target}: {key}", value_text(before.get(key)), value_text(after.get(key))
                    )
                )
    return rows


def _fix_titles(job: Job, keys: str) -> str:
    wanted = [k.strip() for k in keys.split(",") if k.strip()]
    titles = {f.key: f.tr("title") for f in Fix.objects.filter(article=job.article, key__in=wanted)}
    return ", ".join(titles.get(k, k) for k in wanted)


def sentence(entry: AuditEntry) -> str:
    """One audit entry as a sentence in the reader's language."""
    who = entry.actor.get_username() if entry.actor_id else _("The portal")
    A = AuditEntry.Action
    if entry.action == A.FIX_REQUESTED:
        return _("%(who)s asked for: %(fixes)s.") % {
            "who": who,
            "fixes": _fix_titles(entry.job, entry.detail),
        }
    if entry.action in (A.FIX_APPROVED, A.FIX_DECLINED):
        text = (
            _("%(who)s approved the fix.")
            if entry.action == A.FIX_APPROVED
            else _("%(who)s declined the fix.")
        ) % {"who": who}
        return text + (" " + _("Note: %(note)s") % {"note": entry.detail} if entry.detail else "")
    if entry.action == A.FIX_APPLIED:
        n = len(applied(entry.changes, entry.job.plan))
        text = ngettext(
            "The fix ran and changed %(n)s setting.", "The fix ran and changed %(n)s settings.", n
        ) % {"n": n}
        if entry.detail == DROPPED:
            return text + " " + _("The connection dropped; the machine was re-read afterwards.")
        if entry.detail:
            return text + " " + _("It stopped with: %(error)s") % {"error": entry.detail}
        return text
    if entry.action == A.ROLLBACK:
        return _("%(who)s rolled the fix back.") % {"who": who}
    if entry.action == A.AUTO_ROLLBACK:
        return _("The portal rolled the fix back on its own.") + (
            " " + entry.detail if entry.detail else ""
        )
    if entry.action == A.HANDED_OVER:
        return _("%(who)s handed the job to the helpdesk.") % {"who": who}
    return entry.get_action_display()


def changes(entry: AuditEntry) -> list[Change]:
    """The entry's changes as rows: a request's preview, or what ran."""
    if entry.action == AuditEntry.Action.FIX_REQUESTED:
        return requested(entry.changes)
    return applied(entry.changes, entry.job.plan)


@dataclass
class ApprovalCard:
    """What the helpdesk reads before approving: what the diagnosis found, each fix with the
    causes it answers, and every setting that will change."""

    evidence: str
    fixes: list[tuple[str, list[str]]]  # (fix title, titles of the proven causes it answers)
    changes: list[Change]


def approval_card(job: Job) -> ApprovalCard:
    """The card of a fix waiting for approval (its diagnosis is ``job.parent``)."""
    found = assessment.assess_job(job.parent) if job.parent_id else None
    why = assessment.reasons(job.parent, found) if found else {}
    chosen = Fix.objects.filter(article=job.article, key__in=job.fix_keys).order_by("position")
    request = next(
        (e for e in job.audit.all() if e.action == AuditEntry.Action.FIX_REQUESTED), None
    )
    return ApprovalCard(
        evidence=assessment.evidence_sentence(found.evidence) if found else "",
        fixes=[(f.tr("title"), [r.tr("title") for r in why.get(f.key, [])]) for f in chosen],
        changes=requested(request.changes) if request else [],
    )
