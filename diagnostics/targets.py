"""Where a machine's credential goes: its target, changed only by an administrator, audited.

A machine's target (``Machine.TARGET_FIELDS``) decides where the WinRM password and the
secrets of a fix are sent. Whoever changes it through the admin or the CSV import comes here:
an administrator's change is bound (``Machine.bind``) and written to the audit trail with the
old and new values; anyone else may only add a machine inside the address pattern an
administrator set on its credential (audited too) and is refused anything more.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.translation import gettext as _

from diagnostics import access
from diagnostics.models import AuditEntry, Machine


def snapshot(machine: Machine) -> dict[str, str]:
    """The target in words (the credential by name), as the audit trail shows it."""
    values = {f: getattr(machine, f) for f in Machine.TARGET_FIELDS if f != "credential"}
    values["credential"] = machine.credential.name if machine.credential_id else ""
    return {k: str(v) for k, v in values.items()}


def changes(before: dict[str, str], after: dict[str, str]) -> list[dict[str, str]]:
    """``[{"setting", "from", "to"}]`` for each target field that differs."""
    return [
        {"setting": f, "from": before.get(f, ""), "to": after[f]}
        for f in Machine.TARGET_FIELDS
        if before.get(f, "") != after[f]
    ]


@transaction.atomic
def save(machine: Machine, user: Any, before: dict[str, str] | None) -> bool:
    """Save ``machine``; if its target is new or changed, audit the change and, when ``user``
    is an administrator, bind it to their approval. ``before`` is ``snapshot`` of the stored
    row (None for a new machine).

    Raises PermissionDenied when ``user`` may not change targets: callers refuse such edits
    with a clear message first; this is the last line, not the message.
    """
    diff = changes(before or {}, snapshot(machine))
    if not diff:
        machine.save()
        return False
    if access.can_change_machine_targets(user):
        machine.bind(user)
        detail = _("Connection settings approved by %(user)s.")
    elif before is None and machine.credential.covers(machine.address):
        # A new machine inside the address pattern an administrator set for its credential:
        # the pattern is their approval; the machine stays unbound.
        detail = _("Added by %(user)s inside the credential's address pattern.")
    else:
        raise PermissionDenied(_("Only an administrator changes where a credential is sent."))
    machine.save()
    AuditEntry.objects.create(
        actor=user,
        action=AuditEntry.Action.TARGET_CHANGED,
        machine=machine,
        changes=diff,
        detail=detail % {"user": user.get_username()},
    )
    return True


def refusal(user: Any, machine: Machine | None, after: dict[str, str], credential: Any) -> str:
    """Why ``user`` may not give a machine the target ``after`` ('' if they may): the rule of
    ``save``, asked before anything is written so that the refusal can name the row.

    ``machine`` is the stored machine (None for a new one); ``credential`` the new target's.
    """
    if access.can_change_machine_targets(user):
        return ""
    if machine is not None:
        if not changes(snapshot(machine), after):
            return ""
        return _(
            "changing where %(m)s's credential is sent (address, port, scheme, credential) "
            "is an administrator's act; it stays %(now)s"
        ) % {"m": machine.name, "now": describe(snapshot(machine))}
    if credential.covers(after["address"]):
        return ""
    return _(
        "the credential %(c)s may not be sent to %(a)s: an administrator adds this machine "
        "or sets an address pattern on the credential that covers it"
    ) % {"c": credential.name, "a": after["address"]}


def describe(target: dict[str, str]) -> str:
    """``https://pc1:5986 (fleet-winrm)``: a target in one short phrase."""
    return f"{target['scheme']}://{target['address']}:{target['port']} ({target['credential']})"


@transaction.atomic
def approve(machine: Machine, user: Any) -> None:
    """An administrator approves a machine's current target as it is (e.g. one the helpdesk
    imported): bound and audited, nothing else changes."""
    if not access.can_change_machine_targets(user):
        raise PermissionDenied(_("Only an administrator changes where a credential is sent."))
    machine.bind(user)
    machine.save(update_fields=["bound_target", "bound_by", "bound_at"])
    AuditEntry.objects.create(
        actor=user,
        action=AuditEntry.Action.TARGET_CHANGED,
        machine=machine,
        changes=[],
        detail=_("Connection settings approved by %(user)s.") % {"user": user.get_username()},
    )
