"""The typed step catalog: the only things that ever run on a host.

A step is ``{"id": "s1", "kind": "service", "args": {"name": "PolicyAgent"}}``. Its kind comes
from this catalog, its args are JSON checked against the kind's schema here, and its result
is one JSON line from the host (see docs/protocol.md). ``runner.ps1`` and winsim implement
exactly these kinds; tests/test_contract.py fails when the three drift apart.

This module is pure Python (no Django) so winsim, the plan builder and a future pull agent
can share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Names that reach PowerShell as data still get a shape check, so a typo in the KB fails in
# the admin, not on an employee's machine.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")
REGISTRY_PATH = re.compile(r"^(HKLM|HKCU):\\[^\x00-\x1f]{1,400}$")
HOST_NAME = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")

START_TYPES = ("Automatic", "Manual", "Disabled")
SERVICE_ACTIONS = ("start", "stop", "restart")
REGISTRY_TYPES = ("DWord", "QWord", "String", "ExpandString", "MultiString")
TUNNEL_TYPES = ("Pptp", "L2tp", "Sstp", "Ikev2", "Automatic")
AUTH_METHODS = ("Pap", "Chap", "MSChapv2", "Eap", "MachineCertificate")
ENCRYPTION_LEVELS = ("NoEncryption", "Optional", "Required", "Maximum", "Custom")
# Set-VpnConnectionIPsecConfiguration's accepted values (facts/windows-vpn.md, 7.3).
IPSEC_VALUES = {
    "authentication_transform_constants": (
        "MD596",
        "SHA196",
        "SHA256128",
        "GCMAES128",
        "GCMAES192",
        "GCMAES256",
        "None",
    ),
    "cipher_transform_constants": (
        "DES",
        "DES3",
        "AES128",
        "AES192",
        "AES256",
        "GCMAES128",
        "GCMAES192",
        "GCMAES256",
        "None",
    ),
    "encryption_method": ("DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES256"),
    "integrity_check_method": ("MD5", "SHA1", "SHA256", "SHA384"),
    "dh_group": ("None", "Group1", "Group2", "Group14", "ECP256", "ECP384", "Group24"),
    "pfs_group": ("None", "PFS1", "PFS2", "PFS2048", "ECP256", "ECP384", "PFSMM", "PFS24"),
}
# The WMI class VpnConnectionIPsecConfiguration types all six as uint32, so a host may report
# numbers instead of names (review D-8). Unverified assumption: the number is the position in
# the cmdlet's documented list above, which for the DH, PFS, integrity and encryption lists is
# also the order of Windows' IKEEXT_*/IPSEC_* enumerations. runner.ps1 keeps the same table
# (tests/test_contract.py); a number outside it makes the step "cannot tell", never a guess.
IPSEC_NUMBERS = {key: dict(enumerate(values)) for key, values in IPSEC_VALUES.items()}

# --- "cannot tell" ----------------------------------------------------------------------------
# A check that could not find out returns {"ok": false, "error": ..., "cannot": {"reason": R,
# "need": N}} instead of a false fact (docs/protocol.md, issue #10). The portal shows the
# reason and, where a right is missing, the command that grants it.
CANNOT_REASONS = (
    "access_denied",  # the portal's account lacks a right (``need`` says which)
    "not_visible",  # the object exists where the account cannot see it (a per-user connection)
    "ambiguous",  # several candidates and no name: the runner never guesses
    "cmdlet_missing",  # the module or cmdlet is not on this Windows edition
    "language_mode",  # PowerShell is in ConstrainedLanguage mode (AppLocker/WDAC)
    "module_logging",  # the step would write a secret to the host's PowerShell log
    "unrecognised",  # Windows answered with a value the runner cannot map (e.g. a number)
    "timeout",  # the host did not finish the step in time
)


def gettext_noop(text: str) -> str:
    """Marks a string for translation (makemessages finds it by this name) without importing
    Django here: the admin translates it where it shows it."""
    return text


@dataclass(frozen=True)
class Right:
    """A right the portal's account may lack, and how an administrator grants it."""

    label: str
    grant: str  # PowerShell for an elevated prompt on the machine; {account} is the account


# Well-known SIDs, not names: group names are translated on Japanese Windows.
RIGHTS: dict[str, Right] = {
    "administrators": Right(
        "Administrators (local group)",
        "Add-LocalGroupMember -SID 'S-1-5-32-544' -Member '{account}'",
    ),
    "event_log_readers": Right(
        "Event Log Readers (local group)",
        "Add-LocalGroupMember -SID 'S-1-5-32-573' -Member '{account}'",
    ),
    # Network logons get no query right on most inbox services (review D-1); this adds
    # query-config, query-status, enumerate-dependents, interrogate and read-control for the
    # account on the services the articles check (docs/windows-setup.md; unverified per DACL).
    "service_query": Right(
        "Query rights on the IPsec and RAS services",
        "$sid = (New-Object Security.Principal.NTAccount '{account}').Translate("
        "[Security.Principal.SecurityIdentifier]).Value; "
        "foreach ($s in 'PolicyAgent','IKEEXT','RasMan','BFE','SstpSvc') { "
        "$sd = (sc.exe sdshow $s | Where-Object { $_ }) -join ''; "
        "sc.exe sdset $s ($sd -replace '^(D:[A-Z]*)', ('$1(A;;CCLCSWLORC;;;' + $sid + ')')) }",
    ),
    "all_user_connection": Right(
        "The VPN connection in the all-user phone book",
        "Add-VpnConnection -AllUserConnection -Name '<name>' -ServerAddress '<server>' "
        "-TunnelType L2tp -L2tpPsk '<key>' -AuthenticationMethod MSChapv2 -Force",
    ),
    "full_language": Right(
        "FullLanguage mode for the runner (AppLocker/WDAC)",
        "(allow powershell.exe -EncodedCommand for this account in the AppLocker/WDAC policy, "
        "or sign and allow the runner script: docs/windows-setup.md)",
    ),
    "no_module_logging": Right(
        "PowerShell Module Logging not recording VpnClient",
        "(remove '*' and 'VpnClient' from the ModuleNames of the Group Policy "
        "'Turn on Module Logging': docs/windows-setup.md)",
    ),
}


class StepArgsError(ValueError):
    """A step's kind or args do not fit the catalog."""


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # "str", "int", "bool", "list[str]", "list[int]", "any"
    required: bool = False
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    max_len: int = 512
    min: int | None = None
    max: int | None = None
    secret: bool = False  # never shown, logged or stored outside the encrypted field


@dataclass(frozen=True)
class StepKind:
    name: str
    fix: bool
    summary: str
    args: tuple[Arg, ...] = ()
    facts: tuple[str, ...] = field(
        default=()
    )  # keys of "facts" (checks) or "before"/"after" (fixes)

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)


_VPN_NAME = Arg("name", "str", max_len=256)
_TARGET = (
    Arg("host", "str", pattern=HOST_NAME),
    Arg("vpn_connection", "str", max_len=256),
)
_IPSEC_ARGS = tuple(Arg(k, "str", choices=v) for k, v in IPSEC_VALUES.items())

KINDS: dict[str, StepKind] = {
    k.name: k
    for k in (
        # --- checks: read facts, change nothing -------------------------------------------
        StepKind(
            "os_info",
            False,
            gettext_noop("Computer name, Windows version and build, locale"),
            facts=("computer_name", "caption", "version", "build", "locale"),
        ),
        StepKind(
            "service",
            False,
            gettext_noop("A service's status and start type"),
            args=(Arg("name", "str", required=True, pattern=SERVICE_NAME),),
            facts=("exists", "name", "display_name", "status", "start_type"),
        ),
        StepKind(
            "registry_value",
            False,
            gettext_noop("One registry value (absent reads as exists=false, value=null)"),
            args=(
                Arg("path", "str", required=True, pattern=REGISTRY_PATH),
                Arg("name", "str", required=True, max_len=255),
            ),
            facts=("exists", "value", "type"),
        ),
        StepKind(
            "vpn_connection",
            False,
            gettext_noop(
                "A VPN connection's settings (by name, else the only one the account can see)"
            ),
            args=(_VPN_NAME,),
            facts=(
                "exists",
                "name",
                "server_address",
                "tunnel_type",
                "authentication_method",
                "encryption_level",
                "l2tp_ipsec_auth",
                "all_user_connection",
                "ipsec_custom_policy",
            ),
        ),
        StepKind(
            "firewall_rules",
            False,
            gettext_noop(
                "Enabled blocking firewall rules (active store, active profile) that cover the "
                "given ports, and the profile's default outbound action"
            ),
            args=(
                Arg("protocol", "str", required=True, choices=("TCP", "UDP")),
                Arg("ports", "list[int]", required=True, min=1, max=65535),
                Arg("direction", "str", choices=("Inbound", "Outbound")),
            ),
            facts=("blocking", "blocked_ports", "count", "active_profiles", "default_outbound"),
        ),
        StepKind(
            "dns_resolve",
            False,
            gettext_noop("Resolve a name (or the VPN connection's server address)"),
            args=_TARGET,
            facts=("name", "resolved", "addresses", "error"),
        ),
        StepKind(
            "tcp_connect",
            False,
            gettext_noop("Open a TCP connection to host:port"),
            args=(*_TARGET, Arg("port", "int", required=True, min=1, max=65535)),
            facts=("host", "port", "reachable"),
        ),
        StepKind(
            "ping",
            False,
            gettext_noop("ICMP echo to a host (or the VPN connection's server)"),
            args=_TARGET,
            facts=("host", "reachable", "rtt_ms"),
        ),
        StepKind(
            "vpn_events",
            False,
            gettext_noop("Recent RasClient events (Application log) with their codes"),
            args=(
                Arg("hours", "int", min=1, max=24 * 30),
                Arg("max", "int", min=1, max=200),
            ),
            facts=("events", "count", "last_error_code"),
        ),
        StepKind(
            "vpn_dial",
            False,
            gettext_noop("Dial the VPN connection with its saved credentials, then hang up"),
            args=(_VPN_NAME,),
            facts=("name", "connected", "error_code", "message"),
        ),
        # --- fixes: return before / after / changed -------------------------------------
        StepKind(
            "set_service",
            True,
            gettext_noop("Set a service's start type and/or start, stop or restart it"),
            args=(
                Arg("name", "str", required=True, pattern=SERVICE_NAME),
                Arg("start_type", "str", choices=START_TYPES),
                Arg("action", "str", choices=SERVICE_ACTIONS),
            ),
            facts=("status", "start_type"),
        ),
        StepKind(
            "set_registry_value",
            True,
            gettext_noop("Write one registry value, or remove it (absent=true)"),
            args=(
                Arg("path", "str", required=True, pattern=REGISTRY_PATH),
                Arg("name", "str", required=True, max_len=255),
                Arg("type", "str", choices=REGISTRY_TYPES),
                Arg("value", "any"),
                Arg("absent", "bool"),
            ),
            facts=("exists", "value", "type"),
        ),
        StepKind(
            "set_vpn_connection",
            True,
            gettext_noop("Change a VPN connection's tunnel, authentication, encryption"),
            args=(
                _VPN_NAME,
                Arg("tunnel_type", "str", choices=TUNNEL_TYPES),
                Arg("authentication_method", "list[str]", choices=AUTH_METHODS),
                Arg("encryption_level", "str", choices=ENCRYPTION_LEVELS),
            ),
            facts=("tunnel_type", "authentication_method", "encryption_level", "l2tp_ipsec_auth"),
        ),
        StepKind(
            "set_vpn_ipsec",
            True,
            gettext_noop(
                "Set the connection's custom IPsec policy (all six values) or revert to default"
            ),
            args=(_VPN_NAME, Arg("revert_to_default", "bool"), *_IPSEC_ARGS),
            facts=("ipsec_custom_policy",),
        ),
        StepKind(
            "set_vpn_psk",
            True,
            gettext_noop("Set the L2TP pre-shared key from the portal's secret store"),
            args=(_VPN_NAME, Arg("psk", "str", required=True, max_len=256, secret=True)),
            facts=("l2tp_ipsec_auth",),
        ),
        StepKind(
            "schedule_reboot",
            True,
            gettext_noop(
                "Restart the machine after a delay with Windows' warning and a message (or cancel)"
            ),
            args=(
                Arg("delay_seconds", "int", min=0, max=86400),
                Arg("message", "str", max_len=500),
                Arg("cancel", "bool"),
            ),
            facts=("pending_reboot", "delay_seconds"),
        ),
    )
}

CHECK_KINDS = tuple(k for k, v in KINDS.items() if not v.fix)
FIX_KINDS = tuple(k for k, v in KINDS.items() if v.fix)

# --- what a fix may change: a list in code, not free text in the KB (issue #16) --------------
# A fix runs with administrator rights on every machine that applies it, so a KB admin may
# only choose among these: the seed article's PolicyAgent/RasMan values and the services of
# the VPN. Growing the list is a code change with its review, never a KB edit.
FIX_SERVICES = ("PolicyAgent", "IKEEXT", "BFE", "RasMan", "SstpSvc")
FIX_REGISTRY_VALUES: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {
    # (path, value name): (type, the values a fix may write); removing it is always allowed.
    # 0/1/2 as KB926179 defines them (facts/windows-vpn.md).
    (
        "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
        "AssumeUDPEncapsulationContextOnSendRule",
    ): ("DWord", (0, 1, 2)),
    # 1 turns IPsec off for L2TP; the article only ever removes it (facts/windows-vpn.md).
    ("HKLM:\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters", "ProhibitIpSec"): (
        "DWord",
        (0, 1),
    ),
}


def _allowed_value(path: str, name: str) -> tuple[str, tuple[int, ...]] | None:
    """The allow-list entry for a registry value; paths and names compare as Windows does,
    without regard to case."""
    key = (path.lower(), name.lower())
    return next(
        (v for (p, n), v in FIX_REGISTRY_VALUES.items() if (p.lower(), n.lower()) == key), None
    )


def fix_target_problems(kind: str, args: dict[str, Any], values: bool = True) -> list[str]:
    """What a fix step would touch outside the allow-list ([] when it stays inside).

    ``values``: also hold the written value to the list (save time). A roll-back restores
    whatever the machine had, so the plan builder checks only the key (``values=False``).
    """
    if kind == "set_service":
        name = args.get("name")
        if isinstance(name, str) and name.lower() not in {s.lower() for s in FIX_SERVICES}:
            return [f"set_service may not change the service {name!r}: fixes may change only "
                    f"{', '.join(FIX_SERVICES)}"]  # fmt: skip
    if kind != "set_registry_value":
        return []
    path, name = args.get("path"), args.get("name")
    if not isinstance(path, str) or not isinstance(name, str):
        return []  # the schema says what is wrong with them
    entry = _allowed_value(path, name)
    if entry is None:
        listed = "; ".join(f"{p}\\{n}" for p, n in FIX_REGISTRY_VALUES)
        return [f"set_registry_value may not write {path}\\{name}: fixes may change only {listed}"]
    kind_of, allowed = entry
    if not values or args.get("absent"):
        return []
    value = args.get("value")
    whole = isinstance(value, int) and not isinstance(value, bool)  # true == 1 in Python
    if args.get("type") != kind_of or not whole or value not in allowed:
        shown = ", ".join(str(v) for v in allowed)
        return [f"set_registry_value may write {name} only as {kind_of} {shown}"]
    return []


def _check_value(kind: str, arg: Arg, value: Any) -> None:
    where = f"{kind}.{arg.name}"
    scalar = arg.type.removeprefix("list[").removesuffix("]")
    values = value if arg.type.startswith("list[") else [value]
    if arg.type.startswith("list[") and (not isinstance(value, list) or not value):
        raise StepArgsError(f"{where}: expected a non-empty list")
    for v in values:
        if scalar == "str":
            if not isinstance(v, str):
                raise StepArgsError(f"{where}: expected text, got {type(v).__name__}")
            if len(v) > arg.max_len:
                raise StepArgsError(f"{where}: longer than {arg.max_len} characters")
            if "\x00" in v:
                raise StepArgsError(f"{where}: contains a NUL character")
            if arg.pattern and not arg.pattern.match(v):
                raise StepArgsError(f"{where}: {v!r} is not a valid value")
        elif scalar == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise StepArgsError(f"{where}: expected a whole number")
            if arg.min is not None and v < arg.min or arg.max is not None and v > arg.max:
                raise StepArgsError(f"{where}: {v} is outside {arg.min}..{arg.max}")
        elif scalar == "bool" and not isinstance(v, bool):
            raise StepArgsError(f"{where}: expected true or false")
        if arg.choices and v not in arg.choices:
            raise StepArgsError(f"{where}: {v!r} is not one of {', '.join(arg.choices)}")


def validate_args(kind: str, args: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``args`` if they fit ``kind``'s schema, else raise StepArgsError."""
    spec = KINDS.get(kind)
    if spec is None:
        raise StepArgsError(f"unknown step kind {kind!r}")
    args = dict(args or {})
    for name in args:
        if spec.arg(name) is None:
            raise StepArgsError(f"{kind}: unknown argument {name!r}")
    for arg in spec.args:
        if arg.name not in args or args[arg.name] is None:
            if arg.required:
                raise StepArgsError(f"{kind}: argument {arg.name!r} is required")
            args.pop(arg.name, None)
            continue
        if arg.type != "any":
            _check_value(kind, arg, args[arg.name])
    absent = args.get("absent")
    if kind == "set_registry_value" and not absent and ("type" not in args or "value" not in args):
        raise StepArgsError("set_registry_value: give type and value, or absent: true")
    if kind == "set_vpn_ipsec" and not args.get("revert_to_default"):
        missing = [k for k in IPSEC_VALUES if k not in args]
        if missing:
            raise StepArgsError(
                f"set_vpn_ipsec: missing {', '.join(missing)} (or revert_to_default)"
            )
    return args


def secret_args(kind: str) -> tuple[str, ...]:
    """Names of the args of ``kind`` that must be masked wherever a plan is shown or stored."""
    spec = KINDS.get(kind)
    return tuple(a.name for a in spec.args if a.secret) if spec else ()


# --- expectations: the operators, and the one validator for checks and fixes ----------------
# A check's ``expect`` is a list of ``{"fact": path, "op": name[, "value": ...]}``; the portal
# evaluates it against the host's facts (plans.evaluate). Every operator is listed here once:
# the evaluator, the KB files' validator and the admin all read this table.


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value == [] or value == "" or value == {}


@dataclass(frozen=True)
class Operator:
    name: str
    holds: Callable[[Any, Any], bool]  # (the fact, the expected value) -> whether it holds
    value: str = ""  # what "value" must be: "" none at all, "any", "list", "number"


OPERATORS: dict[str, Operator] = {
    o.name: o
    for o in (
        Operator("true", lambda f, v: f is True),
        Operator("false", lambda f, v: f is False),
        Operator("empty", lambda f, v: _is_empty(f)),
        Operator("not_empty", lambda f, v: not _is_empty(f)),
        Operator("eq", lambda f, v: f == v, "any"),
        Operator("ne", lambda f, v: f != v, "any"),
        Operator("in", lambda f, v: f in (v or []), "list"),
        Operator("not_in", lambda f, v: f not in (v or []), "list"),
        Operator("lt", lambda f, v: _num(f) is not None and _num(f) < v, "number"),
        Operator("lte", lambda f, v: _num(f) is not None and _num(f) <= v, "number"),
        Operator("gt", lambda f, v: _num(f) is not None and _num(f) > v, "number"),
        Operator("gte", lambda f, v: _num(f) is not None and _num(f) >= v, "number"),
        Operator("contains", lambda f, v: isinstance(f, list) and v in f, "any"),
        Operator("not_contains", lambda f, v: not (isinstance(f, list) and v in f), "any"),
    )
}
EXPECT_KEYS = ("fact", "op", "value")
_SECRET_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _at(where: str, name: str) -> str:
    """A problem's path: ``checks[2].args`` in a KB file, ``args`` in the admin's check form."""
    return f"{where}.{name}" if where else name


def expect_problems(where: str, kind: Any, expect: Any) -> list[str]:
    """The problems of a check's ``expect`` (empty when valid): known operators with the
    value each needs, and facts that ``kind`` really reports, so a check that could never
    pass is refused wherever it is written (a KB file or the admin)."""
    if not isinstance(expect, list) or not expect:
        return [f"{where}: must be a non-empty list"]
    facts = KINDS[kind].facts if isinstance(kind, str) and kind in KINDS else ()
    problems = []
    for i, item in enumerate(expect):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a mapping")
            continue
        fact, name = item.get("fact"), item.get("op")
        if not isinstance(fact, str) or not fact:
            problems.append(f"{at}.fact: missing")
        elif facts and fact.split(".")[0] not in facts:
            problems.append(f"{at}.fact: {kind} has no fact {fact.split('.')[0]!r}")
        op = OPERATORS.get(name) if isinstance(name, str) else None
        if isinstance(name, bool):
            problems.append(
                f"{at}.op: write the operator as a quoted string ('{str(name).lower()}')"
            )
        elif op is None:
            problems.append(f"{at}.op: {name!r} is not one of {', '.join(OPERATORS)}")
        elif not op.value and "value" in item:
            problems.append(f"{at}: {op.name} takes no value")
        elif op.value and "value" not in item:
            problems.append(f"{at}: {op.name} needs a value")
        elif op.value == "list" and not isinstance(item["value"], list):
            problems.append(f"{at}.value: {op.name} needs a list")
        elif op.value == "number" and _num(item["value"]) is None:
            problems.append(f"{at}.value: {op.name} needs a number")
        problems += [f"{at}: unknown key {k!r}" for k in item if k not in EXPECT_KEYS]
    return problems


def _secret_problems(where: str, kind: str, args: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in args.items():
        if isinstance(value, dict) and "secret" in value:
            if set(value) != {"secret"} or not isinstance(value["secret"], str):
                problems.append(f"{where}.{name}: a secret is {{secret: NAME}} and nothing else")
            elif not _SECRET_NAME.match(value["secret"]):
                problems.append(f"{where}.{name}: secret name {value['secret']!r} is not a slug")
            if name not in secret_args(kind):
                problems.append(f"{where}.{name}: only secret arguments may use {{secret: ...}}")
    return problems


def _without_secrets(args: dict[str, Any]) -> dict[str, Any]:
    """Swap ``{secret: NAME}`` placeholders for a dummy literal so the schema can check shape.

    The plan builder resolves the placeholder from the secret store at send time; here only
    its own shape matters (``_secret_problems``).
    """
    return {
        name: "placeholder" if isinstance(value, dict) and set(value) == {"secret"} else value
        for name, value in args.items()
    }


def step_problems(where: str, step: Any, fix: bool) -> list[str]:
    """The problems of one typed step ``{kind, args}``: a catalog kind of the right family
    (check or fix) and args its schema accepts, ``{secret: NAME}`` only for secret args."""
    kinds, what = (FIX_KINDS, "fix") if fix else (CHECK_KINDS, "check")
    if not isinstance(step, dict):
        return [f"{where}: must be a mapping"]
    kind = step.get("kind")
    if kind not in kinds:
        return [f"{_at(where, 'kind')}: {kind!r} is not a {what} kind ({', '.join(kinds)})"]
    args = step.get("args") or {}
    if not isinstance(args, dict):
        return [f"{_at(where, 'args')}: must be a mapping"]
    problems = _secret_problems(_at(where, "args"), kind, args)
    try:
        validate_args(kind, _without_secrets(args))
    except StepArgsError as exc:
        problems.append(f"{_at(where, 'args')}: {exc}")
    else:
        problems += [f"{_at(where, 'args')}: {p}" for p in fix_target_problems(kind, args)]
    return problems


EVIDENCE_KINDS = ("vpn_events",)  # the kinds whose facts are evidence, not a cause
ROLES = ("cause", "evidence")


def role_of(check: dict[str, Any]) -> str:
    """A check's role: as written, else evidence for event-log kinds and cause otherwise."""
    role = check.get("role")
    if role in ROLES:
        return role
    return "evidence" if check.get("kind") in EVIDENCE_KINDS else "cause"


def check_problems(where: str, check: dict[str, Any]) -> list[str]:
    """The problems of a check's typed part: its step (kind, args) and its expectation.

    Evidence (the event log) is read, never failed, so it may go without an expectation.
    """
    problems = step_problems(where, check, fix=False)
    if role_of(check) == "evidence" and not check.get("expect"):
        return problems
    return problems + expect_problems(_at(where, "expect"), check.get("kind"), check.get("expect"))


def fix_steps_problems(where: str, steps: Any) -> list[str]:
    """The problems of a fix's steps: at least one, each a valid fix step."""
    if not isinstance(steps, list) or not steps:
        return [f"{where}: at least one step is required"]
    return [p for j, step in enumerate(steps) for p in step_problems(f"{where}[{j}]", step, True)]
