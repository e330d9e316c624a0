"""Article + machine -> plan; host facts + expectation -> verdict. Pure: no I/O, no ORM.

The portal decides pass/fail here, never on the host, so the runner stays the same for
every article and a later pull agent can reuse all of this unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from diagnostics.catalog import (
    CANNOT_REASONS,
    CHECK_KINDS,
    OPERATORS,
    RIGHTS,
    StepArgsError,
    secret_args,
    validate_args,
)

PLAN_VERSION = 1
MASK = "********"


class PlanError(ValueError):
    """A plan cannot be built (bad step, unknown secret)."""


@dataclass(frozen=True)
class PlanStep:
    id: str
    kind: str
    args: dict[str, Any]


def fact_at(facts: Any, path: str) -> Any:
    """Follow a dotted path into facts; anything missing reads as None."""
    value = facts
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def failed_conditions(expect: Iterable[dict[str, Any]], facts: dict[str, Any]) -> list[dict]:
    """The conditions of ``expect`` that ``facts`` do not meet, each with the actual value."""
    failed = []
    for cond in expect:
        actual = fact_at(facts, cond["fact"])
        try:
            holds = OPERATORS[cond["op"]].holds(actual, cond.get("value"))
        except TypeError:  # e.g. comparing text with a number: the expectation does not hold
            holds = False
        if not holds:
            failed.append({**cond, "actual": actual})
    return failed


def evaluate(expect: list[dict[str, Any]], line: dict[str, Any]) -> tuple[str, list[dict]]:
    """Verdict for a check step's result line: ("pass" | "fail" | "error" | "unknown", failed
    conditions).

    "unknown" is the host saying it could not find out (a ``cannot`` object: access denied,
    per-user connection, language mode...). Such a line may still carry the facts it did
    learn (a service's start type read from the registry when its status is denied): a
    condition on a learnt fact that does not hold is a real "fail"; otherwise "unknown",
    even when every learnt fact holds, because the unlearnt ones might not.
    """
    if line.get("ok"):
        failed = failed_conditions(expect, line.get("facts") or {})
        return ("fail" if failed else "pass"), failed
    if not isinstance(line.get("cannot"), dict):
        return "error", []
    learnt = line.get("facts") or {}
    known = [c for c in expect if fact_at(learnt, c["fact"]) is not None]
    failed = failed_conditions(known, learnt)
    return ("fail" if failed else "unknown"), failed


# Verdicts of the steps a diagnosis checked -> its outcome. A check that could not tell
# ("unknown") or could not run ("error") is never counted as healthy (DESIGN: never a false
# fact); a proven problem outranks the unknowns.
HEALTHY_VERDICTS = frozenset({"pass", "done"})


def diagnosis_outcome(verdicts: Iterable[str]) -> str:
    """ "healthy" when every step passed, "problems" when any failed, else "unknown".

    "unknown" means nothing failed but at least one step could not tell or could not run;
    the caller must not report it as healthy (Job.Outcome has no such value yet: map it to
    PROBLEMS, whose page lists the steps that could not be checked).
    """
    verdicts = list(verdicts)
    if any(v == "fail" for v in verdicts):
        return "problems"
    if all(v in HEALTHY_VERDICTS for v in verdicts):
        return "healthy"
    return "unknown"


def build_plan(
    job_id: int | str,
    steps: Iterable[PlanStep],
    resolve_secret: Callable[[str], str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (plan to send, plan to show and store).

    Args of the form ``{"secret": NAME}`` are resolved through ``resolve_secret`` in the plan
    to send only; the stored plan keeps the reference and masks every secret argument.
    """
    to_send, to_show = [], []
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise PlanError(f"duplicate step id {step.id}")
        seen.add(step.id)
        real = copy.deepcopy(step.args)
        shown = copy.deepcopy(step.args)
        for name in secret_args(step.kind):
            ref = real.get(name)
            if isinstance(ref, dict) and "secret" in ref:
                if resolve_secret is None:
                    raise PlanError(f"{step.kind}: secret {ref['secret']!r} needs a secret store")
                real[name] = resolve_secret(ref["secret"])
                shown[name] = {"secret": ref["secret"]}
            elif name in shown:
                shown[name] = MASK
        try:
            validate_args(step.kind, real)
        except StepArgsError as exc:
            raise PlanError(str(exc)) from None
        to_send.append({"id": step.id, "kind": step.kind, "args": real})
        to_show.append({"id": step.id, "kind": step.kind, "args": shown})
    header = {"version": PLAN_VERSION, "job": str(job_id)}
    return {**header, "steps": to_send}, {**header, "steps": to_show}


def parse_line(line: dict[str, Any], known_steps: set[str]) -> str | None:
    """Why a host line does not fit the protocol, or None when it does."""
    if "end" in line or "fatal" in line:
        return None
    step = line.get("step")
    if step not in known_steps:
        return f"unknown step id {step!r}"
    if not isinstance(line.get("ok"), bool):
        return "missing 'ok'"
    cannot = line.get("cannot")
    if cannot is not None and (
        not isinstance(cannot, dict) or cannot.get("reason") not in CANNOT_REASONS
    ):
        return "'cannot' is not a known reason"
    if line["ok"] and "facts" not in line and "after" not in line:
        return "missing 'facts'"
    for key in ("facts", "before", "after"):
        if key in line and line[key] is not None and not isinstance(line[key], dict):
            return f"'{key}' is not an object"
    return None


# --- fixes: what will change, and how to undo it -------------------------------------------

# The fact a check step reports that a fix step of this kind changes, per fix argument.
_PREVIEW_FACTS = {
    "set_service": {"start_type": "start_type", "action": "status"},
    "set_registry_value": {"value": "value", "absent": "value"},
    "set_vpn_connection": {
        "tunnel_type": "tunnel_type",
        "authentication_method": "authentication_method",
        "encryption_level": "encryption_level",
    },
    "set_vpn_ipsec": {"revert_to_default": "ipsec_custom_policy"},
}
_ACTION_RESULT = {"start": "Running", "restart": "Running", "stop": "Stopped"}


def _setting_name(kind: str, args: dict[str, Any], arg: str) -> str:
    if kind == "set_service":
        return f"{args['name']}: {'status' if arg == 'action' else arg}"
    if kind == "set_registry_value":
        return f"{args['path']}\\{args['name']}"
    return arg


def preview_changes(kind: str, args: dict[str, Any], facts: dict[str, Any] | None) -> list[dict]:
    """Rows of {setting, current, new} a fix step will change, from the diagnosis' facts.

    ``facts`` are those of the check the fix answers (None when unknown): the current value
    is shown only when that check reported the same setting.
    """
    facts = facts or {}
    rows = []
    for arg, fact in _PREVIEW_FACTS.get(kind, {}).items():
        if arg not in args:
            continue
        new: Any = args[arg]
        if kind == "set_service" and arg == "action":
            new = _ACTION_RESULT[args[arg]]
        elif kind == "set_registry_value" and arg == "absent":
            new = None
        elif kind == "set_vpn_ipsec":
            new = "default"
        rows.append(
            {"setting": _setting_name(kind, args, arg), "current": facts.get(fact), "new": new}
        )
    if kind == "set_vpn_ipsec" and not args.get("revert_to_default"):
        rows.append(
            {
                "setting": "ipsec_custom_policy",
                "current": facts.get("ipsec_custom_policy"),
                "new": {k: args[k] for k in args if k != "name"},
            }
        )
    if kind == "set_vpn_psk":
        rows.append({"setting": "pre-shared key", "current": MASK, "new": MASK})
    if kind == "schedule_reboot":
        rows.append({"setting": "restart", "current": None, "new": args.get("delay_seconds", 0)})
    return rows


def rollback_args(kind: str, args: dict[str, Any], before: dict[str, Any]) -> dict | None:
    """Args that put back what a fix step found (``before``), or None if it cannot be undone.

    The PSK cannot be read back on Windows, and a restart cannot be taken back.
    """
    if kind == "set_service":
        out = {
            "name": args["name"],
            "action": "start" if before.get("status") == "Running" else "stop",
        }
        if before.get("start_type") in ("Automatic", "Manual", "Disabled"):
            out["start_type"] = before["start_type"]
        return out
    if kind == "set_registry_value":
        base = {"path": args["path"], "name": args["name"]}
        if not before.get("exists"):
            return {**base, "absent": True}
        return {**base, "type": before["type"], "value": before["value"]}
    if kind == "set_vpn_connection":
        out = {k: before.get(k) for k in args if k != "name" and before.get(k) is not None}
        return {**({"name": args["name"]} if "name" in args else {}), **out} if out else None
    if kind == "set_vpn_ipsec":
        policy = before.get("ipsec_custom_policy")
        name = {"name": args["name"]} if "name" in args else {}
        if not policy:
            return {**name, "revert_to_default": True}
        return {**name, **{k: policy.get(k) for k in policy}}
    return None


# --- preflight: what the portal's account can do on a machine --------------------------------

# One read-only step of every check kind, against things every Windows 10/11 has. vpn_dial is
# left out: it dials, which is not read-only. The targets of the network kinds are the machine
# itself, so the preflight says whether the *step* works, not whether a server answers.
PREFLIGHT_STEPS: tuple[PlanStep, ...] = (
    PlanStep("p-os_info", "os_info", {}),
    PlanStep("p-service", "service", {"name": "PolicyAgent"}),
    PlanStep(
        "p-registry_value",
        "registry_value",
        {
            "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
            "name": "AssumeUDPEncapsulationContextOnSendRule",
        },
    ),
    PlanStep("p-vpn_connection", "vpn_connection", {}),
    PlanStep("p-firewall_rules", "firewall_rules", {"protocol": "UDP", "ports": [500, 4500]}),
    PlanStep("p-dns_resolve", "dns_resolve", {"host": "localhost"}),
    PlanStep("p-tcp_connect", "tcp_connect", {"host": "127.0.0.1", "port": 5985}),
    PlanStep("p-ping", "ping", {"host": "127.0.0.1"}),
    PlanStep("p-vpn_events", "vpn_events", {"hours": 1, "max": 1}),
)
NOT_PREFLIGHTED = {"vpn_dial": "dials the VPN, so it is not part of a read-only test"}


def preflight_plan(job_id: int | str = "preflight") -> dict[str, Any]:
    """The read-only plan "test connection" runs: one step of every check kind but vpn_dial."""
    to_send, _shown = build_plan(job_id, PREFLIGHT_STEPS)
    return to_send


def capabilities(lines: Iterable[dict[str, Any]], fatal: str = "") -> list[dict[str, Any]]:
    """Per check kind: {"kind", "status": "works" | "cannot" | "error" | "untested",
    "reason", "need", "detail"} from the preflight's result lines.

    ``fatal`` is the runner's fatal line, if any (e.g. ConstrainedLanguage): then no kind works.
    A step that ran but could not tell (a ``cannot`` line) says which right is missing; a
    per-user VPN connection or an empty phone book still counts as "works" for the kind when
    the runner could tell (the step answered with a true fact).
    """
    by_kind = {s.id: s.kind for s in PREFLIGHT_STEPS}
    seen: dict[str, dict[str, Any]] = {}
    for line in lines:
        kind = by_kind.get(str(line.get("step")))
        if kind is None:
            continue
        if line.get("ok"):
            seen[kind] = {"status": "works", "reason": "", "need": "", "detail": ""}
            continue
        cannot = line.get("cannot") if isinstance(line.get("cannot"), dict) else None
        seen[kind] = {
            "status": "cannot" if cannot else "error",
            "reason": str((cannot or {}).get("reason") or ""),
            "need": str((cannot or {}).get("need") or ""),
            "detail": str(line.get("error") or "")[:500],
        }
    table = []
    for kind in CHECK_KINDS:
        if kind in NOT_PREFLIGHTED:
            row = {"status": "untested", "reason": "", "need": "", "detail": NOT_PREFLIGHTED[kind]}
        elif fatal:
            need = "full_language" if "language_mode" in fatal.lower() else ""
            row = {"status": "cannot", "reason": "language_mode" if need else "", "need": need,
                   "detail": fatal[:500]}  # fmt: skip
        else:
            row = seen.get(
                kind, {"status": "error", "reason": "", "need": "", "detail": "no answer"}
            )
        table.append({"kind": kind, **row})
    return table


def grant_command(need: str, account: str) -> str:
    """The PowerShell an administrator runs to give ``account`` the right ``need`` ("" if none).

    ``account`` is the portal's user name as stored in the credential; it is shown, never run
    by the portal, and quotes are stripped so the command stays one piece of text to copy.
    """
    right = RIGHTS.get(need)
    if right is None:
        return ""
    return right.grant.replace("{account}", account.replace("'", "").replace('"', ""))
