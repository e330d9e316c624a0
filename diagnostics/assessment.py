"""A finished diagnosis -> its assessment: evidence, each cause's status, the fixes it allows.

The judging is pure (``plans.assess``); this module only reads a job's stored steps and its
article into plain data, and puts the result into words. It is recomputed from what is stored
(the evidence is aged against the time its step arrived), so the page, the CLI and a fix
request always agree on what a diagnosis found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from diagnostics import plans
from diagnostics.models import Article, Bilingual, Check, Job, StepResult

EVIDENCE_STEP_ID = "events"  # the step a diagnosis adds when its article reads no events
EVIDENCE_ARGS = {"hours": 72, "max": 20}


@dataclass
class Reason(Bilingual):
    """Why a fix is offered: a failed check, or a cause proven by ruling out the others."""

    title_ja: str
    title_en: str
    explanation_ja: str = ""
    explanation_en: str = ""


def reason_for(check: Check) -> Reason:
    return Reason(check.title_ja, check.title_en, check.explanation_ja, check.explanation_en)


def _inferred_reason(cause: dict[str, Any]) -> Reason:
    title, text = cause.get("title") or {}, cause.get("explanation") or {}
    return Reason(title.get("ja", ""), title.get("en", ""), text.get("ja", ""), text.get("en", ""))


def needs_evidence_step(article: Article) -> bool:
    """True when the article's checks read no event log: the diagnosis reads it anyway."""
    return not article.checks.filter(role=Check.Role.EVIDENCE).exists()


def _evidence(steps: list[StepResult]) -> plans.Evidence:
    for step in steps:
        role = step.kb_check.role if step.kb_check else None
        if role == Check.Role.EVIDENCE or (role is None and step.kind in plans.EVIDENCE_KINDS):
            readable = step.verdict not in ("error", "unknown")  # unknown: could not tell
            return plans.read_evidence(readable, step.facts, step.created_at)
    return plans.Evidence(plans.EvidenceState.UNKNOWN)


def assess_job(job: Job) -> plans.Assessment | None:
    """The assessment of a finished diagnosis; None for any other job."""
    if job.kind != Job.Kind.DIAGNOSE or job.status != Job.Status.DONE:
        return None
    steps = list(
        job.steps.filter(phase=StepResult.Phase.CHECK)
        .select_related("kb_check__fix")
        .order_by("position")
    )
    return assess_steps(job.article, steps)


def assess_steps(article: Article, steps: list[StepResult]) -> plans.Assessment:
    """Judge a diagnosis' check results (also used before the job is marked done)."""
    causes, facts = [], {}
    for step in steps:
        check = step.kb_check
        if check is None or check.role != Check.Role.CAUSE:
            continue
        facts[check.key] = step.facts or {}
        causes.append(
            plans.CauseInput(
                check.key,
                tuple(check.codes or article.error_codes or ()),
                step.verdict,
                tuple(check.when or ()),
                check.fix.key if check.fix else None,
            )
        )
    for cause in article.inferred or []:
        causes.append(
            plans.CauseInput(
                cause["key"], tuple(cause["codes"]), fix=cause.get("fix"), inferred=True
            )
        )
    return plans.assess(causes, facts, _evidence(steps))


def reasons(job: Job, assessment: plans.Assessment) -> dict[str, list[Reason]]:
    """Fix key -> the proven causes it answers, for the offer page."""
    checks = {c.key: c for c in job.article.checks.all()}
    inferred = {c["key"]: c for c in job.article.inferred or []}
    out: dict[str, list[Reason]] = {}
    for finding in assessment.with_status(plans.CauseStatus.PROVEN):
        if not finding.fix:
            continue
        if finding.inferred:
            reason = _inferred_reason(inferred[finding.key])
        else:
            reason = reason_for(checks[finding.key])
        out.setdefault(finding.fix, []).append(reason)
    return out


def _ago(minutes: int | None) -> str:
    minutes = minutes or 0
    if minutes < 120:
        return _("%(n)s minutes ago") % {"n": minutes}
    if minutes < 48 * 60:
        return _("%(n)s hours ago") % {"n": minutes // 60}
    return _("%(n)s days ago") % {"n": minutes // (24 * 60)}


def evidence_sentence(evidence: plans.Evidence) -> str:
    """ "Your last attempt failed with 789, 26 hours ago" and what that means now."""
    state, S = evidence.state, plans.EvidenceState
    if state == S.UNKNOWN:
        return _(
            "The VPN event log could not be read, so the portal cannot tell whether the VPN "
            "is failing now."
        )
    if state == S.NONE:
        return _("No VPN connection attempt is logged in the last 72 hours.")
    if state == S.WORKING:
        return _("Your last VPN connection worked (%(ago)s).") % {
            "ago": _ago(evidence.success_age_minutes)
        }
    failed = _("Your last attempt failed with %(code)s, %(ago)s") % {
        "code": evidence.code if evidence.code is not None else "?",
        "ago": _ago(evidence.age_minutes),
    }
    if state == S.RECOVERED:
        return _("%(failed)s; you connected successfully after that (%(ago)s).") % {
            "failed": failed,
            "ago": _ago(evidence.success_age_minutes),
        }
    if state == S.UNCONFIRMED:
        return _("%(failed)s, and there has been no attempt since.") % {"failed": failed}
    return _("Your last attempt failed with %(code)s, %(ago)s; nothing has worked since.") % {
        "code": evidence.code if evidence.code is not None else "?",
        "ago": _ago(evidence.age_minutes),
    }


def verdict_text(assessment: plans.Assessment) -> str:
    """The diagnosis' verdict in the reader's language: evidence, then what it means."""
    evidence, C = assessment.evidence, plans.CauseStatus
    parts = [evidence_sentence(evidence)]
    cannot_tell = assessment.with_status(C.CANNOT_TELL)
    suspect = assessment.with_status(C.SUSPECT)
    if assessment.fixes:
        parts.append(_("The checks below show what causes it; the portal offers the fix."))
    elif evidence.current:
        if cannot_tell:
            parts.append(
                _(
                    "Some checks could not find out, so the cause cannot be told and no fix is "
                    "offered. Ask the helpdesk."
                )
            )
        else:
            parts.append(
                _(
                    "No setting on this PC explains this error, so no fix is offered. The "
                    "cause may be the network between you and the VPN server (a home router, "
                    "a hotel network) or the server: try another network (for example your "
                    "phone's tethering), or ask the helpdesk."
                )
            )
    elif evidence.state == plans.EvidenceState.UNKNOWN or cannot_tell or suspect:
        parts.append(
            _(
                "No fix is offered while no current failure shows what matters. Try to connect "
                "once now; if it fails, run the diagnosis again."
            )
        )
    else:
        parts.append(
            _(
                "This machine looks healthy: no fix is needed. If the VPN fails again, try to "
                "connect once, then run the diagnosis again right away."
            )
        )
    return " ".join(parts)


def after_fix_note(diagnosis: Job, new: int | None) -> str:
    """When a fix cleared the diagnosed error but the employee's attempt now fails with another
    one (a NAT fault masks a wrong PSK), say plainly that a second step is needed."""
    found = assess_job(diagnosis)
    if found is None or found.evidence.code is None or new is None:
        return ""
    if new == found.evidence.code:
        return ""
    return _(
        "The fix cleared error %(old)s, but the connection now fails with %(new)s: a second "
        "cause was hidden behind the first. Run the diagnosis again to find and fix it."
    ) % {"old": found.evidence.code, "new": new}


_EN_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def first_sentence(text: str) -> tuple[str, str]:
    """Split KB wording into its first sentence and the rest.

    Every shipped check's explanation opens with the problem as the employee meets it ("The
    IPsec Policy Agent service is stopped."); the rest is the cause and the way out. The page
    heads each problem with that sentence instead of the check's title, which states the
    healthy condition (tests/test_kb_files.py keeps the convention).
    """
    text = (text or "").strip()
    end = text.find("。")  # Japanese wording ends its sentences with 。
    if end >= 0:
        return text[: end + 1], text[end + 1 :].strip()
    parts = _EN_SENTENCE_END.split(text, maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def problem_words(check: Check) -> tuple[str, str]:
    """A failed check as (the problem, its cause and what to do) in the active language."""
    problem, rest = first_sentence(check.tr("explanation"))
    return (problem or check.tr("title")), rest
