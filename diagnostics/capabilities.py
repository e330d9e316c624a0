"""What the portal's account may do on a machine, in words people read (issue #10).

The runner says *why* a step could not tell as codes (``catalog.CANNOT_REASONS``, the missing
right from ``catalog.RIGHTS``); this module turns them into translated text for the job page,
the machine page and the CLI, and the stored preflight table into rows with the command that
grants the missing right. Pure apart from translation: no ORM, no I/O.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from diagnostics.plans import grant_command

RIGHT_LABELS = {
    "administrators": _("membership of Administrators"),
    "event_log_readers": _("membership of Event Log Readers"),
    "service_query": _("the right to query the IPsec and RAS services"),
    "all_user_connection": _("the VPN connection as an all-user connection"),
    "full_language": _("PowerShell in FullLanguage mode (AppLocker/WDAC allows the runner)"),
    "no_module_logging": _("PowerShell Module Logging that leaves out VpnClient"),
}

REASON_TEXTS = {
    "not_visible": _(
        "the VPN connection is a per-user connection the portal cannot see; "
        "make it an all-user connection"
    ),
    "ambiguous": _("there are several VPN connections and the check does not name one"),
    "cmdlet_missing": _("the command it needs is missing on this Windows"),
    "language_mode": _("PowerShell runs in ConstrainedLanguage mode on this machine"),
    "module_logging": _("PowerShell Module Logging would write the key to the event log"),
    "unrecognised": _("Windows answered with a value the portal cannot read"),
    "timeout": _("the machine did not answer in time"),
}


def cannot_text(cannot: dict[str, Any] | None) -> str:
    """ "could not check: …" for a step's ``cannot`` object, in the active language."""
    cannot = cannot or {}
    need, reason = cannot.get("need"), cannot.get("reason")
    if reason == "access_denied" and need in RIGHT_LABELS:
        why = gettext("the portal's account needs %(right)s") % {"right": RIGHT_LABELS[need]}
    elif reason in REASON_TEXTS:
        why = str(REASON_TEXTS[reason])
    else:
        why = gettext("the reason is in the details")
    return gettext("could not check: %(why)s") % {"why": why}


def preflight_rows(preflight: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stored preflight table with, per kind that cannot run, the right and its grant."""
    if not preflight:
        return []
    account = str(preflight.get("account") or "")
    rows = []
    for row in preflight.get("kinds") or []:
        need = str(row.get("need") or "")
        rows.append(
            {
                **row,
                "right": RIGHT_LABELS.get(need, ""),
                "grant": grant_command(need, account) if need else "",
                "why": cannot_text(row) if row.get("status") == "cannot" else "",
            }
        )
    return rows


def missing_rights(preflight: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Only the kinds that cannot run (what a diagnosis page warns about)."""
    return [r for r in preflight_rows(preflight) if r["status"] in ("cannot", "error")]
