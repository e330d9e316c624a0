"""Article + machine -> plan; host facts + expectation -> verdict. Pure: no I/O, no ORM.

The portal decides pass/fail here, never on the host, so the runner stays the same for
every article and a later pull agent can reuse all of this unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from diagnostics.catalog import (
    CANNOT_REASONS,
    CHECK_KINDS,
    OPERATORS,
    RIGHTS,
    StepArgsError,
    fix_target_problems,
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
        # A fix saved before the allow-list (or written around it) still never runs: the key
        # is checked again here; the value is not, as a roll-back restores what was there.
        outside = fix_target_problems(step.kind, real, values=False)
        if outside:
            raise PlanError(outside[0])
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


# --- evidence and causes: which fixes a diagnosis may offer (issue #9) ---------------------
#
# A failed check is either a *cause* (a setting or state that breaks the connection, with its
# fix) or *evidence* (the RasClient events: the last error code, its age, its connection).
# Evidence never gets a fix of its own: it says whether the VPN is failing *now* and which
# causes fit the error code (shared/facts/windows-vpn.md, section 1). A fix is offered only
# for a cause that failed, applies in the situation (its ``when``), and fits a current error.

# A failure at most this old, with no later success, is the one the employee is reporting now
# (they paste the error they just saw). Older, with no attempt since, it is "unconfirmed": the
# employee is asked to try once more rather than have their machine changed on old news.
CURRENT_MINUTES = 60
EVIDENCE_KINDS = ("vpn_events",)
ROLES = ("cause", "evidence")
EVENT_CONNECTED, EVENT_FAILED = 20225, 20227


class EvidenceState:
    """What the event log says about the VPN now (plain strings: they go into JSON)."""

    FAILING = "failing"  # the newest attempt failed, recently: the failure is current
    UNCONFIRMED = "unconfirmed"  # the newest attempt failed long ago, nothing since
    RECOVERED = "recovered"  # a failure, then a later successful connection: not current
    WORKING = "working"  # only successful connections in the window
    NONE = "none"  # no attempt in the window
    UNKNOWN = "unknown"  # the events could not be read: cannot tell


@dataclass(frozen=True)
class Evidence:
    """The last failed attempt (if any) and whether it is current."""

    state: str
    code: int | None = None
    age_minutes: int | None = None
    connection: str | None = None
    success_age_minutes: int | None = None

    @property
    def current(self) -> bool:
        return self.state == EvidenceState.FAILING

    def as_json(self) -> dict[str, Any]:
        """DESIGN.md contract 3's ``evidence`` object (plus ``state`` and ``current``)."""
        return {
            "last_error_code": self.code,
            "age_minutes": self.age_minutes,
            "connection": self.connection,
            "state": self.state,
            "current": self.current,
        }


def _event_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_evidence(
    line_ok: bool, facts: dict[str, Any] | None, now: datetime, current_minutes: int | None = None
) -> Evidence:
    """The evidence in a ``vpn_events`` result as of ``now`` (an aware datetime).

    Only the newest failure (20227) and successes (20225) of *that* connection after it
    count: a failure followed by a success is not current, whatever its code.
    """
    if not line_ok or not isinstance(facts, dict) or not isinstance(facts.get("events"), list):
        return Evidence(EvidenceState.UNKNOWN)
    limit = CURRENT_MINUTES if current_minutes is None else current_minutes
    events = []
    for order, event in enumerate(facts["events"]):  # the runner lists newest first
        if not isinstance(event, dict) or event.get("id") not in (EVENT_CONNECTED, EVENT_FAILED):
            continue
        moment = _event_time(event.get("time"))
        if moment is not None:
            events.append((moment, -order, event))
    events.sort(key=lambda e: (e[0], e[1]), reverse=True)  # newest first, ties keep log order

    def age(moment: datetime) -> int:
        return max(0, int((now - moment).total_seconds() // 60))

    failure = next((e for e in events if e[2]["id"] == EVENT_FAILED), None)
    if failure is None:
        success = next(iter(events), None)
        if success is None:
            return Evidence(EvidenceState.NONE)
        return Evidence(
            EvidenceState.WORKING,
            connection=success[2].get("connection"),
            success_age_minutes=age(success[0]),
        )
    moment, order, event = failure
    code = event.get("code") if isinstance(event.get("code"), int) else None
    name = event.get("connection")
    later = [
        e
        for e in events
        if e[2]["id"] == EVENT_CONNECTED
        and e[2].get("connection") == name
        and (e[0], e[1]) > (moment, order)
    ]
    found = {"code": code, "age_minutes": age(moment), "connection": name}
    if later:
        return Evidence(EvidenceState.RECOVERED, **found, success_age_minutes=age(later[0][0]))
    if age(moment) <= limit:
        return Evidence(EvidenceState.FAILING, **found)
    return Evidence(EvidenceState.UNCONFIRMED, **found)


class CauseStatus:
    """How a cause stands after a diagnosis."""

    PROVEN = "proven"  # failed, applies here, and fits the current error: its fix is offered
    SUSPECT = "suspect"  # failed, but no current error points to it: shown, never fixed
    RULED_OUT = "ruled_out"  # its check passed
    NOT_APPLICABLE = "not_applicable"  # its ``when`` does not hold in this situation
    NOT_PROVEN = "not_proven"  # inferred: another cause of the same code was found first
    CANNOT_TELL = "cannot_tell"  # its check (or one its ``when`` reads) could not find out


@dataclass(frozen=True)
class CauseInput:
    """One cause to judge: a check's verdict, or (``inferred``) a cause no check can read."""

    key: str
    codes: tuple[int, ...]
    verdict: str = ""  # pass | fail | error | unknown; "" for an inferred cause
    when: tuple[dict[str, Any], ...] = ()
    fix: str | None = None
    inferred: bool = False


@dataclass(frozen=True)
class Finding:
    key: str
    status: str
    fix: str | None
    inferred: bool = False


@dataclass(frozen=True)
class Assessment:
    """What a diagnosis found: evidence, each cause's status, the outcome, the fixes."""

    evidence: Evidence
    findings: tuple[Finding, ...]
    outcome: str  # "healthy" | "problems"

    @property
    def fixes(self) -> list[str]:
        """Fix keys of the proven causes, in article order, each once."""
        keys = [f.fix for f in self.findings if f.status == CauseStatus.PROVEN and f.fix]
        return list(dict.fromkeys(keys))

    def with_status(self, *statuses: str) -> list[Finding]:
        return [f for f in self.findings if f.status in statuses]


def _when_status(
    when: Iterable[dict[str, Any]], evidence: Evidence, facts: dict[str, dict], unknown: set[str]
) -> str:
    """ "holds", "fails" or "cannot_tell" for a cause's ``when`` conditions."""
    names = {"evidence": {"code": evidence.code if evidence.current else None}, **facts}
    for cond in when:
        source = cond["fact"].split(".", 1)[0]
        if source in unknown or (source == "evidence" and evidence.state == "unknown"):
            return CauseStatus.CANNOT_TELL
    return "fails" if failed_conditions(when, names) else "holds"


def assess(
    causes: Iterable[CauseInput], facts: dict[str, dict[str, Any]], evidence: Evidence
) -> Assessment:
    """Judge each cause against the evidence; pure (the caller reads the job's steps).

    ``facts`` maps a check key to its facts, for ``when`` conditions that read another check
    (``vpn-connection-l2tp.tunnel_type``); ``evidence.code`` is the current error's code
    (None unless the failure is current). An inferred cause (the PSK, which Windows cannot
    read back) is proven only by elimination: the current code is one of its codes and every
    check for that code passed or does not apply.
    """
    causes = list(causes)
    unknown = {c.key for c in causes if c.verdict in ("error", "unknown")}
    findings: list[Finding] = []
    for cause in (c for c in causes if not c.inferred):
        if cause.verdict == "pass":
            status = CauseStatus.RULED_OUT
        elif cause.verdict != "fail":
            status = CauseStatus.CANNOT_TELL
        else:
            applies = _when_status(cause.when, evidence, facts, unknown)
            fits = evidence.current and (not cause.codes or evidence.code in cause.codes)
            if applies == "fails":
                status = CauseStatus.NOT_APPLICABLE
            elif applies == CauseStatus.CANNOT_TELL:
                status = CauseStatus.CANNOT_TELL
            else:
                status = CauseStatus.PROVEN if fits else CauseStatus.SUSPECT
        findings.append(Finding(cause.key, status, cause.fix))
    checked = list(findings)
    for cause in (c for c in causes if c.inferred):
        if not (evidence.current and evidence.code in cause.codes):
            status = CauseStatus.NOT_APPLICABLE
        else:
            statuses = {
                f.status
                for f, c in zip(checked, (c for c in causes if not c.inferred), strict=True)
                if not c.codes or evidence.code in c.codes
            }
            if statuses & {CauseStatus.PROVEN, CauseStatus.SUSPECT}:
                status = CauseStatus.NOT_PROVEN
            elif CauseStatus.CANNOT_TELL in statuses:
                status = CauseStatus.CANNOT_TELL
            else:
                status = CauseStatus.PROVEN
        findings.append(Finding(cause.key, status, cause.fix, inferred=True))
    open_questions = {CauseStatus.SUSPECT, CauseStatus.CANNOT_TELL}
    troubled = evidence.state in (EvidenceState.FAILING, EvidenceState.UNKNOWN) or any(
        f.status in open_questions for f in findings
    )
    return Assessment(evidence, tuple(findings), "problems" if troubled else "healthy")


def attempt_since(
    baseline: dict[str, Any] | None, facts: dict[str, Any] | None, connection: str | None
) -> tuple[str, int | None] | None:
    """The employee's own attempt logged after ``baseline`` (both ``vpn_events`` facts).

    Returns ("connected", None), ("failed", code) for the newest 20225/20227 of
    ``connection`` (any connection when None) that was not yet in the baseline, else None.
    Only the host's own clock and log are compared, so a skewed portal clock cannot fake it.
    """

    def key(event: dict[str, Any]) -> tuple:
        return (event.get("id"), event.get("time"), event.get("connection"), event.get("code"))

    seen = {key(e) for e in (baseline or {}).get("events") or [] if isinstance(e, dict)}
    newest = max((e.get("time") or "" for e in (baseline or {}).get("events") or []), default="")
    for event in (facts or {}).get("events") or []:  # newest first, as the runner lists them
        if not isinstance(event, dict) or event.get("id") not in (EVENT_CONNECTED, EVENT_FAILED):
            continue
        if connection and event.get("connection") != connection:
            continue
        if key(event) in seen or (event.get("time") or "") < newest:
            continue
        if event["id"] == EVENT_CONNECTED:
            return "connected", None
        return "failed", event.get("code") if isinstance(event.get("code"), int) else None
    return None


# --- after a dropped connection: read back what a fix may have changed (issue #9) ----------

# Fix kind -> the fix's before/after keys, read from the facts of its read-back check.
_STATE_KEYS = {
    "set_service": ("status", "start_type"),
    "set_registry_value": ("exists", "value", "type"),
    "set_vpn_connection": (
        "tunnel_type",
        "authentication_method",
        "encryption_level",
        "l2tp_ipsec_auth",
    ),
    "set_vpn_ipsec": ("ipsec_custom_policy",),
}


def readback(kind: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The read-only check step that reads what fix step ``kind``/``args`` changes, or None
    (a PSK cannot be read back; a restart shows as the machine going away)."""
    if kind == "set_service":
        return "service", {"name": args["name"]}
    if kind == "set_registry_value":
        return "registry_value", {"path": args["path"], "name": args["name"]}
    if kind in ("set_vpn_connection", "set_vpn_ipsec"):
        return "vpn_connection", ({"name": args["name"]} if args.get("name") else {})
    return None


def state_of(kind: str, facts: dict[str, Any] | None) -> dict[str, Any] | None:
    """A read-back check's facts in the shape of fix ``kind``'s before/after."""
    if facts is None or kind not in _STATE_KEYS:
        return None
    return {k: facts.get(k) for k in _STATE_KEYS[kind]}


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
