"""The "test connection" button: run `hostname` on a machine from a worker, keep the answer.

The view stores a pending entry and enqueues the task; the worker replaces it with the
result; the page polls the entry. The cache is the right home: the answer matters for a
minute, and losing it only means pressing the button again.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TypedDict

from django.core.cache import cache
from django.db import transaction

from diagnostics import remote
from diagnostics.models import Machine

log = logging.getLogger(__name__)

TTL_S = 300
TIMEOUT_S = 15  # below the task's time limit (60 s), above a slow but healthy host


class Outcome(TypedDict, total=False):
    status: str  # "pending" | "ok" | "error"
    hostname: str
    message: str
    kind: str  # the RemoteError kind
    elapsed_ms: int


def key(machine_id: int, token: str) -> str:
    return f"machine-test:{machine_id}:{token}"


def result(machine_id: int, token: str) -> Outcome | None:
    """What the test has come to, or None for an unknown (or expired) token."""
    return cache.get(key(machine_id, token))


def start(machine: Machine) -> str:
    """Record a pending test and enqueue it once the transaction commits; returns its token."""
    from diagnostics.tasks import test_connection_task

    token = secrets.token_urlsafe(9)
    cache.set(key(machine.pk, token), Outcome(status="pending"), TTL_S)
    transaction.on_commit(lambda: test_connection_task.delay(machine.pk, token))
    return token


def run(machine_id: int, token: str) -> Outcome:
    """The task's body: connect, run `hostname`, store and return the outcome."""
    from diagnostics.jobs import target_for

    machine = Machine.objects.select_related("credential").filter(pk=machine_id).first()
    began = time.monotonic()
    if machine is None:
        outcome = Outcome(status="error", kind="gone", message="the machine was deleted")
    else:
        try:
            hostname = remote.test_connection(target_for(machine), timeout_s=TIMEOUT_S)
            outcome = Outcome(status="ok", hostname=hostname)
        except remote.RemoteError as exc:
            outcome = Outcome(status="error", kind=exc.kind, message=str(exc))
        except Exception as exc:  # e.g. a password the vault cannot decrypt: say so, never hang
            log.exception("connection test of machine %s failed", machine_id)
            outcome = Outcome(
                status="error",
                kind="internal",
                message=f"{machine.name}: the test could not run ({type(exc).__name__})",
            )
    outcome["elapsed_ms"] = int((time.monotonic() - began) * 1000)
    cache.set(key(machine_id, token), outcome, TTL_S)
    return outcome
