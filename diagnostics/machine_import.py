"""Import machines from CSV: parse, check every row, and write all rows or none.

Columns: name, address, port, scheme, owner (user names or e-mail addresses separated by
";"), credential (the name of an existing Credential). The check reports every bad row with
its line number; import_machines() refuses to write anything while one row is bad.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Lower
from django.utils.translation import gettext as _

from diagnostics import targets
from diagnostics.models import ADDRESS_VALIDATOR, NAME_VALIDATOR, Credential, Machine

COLUMNS = ("name", "address", "port", "scheme", "owner", "credential")
MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 10_000
# Names looked up per query: one IN list, well under SQLite's 32,766 bound variables, where
# one OR per e-mail (the old way) broke past ~1,000 owners (SQLite's expression depth).
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class RowError:
    line: int  # 1 = the header line
    reason: str


@dataclass
class MachineRow:
    """One good row, resolved to database objects."""

    line: int
    name: str
    address: str
    port: int
    scheme: str
    owners: list  # User instances
    credential: Credential
    exists: bool = False


@dataclass
class Report:
    rows: list[MachineRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.rows)


def decode(data: bytes) -> str:
    """UTF-8 (with or without the BOM Excel writes), else Shift_JIS as Japanese Excel saves."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932")
    except UnicodeDecodeError:
        raise ValueError(_("The file is neither UTF-8 nor Shift_JIS text.")) from None


def _split_owners(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def _read(text: str, report: Report) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        report.errors.append(RowError(1, _("The file is empty.")))
        return []
    except csv.Error as exc:
        report.errors.append(RowError(1, _("Not a CSV file: %(error)s") % {"error": exc}))
        return []
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        report.errors.append(
            RowError(1, _("Missing column(s): %(columns)s") % {"columns": ", ".join(missing)})
        )
        return []
    rows = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # blank lines, e.g. at the end of the file
            if len(values) > len(names):
                report.errors.append(RowError(line, _("More values than columns.")))
                continue
            padded = values + [""] * (len(names) - len(values))
            rows.append((line, {n: v.strip() for n, v in zip(names, padded, strict=True)}))
            if len(rows) > MAX_ROWS:
                report.errors.append(
                    RowError(line, _("Too many rows (at most %(n)s).") % {"n": MAX_ROWS})
                )
                return []
    except csv.Error as exc:
        report.errors.append(
            RowError(reader.line_num, _("Not a CSV file: %(error)s") % {"error": exc})
        )
    return rows


def _chunks(values: set[str]) -> list[list[str]]:
    ordered = sorted(values)
    return [ordered[i : i + LOOKUP_CHUNK] for i in range(0, len(ordered), LOOKUP_CHUNK)]


def _lookups(rows: list[tuple[int, dict[str, str]]]) -> tuple[dict, dict, dict, dict]:
    """Every user, credential and existing machine the rows name, a few queries per 500."""
    wanted_owners = {o for _l, r in rows for o in _split_owners(r.get("owner", ""))}
    User = get_user_model()
    by_name: dict[str, list] = {}
    by_email: dict[str, list] = {}
    users = {}
    for chunk in _chunks(wanted_owners):
        users.update({u.pk: u for u in User.objects.filter(username__in=chunk)})
    emails = {o.lower() for o in wanted_owners if "@" in o}
    for chunk in _chunks(emails):
        matched = User.objects.annotate(email_lower=Lower("email")).filter(email_lower__in=chunk)
        users.update({u.pk: u for u in matched})
    for user in users.values():
        by_name.setdefault(user.get_username(), []).append(user)
        if user.email:
            by_email.setdefault(user.email.lower(), []).append(user)
    credentials = {
        c.name: c
        for c in Credential.objects.filter(name__in={r.get("credential", "") for _l, r in rows})
    }
    names = {r.get("name", "") for _l, r in rows}
    existing = {}
    for chunk in _chunks(names):
        existing.update(
            {m.name: m for m in Machine.objects.select_related("credential").filter(name__in=chunk)}
        )
    return by_name, by_email, credentials, existing


def check(text: str, *, user: Any, update: bool = False) -> Report:
    """Parse and check the CSV text as ``user`` would import it; the report lists every bad
    row (nothing is written). Where a credential goes is ``targets.refusal``'s rule."""
    report = Report()
    if len(text.encode("utf-8")) > MAX_BYTES:
        report.errors.append(RowError(1, _("The file is too large (at most 2 MB).")))
        return report
    rows = _read(text, report)
    by_name, by_email, credentials, existing = _lookups(rows)
    seen: dict[str, int] = {}
    for line, r in rows:
        reasons = _row_errors(r, by_name, by_email, credentials, existing, seen, line, update)
        if not reasons:
            reasons = _target_refusal(user, r, existing.get(r["name"]), credentials)
        report.errors.extend(RowError(line, reason) for reason in reasons)
        if not reasons:
            report.rows.append(
                MachineRow(
                    line=line,
                    name=r["name"],
                    address=r["address"],
                    port=int(r["port"]),
                    scheme=r["scheme"].lower(),
                    owners=[_owner(o, by_name, by_email) for o in _split_owners(r["owner"])],
                    credential=credentials[r["credential"]],
                    exists=r["name"] in existing,
                )
            )
    if not rows and not report.errors:
        report.errors.append(RowError(2, _("The file has no machine rows.")))
    return report


def _target_refusal(user: Any, r: dict[str, str], machine: Machine | None, credentials: dict):
    """The row's target, refused unless ``user`` may send the credential there."""
    after = {
        "address": r["address"],
        "port": str(int(r["port"])),
        "scheme": r["scheme"].lower(),
        "verify_tls": str(machine.verify_tls if machine else True),
        "credential": r["credential"],
    }
    reason = targets.refusal(user, machine, after, credentials[r["credential"]])
    return [reason] if reason else []


def _owner(key: str, by_name: dict, by_email: dict):
    users = by_name.get(key) or by_email.get(key.lower()) or []
    return users[0] if len(users) == 1 else None


def _row_errors(
    r: dict[str, str],
    by_name: dict,
    by_email: dict,
    credentials: dict,
    existing: dict[str, Machine],
    seen: dict[str, int],
    line: int,
    update: bool,
) -> list[str]:
    reasons = [
        _("missing %(column)s") % {"column": column} for column in COLUMNS if not r.get(column)
    ]
    name = r.get("name", "")
    if name:
        try:
            NAME_VALIDATOR(name)
        except ValidationError:
            reasons.append(
                _("bad name %(name)s (letters, digits, . _ - and at most 63)") % {"name": name}
            )
        if name in seen:
            reasons.append(
                _("duplicate name %(name)s (also on line %(line)s)")
                % {"name": name, "line": seen[name]}
            )
        else:
            seen[name] = line
        if name in existing and not update:
            reasons.append(_("machine %(name)s already exists") % {"name": name})
    address = r.get("address", "")
    if len(address) > 253:
        reasons.append(_("address too long"))
    elif address:
        try:
            ADDRESS_VALIDATOR(address)
        except ValidationError:
            reasons.append(
                _("bad address %(address)s (a host name or an IP address only)")
                % {"address": address[:80]}
            )
    port = r.get("port", "")
    # isdigit() alone takes "²" and "①", which int() then refuses: ASCII digits only.
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        reasons.append(_("bad port %(port)s (1 to 65535)") % {"port": port})
    scheme = r.get("scheme", "")
    if scheme and scheme.lower() not in Machine.Scheme.values:
        reasons.append(_("unknown scheme %(scheme)s (http or https)") % {"scheme": scheme})
    for key in _split_owners(r.get("owner", "")):
        users = by_name.get(key) or by_email.get(key.lower()) or []
        if not users:
            reasons.append(_("unknown owner %(owner)s") % {"owner": key})
        elif len(users) > 1:
            reasons.append(_("owner %(owner)s matches several users") % {"owner": key})
    credential = r.get("credential", "")
    if credential and credential not in credentials:
        reasons.append(_("unknown credential %(name)s") % {"name": credential})
    return reasons


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


class ImportRefused(Exception):
    """The file has bad rows; nothing was written."""


@transaction.atomic
def import_machines(text: str, *, user: Any, update: bool = False) -> ImportResult:
    """Check the text again (never trust what a browser sent back) and write every row, or none.

    An updated machine keeps its id and jobs; its owners become exactly the file's owners.
    A new or changed target is saved through ``targets.save`` (bound and audited).
    """
    report = check(text, user=user, update=update)
    if not report.ok:
        raise ImportRefused(report)
    created = updated = 0
    for row in report.rows:
        machine = Machine.objects.select_for_update().filter(name=row.name).first()
        before = targets.snapshot(machine) if machine else None
        machine = machine or Machine(name=row.name)
        machine.address, machine.port, machine.scheme = row.address, row.port, row.scheme
        machine.credential = row.credential
        targets.save(machine, user, before)
        machine.owners.set(row.owners)
        created += before is None
        updated += before is not None
    return ImportResult(created=created, updated=updated)
