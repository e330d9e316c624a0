"""The worker half of "test connection": run `hostname` on a machine, then the read-only
preflight plan, keep the answer.

The view half (diagnostics/connectivity.py) stores a pending entry and enqueues the task by
name; this replaces the entry with the result, which the page polls. The preflight (one step
of every check kind, issue #10) says per kind whether the portal's account can run it, and is
kept with the machine so the machine page and every diagnosis can show what cannot be checked.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from diagnostics import remote
from diagnostics.connectivity import TTL_S, Outcome, key
from diagnostics.jobs import target_for
from diagnostics.models import Machine
from diagnostics.plans import capabilities, preflight_plan

log = logging.getLogger(__name__)

TIMEOUT_S = 15  # below the task's time limit (60 s), above a slow but healthy host
# hostname (<= 15 s) + preflight stays below the task's soft limit (50 s). A managed PC's
# firewall enumeration can take longer (review D-6): the kinds left then read "cannot: timeout".
PREFLIGHT_DEADLINE_S = 30


def preflight(machine: Machine) -> list[dict[str, Any]]:
    """Run the read-only preflight plan, store its capability table on the machine, return it.

    Kinds whose step never answered say why: "cannot: timeout" when the plan ran past its
    deadline (a slow firewall enumeration, say), else "error" with the transport's message.
    """
    lines: list[dict[str, Any]] = []
    fatal, failure, timed_out = "", "", False
    try:
        remote.run_plan(
            target_for(machine), preflight_plan(), lines.append, deadline_s=PREFLIGHT_DEADLINE_S
        )
    except remote.RemoteError as exc:
        # A fatal line (ConstrainedLanguage) comes with exit code 1.
        fatal = next((str(ln["fatal"]) for ln in lines if "fatal" in ln), "")
        failure, timed_out = str(exc)[:500], exc.kind == "timeout"
    table = capabilities(lines, fatal=fatal)
    for row in table:
        if failure and row["status"] == "error" and row["detail"] == "no answer":
            row.update(detail=failure)
            if timed_out:
                row.update(status="cannot", reason="timeout")
    # Windows' locale, for words shown on the machine when no owner's language is known.
    os_info = next((ln for ln in lines if ln.get("step") == "p-os_info" and ln.get("ok")), {})
    locale = (os_info.get("facts") or {}).get("locale")
    stored = {"account": machine.credential.username, "kinds": table, "locale": locale}
    Machine.objects.filter(pk=machine.pk).update(preflight=stored, preflight_at=timezone.now())
    return table


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
            outcome["capabilities"] = preflight(machine)
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
