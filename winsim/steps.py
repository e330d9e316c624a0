"""The catalog's step kinds, implemented natively against a simulated host's state.

``HANDLERS[kind](host, args)`` returns a check's facts, or a fix's ``{"before", "after",
"changed"}``; it raises ``StepError`` where the runner would report ``ok: false``. ``run_plan``
turns a plan into the runner's stdout lines (docs/protocol.md), one per step as it finishes.
Fact keys are exactly ``diagnostics.catalog.KINDS[kind].facts``.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

from diagnostics.catalog import (
    AUTH_METHODS,
    CANNOT_REASONS,
    IPSEC_NUMBERS,
    IPSEC_VALUES,
    KINDS,
    RIGHTS,
    StepArgsError,
    validate_args,
)
from winsim import dial as dial_model
from winsim import windows
from winsim.hosts import Host
from winsim.state import (
    ProfileError,
    RegKey,
    RegValue,
    VpnConnection,
    coerce_registry_value,
    native_registry_path,
    registry_path,
)

PLAN_VERSION = 1
DEFAULT_REBOOT_DELAY = 300  # runner.ps1's default: five minutes' warning


class StepError(Exception):
    """A step could not be carried out; the message is what the runner would print."""


class CannotTell(StepError):
    """The step could not find out (runner.ps1's ``New-CannotTell``): the line gets
    ``"cannot": {"reason", "need"}`` and, when some facts were learnt, those facts."""

    def __init__(
        self, message: str, reason: str, need: str | None = None, facts: dict | None = None
    ) -> None:
        super().__init__(message)
        if reason not in CANNOT_REASONS or (need is not None and need not in RIGHTS):
            raise ValueError(f"not a catalog reason/right: {reason!r}/{need!r}")
        self.reason, self.need, self.facts = reason, need, facts


def _require_admin(host: Host, what: str) -> None:
    # Changing services, HKLM, all-user connections or restarting needs a full admin token.
    if not host.account.admin:
        raise CannotTell(
            f"{what}: Access is denied (the portal's account is not an administrator).",
            "access_denied",
            "administrators",
        )


Handler = Callable[[Host, dict[str, Any]], dict[str, Any]]


# --- checks ------------------------------------------------------------------------------------


def os_info(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "computer_name": host.computer_name,
        "caption": host.caption,
        "version": host.version,
        "build": host.build,
        "locale": host.locale,
    }


def _service_facts(host: Host, name: str) -> dict[str, Any]:
    svc = host.service(name)
    if svc is None:
        return {
            "exists": False,
            "name": None,
            "display_name": None,
            "status": None,
            "start_type": None,
        }
    return {
        "exists": True,
        "name": svc.name,
        "display_name": svc.display_name,
        "status": svc.status,
        "start_type": svc.start_type,
    }


START_NAMES = {0: "Boot", 1: "System", 2: "Automatic", 3: "Manual", 4: "Disabled"}


def service(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    name = args["name"]
    if windows.get_service(host, name) is not None:
        return _service_facts(host, name)
    # Get-Service says "no such service" also when it may not query it (D-1): the service key
    # (readable by Users) tells the two apart and gives the start type.
    start = windows.service_start_value(host, name)
    if start is None:
        return _service_facts(host, name)
    raise CannotTell(
        f"The service {name} exists but the portal's account may not query its status "
        "(it needs Administrators or a query right on the service).",
        "access_denied",
        "service_query",
        facts={"exists": True, "name": host.service(name).name, "start_type": START_NAMES[start]},
    )


def _registry_facts(host: Host, path: str, name: str) -> dict[str, Any]:
    value = host.registry_value(registry_path(path), name)
    if value is None:
        return {"exists": False, "value": None, "type": None}
    shown = list(value.value) if isinstance(value.value, list) else value.value
    return {"exists": True, "value": shown, "type": value.type}


def registry_value(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    return _registry_facts(host, args["path"], args["name"])


def _ipsec_facts(host: Host, conn: VpnConnection) -> dict[str, Any] | None:
    policy = windows.ipsec_policy(host, conn)
    if policy is None:
        return None
    names = {}
    for key, value in policy.items():
        if isinstance(value, int):  # a uint32 from WMI (D-8): runner.ps1 maps it by the table
            if value not in IPSEC_NUMBERS[key]:
                raise CannotTell(
                    f"IPsecCustomPolicy.{key} is {value}, which the runner cannot map to a name.",
                    "unrecognised",
                )
            value = IPSEC_NUMBERS[key][value]
        names[key] = value
    return names


def _connection_facts(host: Host, conn: VpnConnection | None) -> dict[str, Any]:
    keys = KINDS["vpn_connection"].facts
    if conn is None:
        return {k: False if k == "exists" else None for k in keys}
    return {
        "exists": True,
        "name": conn.name,
        "server_address": conn.server_address,
        "tunnel_type": conn.tunnel_type,
        "authentication_method": list(conn.authentication_method),
        "encryption_level": conn.encryption_level,
        "l2tp_ipsec_auth": conn.l2tp_ipsec_auth if conn.tunnel_type == "L2tp" else None,
        "all_user_connection": conn.all_user_connection,
        "ipsec_custom_policy": _ipsec_facts(host, conn),
    }


def choose_connection(host: Host, name: str | None) -> VpnConnection | None:
    """runner.ps1's Select-VpnConnection: by name, else the only one the account sees; never a
    guess (D-3). None when there truly is none; CannotTell when there may be one it cannot see
    (per-user) or when several are candidates."""
    visible = windows.vpn_connections(host, all_users=True) + windows.vpn_connections(
        host, all_users=False
    )
    if name:
        found = next((c for c in visible if c.name.lower() == name.lower()), None)
        if found is not None:
            return found
    elif len(visible) == 1:
        return visible[0]
    elif visible:
        names = ", ".join(c.name for c in visible)
        raise CannotTell(
            f"{len(visible)} VPN connections ({names}) and the step names none: "
            "the runner does not guess which one is meant.",
            "ambiguous",
        )
    try:
        books = windows.per_user_phonebooks(host)
    except windows.Denied:
        raise CannotTell(
            "The portal's account sees only all-user VPN connections; a per-user one (made in "
            "Settings) may exist, and listing those needs Administrators.",
            "access_denied",
            "administrators",
        ) from None
    for user, entries in books.items():
        for entry in entries:
            if not name or entry.lower() == name.lower():
                raise CannotTell(
                    f"The VPN connection {entry} is a per-user connection of {user}: the "
                    "portal's account cannot read or change it (make it an all-user connection).",
                    "not_visible",
                    "all_user_connection",
                )
    return None


def vpn_connection(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    return _connection_facts(host, choose_connection(host, args.get("name")))


# Programs whose rules can hold IKE/L2TP traffic: IKEEXT runs in svchost, L2TP in the kernel.
SYSTEM_PROGRAMS = ("any", "system", r"%systemroot%\system32\svchost.exe")


def _rule_applies(rule: Any, profile: str, protocol: str, direction: str | None) -> bool:
    return (
        rule.enabled
        and (not direction or rule.direction == direction)
        and rule.protocol in (protocol, "Any")
        and ("Any" in rule.profile or profile in rule.profile)
        and rule.program.lower() in SYSTEM_PROGRAMS
    )


def firewall_rules(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    protocol, ports, direction = args["protocol"], args["ports"], args.get("direction")
    active = host.network_category
    prof = host.firewall_profiles[active]
    blocking, blocked = [], set()
    rules = host.firewall if prof.enabled else []  # a disabled profile enforces no rule
    for rule in rules:
        if rule.action != "Block" or not _rule_applies(rule, active, protocol, direction):
            continue
        covered = {p for p in ports if rule.covers(p)}
        if not covered:
            continue
        blocked |= covered
        blocking.append(
            {
                "name": rule.name,
                "display_name": rule.display_name,
                "direction": rule.direction,
                "protocol": rule.protocol,
                "local_port": list(rule.local_port),
                "remote_port": list(rule.remote_port),
                "profile": list(rule.profile),
                "program": rule.program,
            }
        )
    default = prof.default_outbound_action if prof.enabled else "Allow"
    if default == "Block" and direction in (None, "Outbound"):
        # With a default-block outbound policy a port is blocked unless an Allow rule covers it.
        allowed = {
            p
            for r in rules
            if r.action == "Allow" and _rule_applies(r, active, protocol, "Outbound")
            for p in ports
            if r.covers(p)
        }
        missing = [p for p in ports if p not in allowed]
        if missing:
            blocked |= set(missing)
            blocking.append(
                {
                    "name": "DefaultOutboundAction",
                    "display_name": f"{active} profile: outbound blocked by default",
                    "direction": "Outbound",
                    "protocol": protocol,
                    "local_port": ["Any"],
                    "remote_port": [str(p) for p in missing],
                    "profile": [active],
                    "program": "Any",
                }
            )
    return {
        "blocking": blocking,
        "blocked_ports": sorted(blocked),
        "count": len(blocking),
        "active_profiles": [active],
        "default_outbound": default,
    }


def _existing_connection(host: Host, name: str | None) -> VpnConnection:
    conn = choose_connection(host, name)
    if conn is None:  # runner.ps1's words
        if name:
            raise StepError(f"The VPN connection {name} cannot be found.")
        raise StepError("No VPN connection is configured on this machine.")
    return conn


def _target(host: Host, args: dict[str, Any]) -> str:
    if args.get("host"):
        return args["host"]
    return _existing_connection(host, args.get("vpn_connection")).server_address


DNS_NAME_ERROR = "DNS_ERROR_RCODE_NAME_ERROR,Microsoft.DnsClient.Commands.ResolveDnsName"


def dns_resolve(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    name = _target(host, args)
    try:  # an IP address needs no lookup; Resolve-DnsName would reverse-resolve it (D-5)
        literal = str(ipaddress.ip_address(name.strip("[]")))
        return {"name": name, "resolved": True, "addresses": [literal], "error": None}
    except ValueError:
        pass
    addresses = windows.resolve_dns_name(host, name)
    # The error id, not the localised message: the same on Japanese and English Windows.
    return {
        "name": name,
        "resolved": bool(addresses),
        "addresses": addresses,
        "error": None if addresses else DNS_NAME_ERROR,
    }


def tcp_connect(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    name, port = _target(host, args), args["port"]
    addresses = dial_model.resolve(host, name)
    net = host.network
    open_ports = set(net.tcp_open.get(name.lower(), []))
    for address in addresses:
        open_ports |= set(net.tcp_open.get(address, []))
    is_server = host.server.ip in addresses
    reachable = bool(addresses) and (
        port in open_ports or (net.internet and not is_server and port in (80, 443))
    )
    return {"host": name, "port": port, "reachable": reachable}


def ping(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    name = _target(host, args)
    reachable = bool(dial_model.resolve(host, name)) and host.network.icmp
    return {
        "host": name,
        "reachable": reachable,
        "rtt_ms": host.network.rtt_ms if reachable else None,
    }


def vpn_events(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    try:  # the XPath query, whose denial is an error, not "no events" (D-2)
        events = windows.events_by_xpath(host, args.get("hours", 24), args.get("max", 20))
    except windows.Denied as exc:
        raise CannotTell(
            f"Get-WinEvent : {exc} (the Application log; the portal's account needs "
            "Event Log Readers)",
            "access_denied",
            "event_log_readers",
        ) from None
    # The newest dial outcome decides: a later successful connection (20225) clears an error.
    outcome = next((e for e in events if e.id in (20225, 20227)), None)
    last_error = outcome.code if outcome is not None and outcome.id == 20227 else None
    return {
        "events": [
            {
                "id": e.id,
                "time": e.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "connection": e.connection,
                "code": e.code,
                "message": e.message,
            }
            for e in events
        ],
        "count": len(events),
        "last_error_code": last_error,
    }


def vpn_dial(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    # The runner runs as the portal's WinRM account, never as the employee (issue #9).
    conn = _existing_connection(host, args.get("name"))
    try:
        return dial_model.dial(host, conn.name, as_employee=False)
    except LookupError as exc:
        raise StepError(str(exc)) from None


# --- fixes -------------------------------------------------------------------------------------


def _fix(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"before": before, "after": after, "changed": before != after}


def set_service(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    _require_admin(host, f"Service '{args['name']}'")
    svc = host.service(args["name"])
    if svc is None:
        raise StepError(f"Cannot find any service with service name '{args['name']}'.")
    before = {"status": svc.status, "start_type": svc.start_type}
    if "start_type" in args:
        svc.start_type = args["start_type"]
    action = args.get("action")
    if action in ("stop", "restart"):
        svc.status = "Stopped"
    if action in ("start", "restart"):
        if svc.start_type == "Disabled":
            raise StepError(
                f"Service '{svc.display_name} ({svc.name})' cannot be started due to the "
                f"following error: Cannot start service {svc.name} on computer '.'."
            )
        svc.status = "Running"
    return _fix(before, {"status": svc.status, "start_type": svc.start_type})


def set_registry_value(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    path, name = registry_path(args["path"]), args["name"]
    if path.upper().startswith("HKLM:"):
        _require_admin(host, "Requested registry access is not allowed")
    before = _registry_facts(host, path, name)
    key = host.registry.get(path.lower())
    if args.get("absent"):
        if key is not None:
            key.values.pop(name.lower(), None)
        return _fix(before, _registry_facts(host, path, name))
    try:
        value = coerce_registry_value(args["type"], args["value"])
    except ProfileError as exc:
        raise StepError(
            f"New-ItemProperty : {exc} (at {native_registry_path(path)}\\{name})"
        ) from None
    if key is None:  # New-Item -Force creates the missing key
        key = host.registry[path.lower()] = RegKey(path)
    old = key.values.get(name.lower())
    key.values[name.lower()] = RegValue(old.name if old else name, args["type"], value)
    return _fix(before, _registry_facts(host, path, name))


def _connection_settings(conn: VpnConnection) -> dict[str, Any]:
    return {
        "tunnel_type": conn.tunnel_type,
        "authentication_method": list(conn.authentication_method),
        "encryption_level": conn.encryption_level,
        "l2tp_ipsec_auth": conn.l2tp_ipsec_auth,
    }


def set_vpn_connection(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    conn = _existing_connection(host, args.get("name"))
    _require_admin(host, "Set-VpnConnection")
    before = _connection_settings(conn)
    if "tunnel_type" in args:
        conn.tunnel_type = args["tunnel_type"]
        if conn.tunnel_type == "L2tp" and conn.l2tp_ipsec_auth is None:
            conn.l2tp_ipsec_auth = "Certificate"  # no -L2tpPsk given: a certificate is used
    if "authentication_method" in args:
        # Windows reports the methods in its own order, whatever order they were given in.
        chosen = set(args["authentication_method"])
        conn.authentication_method = [m for m in AUTH_METHODS if m in chosen]
    if "encryption_level" in args:
        conn.encryption_level = args["encryption_level"]
    return _fix(before, _connection_settings(conn))


def set_vpn_ipsec(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    conn = _existing_connection(host, args.get("name"))
    _require_admin(host, "Set-VpnConnectionIPsecConfiguration")
    before = {"ipsec_custom_policy": conn.ipsec_custom_policy}
    if args.get("revert_to_default"):
        conn.ipsec_custom_policy = None
    else:
        conn.ipsec_custom_policy = {k: args[k] for k in IPSEC_VALUES}
        conn.encryption_level = "Custom"  # what scripts observe afterwards (facts 7.1)
    after = {"ipsec_custom_policy": conn.ipsec_custom_policy}
    return _fix(
        {"ipsec_custom_policy": dict(before["ipsec_custom_policy"] or {}) or None},
        {"ipsec_custom_policy": dict(after["ipsec_custom_policy"] or {}) or None},
    )


def set_vpn_psk(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    conn = _existing_connection(host, args.get("name"))
    if host.module_logging:
        # Set-VpnConnection is a VpnClient function: Module Logging (event 4103) would record
        # -L2tpPsk in clear, so the runner refuses before calling it (D-10).
        raise CannotTell(
            "PowerShell Module Logging records VpnClient's parameters on this machine: setting "
            "the key would write it to the event log. Set it by hand or exclude VpnClient.",
            "module_logging",
            "no_module_logging",
        )
    _require_admin(host, "Set-VpnConnection")
    before = {"l2tp_ipsec_auth": conn.l2tp_ipsec_auth}
    conn.psk = args["psk"]
    conn.l2tp_ipsec_auth = "Psk"
    # The PSK cannot be read back on Windows, so nobody can tell it was already right.
    return {"before": before, "after": {"l2tp_ipsec_auth": "Psk"}, "changed": True}


def schedule_reboot(host: Host, args: dict[str, Any]) -> dict[str, Any]:
    _require_admin(host, "shutdown.exe")
    pending, remaining = host.pending_reboot()
    before = {"pending_reboot": pending, "delay_seconds": remaining}
    if args.get("cancel"):
        host.cancel_reboot()
        return _fix(before, {"pending_reboot": False, "delay_seconds": None})
    if pending:  # shutdown.exe refuses a second schedule; the first one stands, unchanged
        raise StepError("shutdown.exe /r failed with code 1190")
    delay = args.get("delay_seconds", DEFAULT_REBOOT_DELAY)
    host.schedule_reboot(delay)
    return _fix(before, {"pending_reboot": True, "delay_seconds": delay})


HANDLERS: dict[str, Handler] = {
    "os_info": os_info,
    "service": service,
    "registry_value": registry_value,
    "vpn_connection": vpn_connection,
    "firewall_rules": firewall_rules,
    "dns_resolve": dns_resolve,
    "tcp_connect": tcp_connect,
    "ping": ping,
    "vpn_events": vpn_events,
    "vpn_dial": vpn_dial,
    "set_service": set_service,
    "set_registry_value": set_registry_value,
    "set_vpn_connection": set_vpn_connection,
    "set_vpn_ipsec": set_vpn_ipsec,
    "set_vpn_psk": set_vpn_psk,
    "schedule_reboot": schedule_reboot,
}


# --- plans -------------------------------------------------------------------------------------


def _line(obj: dict[str, Any]) -> str:
    # ASCII only, as runner.ps1's Write-ResultLine escapes every non-ASCII character (D-7).
    return json.dumps(obj, ensure_ascii=True)


def parse_plan(plan_json: str) -> list[dict[str, Any]]:
    """The plan's steps, or StepError with the runner's ``fatal`` message."""
    try:
        plan = json.loads(plan_json)
    except (ValueError, TypeError) as exc:
        raise StepError(f"plan: not valid JSON ({exc})") from None
    if not isinstance(plan, dict):
        raise StepError("plan: expected a JSON object")
    if plan.get("version") != PLAN_VERSION:
        raise StepError(f"plan: version {plan.get('version')} is not supported by this runner")
    steps = plan.get("steps")
    if not isinstance(steps, list):
        raise StepError("plan: 'steps' must be a list")
    seen: set[str] = set()
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            raise StepError("plan: every step needs a string 'id'")
        if step["id"] in seen:
            raise StepError(f"plan: step id {step['id']!r} is used twice")
        seen.add(step["id"])
    return steps


def run_step(host: Host, step: dict[str, Any]) -> dict[str, Any]:
    """One step's result line (without ``ms``); never raises."""
    sid, kind = step["id"], step.get("kind")
    try:
        raw = step.get("args")
        if raw is not None and not isinstance(raw, dict):
            raise StepArgsError(f"{kind}: args must be a JSON object")
        args = validate_args(str(kind), raw)
        with host.lock:
            host.tick()
            result = HANDLERS[kind](host, args)
    except CannotTell as exc:
        line = {"step": sid, "ok": False, "error": str(exc)}
        line["cannot"] = {"reason": exc.reason, "need": exc.need}
        if exc.facts:
            line["facts"] = exc.facts
        return line
    except (StepError, StepArgsError) as exc:
        return {"step": sid, "ok": False, "error": str(exc)}
    except Exception as exc:  # a bug in a handler must not kill the plan, as on Windows
        return {"step": sid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if KINDS[kind].fix:
        return {"step": sid, "ok": True, **result}
    return {"step": sid, "ok": True, "facts": result}


def run_plan(host: Host, plan_json: str) -> Iterator[str]:
    """Yields stdout lines (JSON text, no newline) as each step finishes, sleeping
    host.step_latency_ms (+ faults.slow_step_ms) before each, then '{"end": true, "steps": N}'.
    A bad plan yields one '{"fatal": "..."}' line. Never raises.

    If the host goes down (a simulated reboot starts) the lines stop, as the runner dies with
    the machine; the server sees ``host.is_down()`` and drops the connection.
    """
    try:
        steps = parse_plan(plan_json)
    except StepError as exc:
        yield _line({"fatal": str(exc)})
        return
    except Exception as exc:  # never raise into the protocol half
        yield _line({"fatal": f"plan: {type(exc).__name__}: {exc}"})
        return
    delay = max(0, host.step_latency_ms + host.faults.slow_step_ms) / 1000
    for n, step in enumerate(steps):
        started = time.monotonic()
        if delay:
            time.sleep(delay)
        if host.is_down():
            return
        line = run_step(host, step)
        line["ms"] = round((time.monotonic() - started) * 1000)
        yield _line(line)
        if n == 0 and host.faults.malformed_output:
            # What a runner that forgot ConvertTo-Json would print: PowerShell's object notation.
            yield f"@{{step={step['id']}; ok=True; facts=System.Collections.Hashtable}}"
        if n == 0 and host.faults.flood_bytes:
            # What a module that writes to the host would print: lines that are not JSON.
            filler = "WARNING: " + "x" * 1014
            for _ in range(max(1, host.faults.flood_bytes // 1024)):
                yield filler
    yield _line({"end": True, "steps": len(steps)})
