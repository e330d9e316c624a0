"""Article + machine -> plan; host facts + expectation -> verdict. Pure: no I/O, no ORM.

The portal decides pass/fail here, never on the host, so the runner stays the same for
every article and a later pull agent can reuse all of this unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from diagnostics.catalog import OPERATORS, StepArgsError, secret_args, validate_args

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
    """Verdict for a check step's result line: ("pass" | "fail" | "error", failed conditions)."""
    if not line.get("ok"):
        return "error", []
    failed = failed_conditions(expect, line.get("facts") or {})
    return ("fail" if failed else "pass"), failed


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
