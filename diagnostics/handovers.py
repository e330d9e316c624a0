"""Hand-overs: an employee hands a case to the helpdesk, who take it, reply and close it.

Every move is a compare-and-set on the row's status, so two helpdesk members pressing "take"
at once, or a reply racing a close, leave one consistent answer. Each move that the other side
must hear about sends one e-mail after the transaction commits: a new case to the helpdesk's
address, a reply or a close to the employee (in the language they handed it over in). An
e-mail that cannot be sent is logged and never undoes the move: the page shows the same thing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from diagnostics.models import AuditEntry, HandOver, HandOverMessage, Job, Machine

log = logging.getLogger(__name__)
Status = HandOver.Status


class HandOverRefused(Exception):
    """A move the hand-over's state (or the input) does not allow; the message says why."""


def clean_note(text: str, required: bool = False) -> str:
    """The note as it will be kept, or HandOverRefused with a message naming the problem."""
    text = (text or "").replace("\x00", "").strip()
    if required and not text:
        raise HandOverRefused(_("Write a message first."))
    if len(text) > HandOver.NOTE_MAX:
        raise HandOverRefused(
            _("The message is too long (%(n)s characters); at most %(max)s.")
            % {"n": f"{len(text):,}", "max": f"{HandOver.NOTE_MAX:,}"}
        )
    return text


def for_job(job: Job) -> HandOver | None:
    """The job's hand-over with its thread, or None."""
    return HandOver.objects.filter(job=job).prefetch_related("messages__author").first()


# --- the employee -----------------------------------------------------------------------------


def hand_over_job(user: Any, job: Job, note: str, site: str) -> HandOver:
    """Hand a job of ``user``'s to the helpdesk with an optional note; a second call finds
    the first hand-over and adds the note to it (refused once it is closed: a new problem
    gets a new diagnosis, which can be handed over in turn)."""
    note = clean_note(note)
    existing = for_job(job)
    if existing is not None:
        if note:
            reply(existing, user, note, site)
        return existing
    try:
        with transaction.atomic():
            handover = _create(user, job, job.machine, job.pasted_text, note, site)
            Job.objects.filter(pk=job.pk, handed_over_at__isnull=True).update(
                handed_over_at=handover.created_at
            )
            AuditEntry.objects.create(
                job=job, machine=job.machine, actor=user, action=AuditEntry.Action.HANDED_OVER
            )
    except IntegrityError:  # a double click: the other request made it
        return for_job(job)
    return handover


def hand_over_text(user: Any, text: str, machine: Machine | None, note: str, site: str) -> HandOver:
    """Hand over a pasted text nothing matched (no job ran), with the machine if one was
    picked."""
    text = (text or "").replace("\x00", "").strip()
    note = clean_note(note)
    if not text and not note:
        raise HandOverRefused(_("Paste the error or write a note for the helpdesk first."))
    with transaction.atomic():
        return _create(user, None, machine, text, note, site)


def _create(user, job, machine, text: str, note: str, site: str) -> HandOver:
    handover = HandOver.objects.create(
        user=user, job=job, machine=machine, pasted_text=text, language=get_language() or ""
    )
    if note:
        HandOverMessage.objects.create(handover=handover, author=user, body=note)
    transaction.on_commit(lambda: _tell_helpdesk(handover, note, site, new=True))
    return handover


# --- both sides ------------------------------------------------------------------------------


def reply(handover: HandOver, author: Any, body: str, site: str, helpdesk: bool = False) -> None:
    """Add a message. The helpdesk's reply takes an open case; the other side hears of it."""
    body = clean_note(body, required=True)
    now = timezone.now()
    with transaction.atomic():
        still_open = HandOver.objects.filter(pk=handover.pk).exclude(status=Status.CLOSED)
        if not still_open.update(updated_at=now):
            raise HandOverRefused(_("This hand-over is closed."))
        if helpdesk:  # nobody held it: whoever answers holds it now
            HandOver.objects.filter(pk=handover.pk, status=Status.OPEN).update(
                status=Status.TAKEN, assignee=author, taken_at=now
            )
        HandOverMessage.objects.create(
            handover=handover, author=author, body=body, from_helpdesk=helpdesk
        )
        if helpdesk:
            transaction.on_commit(lambda: _tell_employee(handover, body, site))
        else:
            transaction.on_commit(lambda: _tell_helpdesk(handover, body, site, new=False))
    handover.refresh_from_db()


# --- the helpdesk ----------------------------------------------------------------------------


def take(handover: HandOver, user: Any) -> None:
    """``user`` holds the case from now on (also taking it over from a colleague)."""
    now = timezone.now()
    moved = (
        HandOver.objects.filter(pk=handover.pk)
        .exclude(status=Status.CLOSED)
        .update(status=Status.TAKEN, assignee=user, taken_at=now, updated_at=now)
    )
    if not moved:
        raise HandOverRefused(_("This hand-over is closed."))
    handover.refresh_from_db()


def close(handover: HandOver, user: Any, body: str, site: str) -> None:
    """Close the case, with an optional last word; the employee gets an e-mail either way."""
    body = clean_note(body)
    now = timezone.now()
    with transaction.atomic():
        moved = (
            HandOver.objects.filter(pk=handover.pk)
            .exclude(status=Status.CLOSED)
            .update(status=Status.CLOSED, closed_at=now, updated_at=now)
        )
        if not moved:
            raise HandOverRefused(_("This hand-over is already closed."))
        HandOver.objects.filter(pk=handover.pk, assignee__isnull=True).update(assignee=user)
        if body:
            HandOverMessage.objects.create(
                handover=handover, author=user, body=body, from_helpdesk=True
            )
        transaction.on_commit(lambda: _tell_employee(handover, body, site, closed=True))
    handover.refresh_from_db()


# --- e-mail ----------------------------------------------------------------------------------


def _send(subject: str, body: str, to: str) -> None:
    try:
        send_mail(subject, body, None, [to])
    except OSError as error:  # smtplib's errors are OSErrors: the move stands, the mail is lost
        log.warning("hand-over e-mail to %s not sent: %s", to, error)


def _tell_helpdesk(handover: HandOver, text: str, site: str, new: bool) -> None:
    """A new case, or the employee's answer, to whoever holds it (else the helpdesk's address)."""
    holder = handover.assignee.email if handover.assignee_id else ""
    to = holder or settings.KAIKETSU_HELPDESK_EMAIL
    link = site + reverse("diagnostics:inbox-detail", args=[handover.pk])
    with translation.override(settings.LANGUAGE_CODE):
        values = {"n": handover.pk, "user": handover.user.get_username()}
        if new:
            subject = _("Hand-over #%(n)s from %(user)s") % values
        else:
            subject = _("Hand-over #%(n)s: %(user)s answered") % values
        machine = handover.machine.name if handover.machine_id else "-"
        lines = [subject, "", _("Machine: %(name)s") % {"name": machine}]
        if text:
            lines += ["", text]
        lines += ["", link]
    _send(subject, "\n".join(lines), to)


def _tell_employee(handover: HandOver, text: str, site: str, closed: bool = False) -> None:
    """The helpdesk's reply or close, in the employee's language, with the link to the case."""
    to = handover.user.email
    if not to:
        return  # no address: the job page and "my jobs" still show it
    link = site + reverse("diagnostics:handover", args=[handover.pk])
    with translation.override(handover.language or settings.LANGUAGE_CODE):
        if closed:
            subject = _("The helpdesk closed your hand-over #%(n)s") % {"n": handover.pk}
        else:
            subject = _("The helpdesk answered your hand-over #%(n)s") % {"n": handover.pk}
        lines = [subject, ""] + ([text, ""] if text else []) + [link]
    _send(subject, "\n".join(lines), to)
