"""The worker half of "test connection": run `hostname` on a machine, keep the answer.

The view half (diagnostics/connectivity.py) stores a pending entry and enqueues the task by
name; this replaces the entry with the result, which the page polls.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

from diagnostics import remote
from diagnostics.connectivity import TTL_S, Outcome, key
from diagnostics.jobs import target_for
from diagnostics.models import Machine

log = logging.getLogger(__name__)

TIMEOUT_S = 15  # below the task's time limit (60 s), above a slow but healthy host


def run(machine_id: int, token: str) -> Outcome:
    """Connect, run `hostname`, store and return the outcome."""
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
