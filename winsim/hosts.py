"""Simulated hosts: what each machine is (from a YAML profile), its faults and its reboots.

The protocol half (server, auth, shell) reads the connection fields of ``Host`` and calls
``is_down()``; the step handlers (``winsim.steps``) and the dial model (``winsim.dial``) read and
change the rest. Every change happens under ``host.lock``.

A reboot is evaluated lazily from the clock (no thread per host, so 500 hosts cost nothing while
idle): ``tick()`` moves a host through scheduled -> down -> booted whenever anyone looks at it.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from winsim import messages
from winsim.state import (
    BOOT_TIME_VALUES,
    FIREWALL_PROFILES,
    LANGUAGE_MODES,
    Account,
    Event,
    FirewallProfile,
    FirewallRule,
    Network,
    ProfileError,
    RegKey,
    RegValue,
    Service,
    VpnConnection,
    VpnServer,
    parse_account,
    parse_connections,
    parse_firewall,
    parse_firewall_profiles,
    parse_network,
    parse_registry,
    parse_server,
    parse_services,
)

LOCALES = ("ja-JP", "en-US")
MAX_EVENTS = 500
SCHEMES = ("http", "https")


@dataclass
class Faults:
    refuse_connections: bool = False  # nothing listens: connect() gets ECONNREFUSED
    never_answer: bool = False  # accepts and reads requests, never replies
    drop_in_receive: bool = False  # closes the socket in the middle of a Receive that has output
    slow_step_ms: int = 0  # extra latency per step (applied by run_plan)
    malformed_output: bool = False  # one garbage stdout line among the step lines (by run_plan)
    exit_code: int | None = None  # the runner command exits with this code instead of 0
    flood_bytes: int = 0  # after the first step, this much junk on stdout (a chatty module)
    drop_after_lines: int = 0  # one shot: a command's first N lines arrive, then a drop
    # [Console]::OutputEncoding cannot be switched (no console, review D-7): stdout goes out in
    # this ANSI code page (932 on ja-JP) whatever the shell asked for.
    console_codepage: int | None = None


@dataclass
class Host:
    """One simulated Windows machine."""

    name: str
    computer_name: str
    port: int = 0
    scheme: str = "http"
    username: str = "kaiketsu"
    password: str = "Kaiketsu-Demo-1!"
    domain: str = ""
    locale: str = "ja-JP"
    step_latency_ms: int = 0
    faults: Faults = field(default_factory=Faults)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    caption: str = "Microsoft Windows 11 Pro"
    version: str = "10.0.22631"
    build: int = 22631
    reboot_seconds: float = 3.0
    # From the end of the countdown to the machine going down: Windows closes programs and
    # stops services first, so the runner's last lines (and WinRM's answer) still get out.
    shutdown_seconds: float = 2.0
    services: dict[str, Service] = field(default_factory=dict)
    registry: dict[str, RegKey] = field(default_factory=dict)
    connections: list[VpnConnection] = field(default_factory=list)
    firewall: list[FirewallRule] = field(default_factory=list)
    network: Network = field(default_factory=Network)
    server: VpnServer = field(default_factory=VpnServer)
    events: list[Event] = field(default_factory=list, repr=False)
    # What the portal's account may do, and how Windows answers it (issue #10, review D-1..D-10).
    account: Account = field(default_factory=Account)
    language_mode: str = "FullLanguage"
    ipsec_policy_as_numbers: bool = False  # Get-VpnConnection gives uint32s, not names (D-8)
    module_logging: bool = False  # Module Logging on for VpnClient / '*' (event 4103, D-10)
    module_log: list[str] = field(default_factory=list, repr=False)  # what 4103 recorded
    network_category: str = "Private"  # the active firewall profile
    firewall_profiles: dict[str, FirewallProfile] = field(default_factory=dict)
    boot_count: int = 0
    has_agent: bool = False
    agent_offline: bool = False
    winrm_reachable: bool = True
    _boot_values: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _reboot_at: float | None = field(default=None, repr=False)
    _reboot_delay: int | None = field(default=None, repr=False)
    _event_seq: int = field(default=0, repr=False)

    # --- reboots ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance a scheduled reboot: once the down time has passed, boot and come back up."""
        with self.lock:
            if self._reboot_at is None:
                return
            if time.monotonic() >= self._reboot_at + self.reboot_seconds:
                self.boot()

    def is_down(self) -> bool:
        """True while a simulated reboot is in progress (the server must refuse or reset)."""
        with self.lock:
            self.tick()
            return self._reboot_at is not None and time.monotonic() >= self._reboot_at

    def pending_reboot(self) -> tuple[bool, int | None]:
        """(a restart is scheduled, the delay it was scheduled with), as runner.ps1 reports it."""
        with self.lock:
            self.tick()
            if self._reboot_at is None:
                return False, None
            return True, self._reboot_delay

    def schedule_reboot(self, delay_seconds: int) -> None:
        """Restart after ``delay_seconds``, like ``shutdown /r /t N``."""
        with self.lock:
            self._reboot_at = time.monotonic() + delay_seconds + self.shutdown_seconds
            self._reboot_delay = delay_seconds

    def cancel_reboot(self) -> None:
        """Abort a scheduled restart, like ``shutdown /a``."""
        with self.lock:
            self._reboot_at = None
            self._reboot_delay = None

    def boot(self) -> None:
        """What a boot does: services per start type, boot-time registry values take effect."""
        with self.lock:
            for svc in self.services.values():
                starts = svc.start_type == "Automatic" or (
                    svc.start_type == "Manual" and svc.trigger == "boot"
                )
                svc.status = "Running" if starts else "Stopped"
            self.snapshot_boot_values()
            self._reboot_at = None
            self._reboot_delay = None
            self.boot_count += 1

    def snapshot_boot_values(self) -> None:
        """Record the boot-time registry values as the ones in effect."""
        with self.lock:
            self._boot_values = {
                (p.lower(), n.lower()): getattr(self.registry_value(p, n), "value", None)
                for p, n in BOOT_TIME_VALUES
            }

    def boot_value(self, path: str, name: str, default: Any = 0) -> Any:
        """The value a boot-time setting had at the last boot (absent -> ``default``)."""
        with self.lock:
            value = self._boot_values.get((path.lower(), name.lower()))
            return default if value is None else value

    # --- state lookups ------------------------------------------------------------------------

    def registry_value(self, path: str, name: str) -> RegValue | None:
        """The current registry value, or None when the key or the value is absent."""
        key = self.registry.get(path.lower())
        return key.values.get(name.lower()) if key else None

    def service(self, name: str) -> Service | None:
        return self.services.get(name.lower())

    def connection(self, name: str | None = None) -> VpnConnection | None:
        """The named connection, else the first L2TP one, else the first (all-user before
        per-user): the one the *employee* dials (dial model, seeded events). What the portal's
        account sees and picks is ``winsim.steps.choose_connection``: it never guesses."""
        books = sorted(self.connections, key=lambda c: not c.all_user_connection)
        if name:
            return next((c for c in books if c.name.lower() == name.lower()), None)
        l2tp = [c for c in books if c.tunnel_type == "L2tp"]
        return (l2tp or books or [None])[0]

    # --- event log ----------------------------------------------------------------------------

    def write_event(
        self,
        event_id: int,
        connection: VpnConnection,
        *,
        code: int | None = None,
        coid: str | None = None,
        at: datetime | None = None,
        settings: str = "",
    ) -> Event:
        """Append a RasClient event with its message in the host's language."""
        with self.lock:
            self._event_seq += 1
            message = messages.event_text(
                event_id,
                self.locale,
                coid=coid or "{" + str(uuid.uuid4()).upper() + "}",
                user="SYSTEM",  # real RasClient events often name SYSTEM (facts section 5)
                name=connection.name,
                scope=connection.all_user_connection,
                settings=settings,
                code=code,
            )
            event = Event(
                id=event_id,
                time=at or now(),
                connection=connection.name,
                code=code,
                message=message,
                seq=self._event_seq,
            )
            self.events.append(event)
            # The Application log wraps; a long benchmark must not grow memory without bound.
            del self.events[:-MAX_EVENTS]
            return event

    def recent_events(self, hours: int, limit: int) -> list[Event]:
        """Events of the last ``hours``, newest first, at most ``limit``."""
        since = now() - timedelta(hours=hours)
        with self.lock:
            found = [e for e in self.events if e.time >= since]
        found.sort(key=lambda e: (e.time, e.seq), reverse=True)
        return found[:limit]


def now() -> datetime:
    """Local time with its offset, second precision, as Get-WinEvent's TimeCreated prints."""
    return datetime.now().astimezone().replace(microsecond=0)


def reboot_now(host: Host) -> None:
    """Reboot at once, with no down time (for tests)."""
    host.boot()


# --- profiles ----------------------------------------------------------------------------------

_HOST_FIELDS = {
    "computer_name", "port", "scheme", "username", "password", "domain", "locale",
    "step_latency_ms", "reboot_seconds", "shutdown_seconds", "os", "services", "registry", "vpn_connections",
    "firewall_rules", "network", "vpn_server", "events", "faults", "template",
    "account", "language_mode", "ipsec_policy_as_numbers", "module_logging", "network_category",
    "firewall_profiles", "agent",
}  # fmt: skip
# ``agent:`` (issue #14): the PC runs the Kaiketsu agent. ``at_home``: WinRM cannot reach it
# (its VPN is down; only the /sim/ controls answer); ``offline``: it is switched off, its agent
# never calls (it enrolled long ago).
_AGENT_FIELDS = {"at_home", "offline"}

# A host whose profile names no VPN connection gets this one.
DEFAULT_CONNECTIONS: dict[str, Any] = {"Corp VPN": {}}


def merge(base: Any, over: Any) -> Any:
    """Deep-merge ``over`` onto ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _computer_name(name: str) -> str:
    # NetBIOS names: at most 15 characters, upper case on Windows' own displays.
    return re.sub(r"[^A-Z0-9-]", "-", name.upper())[:15]


def build_host(name: str, spec: dict[str, Any]) -> Host:
    """One Host from its merged profile mapping (built-in defaults already applied)."""
    unknown = set(spec) - _HOST_FIELDS
    if unknown:
        raise ProfileError(f"host {name}: unknown field(s) {', '.join(sorted(unknown))}")
    locale = spec.get("locale", "ja-JP")
    scheme = spec.get("scheme", "http")
    if locale not in LOCALES:
        raise ProfileError(f"host {name}: locale must be one of {', '.join(LOCALES)}")
    if scheme not in SCHEMES:
        raise ProfileError(f"host {name}: scheme must be http or https")
    os_spec = spec.get("os") or {}
    server = parse_server(spec.get("vpn_server"))
    fault_spec = dict(spec.get("faults") or {})
    unknown_faults = set(fault_spec) - set(Faults.__dataclass_fields__)
    if unknown_faults:
        raise ProfileError(f"host {name}: unknown fault(s) {', '.join(sorted(unknown_faults))}")
    faults = Faults(**fault_spec)
    language_mode = str(spec.get("language_mode", "FullLanguage"))
    if language_mode not in LANGUAGE_MODES:
        raise ProfileError(f"host {name}: language_mode must be one of {', '.join(LANGUAGE_MODES)}")
    agent_spec = spec.get("agent")
    if agent_spec is not None and (
        not isinstance(agent_spec, dict) or set(agent_spec) - _AGENT_FIELDS
    ):
        raise ProfileError(f"host {name}: agent takes only {', '.join(sorted(_AGENT_FIELDS))}")
    category = str(spec.get("network_category", "Private"))
    if category not in FIREWALL_PROFILES:
        raise ProfileError(f"host {name}: network_category must be Domain, Private or Public")
    host = Host(
        name=name,
        computer_name=str(spec.get("computer_name") or _computer_name(name)),
        port=int(spec.get("port", 0)),
        scheme=scheme,
        username=str(spec.get("username", "kaiketsu")),
        password=str(spec.get("password", "Kaiketsu-Demo-1!")),
        domain=str(spec.get("domain", "")),
        locale=locale,
        step_latency_ms=int(spec.get("step_latency_ms", 0)),
        reboot_seconds=float(spec.get("reboot_seconds", 3.0)),
        shutdown_seconds=float(spec.get("shutdown_seconds", 2.0)),
        faults=faults,
        caption=str(os_spec.get("caption", "Microsoft Windows 11 Pro")),
        version=str(os_spec.get("version", "10.0.22631")),
        build=int(os_spec.get("build", 22631)),
        services=parse_services(spec.get("services")),
        registry=parse_registry(spec.get("registry")),
        connections=parse_connections(spec.get("vpn_connections", DEFAULT_CONNECTIONS), server),
        firewall=parse_firewall(spec.get("firewall_rules")),
        network=parse_network(spec.get("network"), server),
        server=server,
        account=parse_account(spec.get("account")),
        language_mode=language_mode,
        ipsec_policy_as_numbers=bool(spec.get("ipsec_policy_as_numbers", False)),
        module_logging=bool(spec.get("module_logging", False)),
        network_category=category,
        firewall_profiles=parse_firewall_profiles(spec.get("firewall_profiles")),
        has_agent=agent_spec is not None,
        agent_offline=bool((agent_spec or {}).get("offline", False)),
        winrm_reachable=not (agent_spec or {}).get("at_home", False),
    )
    # The profile describes the machine as it is now, booted with its current registry.
    host.snapshot_boot_values()
    _seed_events(host, spec.get("events") or [])
    return host


def _seed_events(host: Host, entries: list[dict[str, Any]]) -> None:
    """Events from the profile: ``{dial: true|NAME, minutes_ago}`` dials with the causal model
    at that time (so the log holds exactly the 20221/20227 a user's attempt wrote); with
    ``code: N`` (or ``code: null`` for a success) it records an attempt made when the state
    was different: 20221 then 20227 with that code (or 20225); ``{id, code, connection,
    minutes_ago}`` writes one event."""
    from winsim.dial import dial, record_attempt  # dial imports hosts' types: import late

    for entry in sorted(entries, key=lambda e: -float(e.get("minutes_ago", 0))):
        at = now() - timedelta(minutes=float(entry.get("minutes_ago", 0)))
        if "dial" in entry:
            target = None if entry["dial"] is True else str(entry["dial"])
            if "code" in entry:
                conn = host.connection(target)
                if conn is None:
                    raise ProfileError(f"host {host.name}: event for an unknown connection")
                record_attempt(host, conn, entry["code"], at=at)
            else:
                dial(host, target, at=at)
            continue
        conn = host.connection(entry.get("connection"))
        if conn is None:
            raise ProfileError(f"host {host.name}: event for an unknown connection")
        host.write_event(int(entry["id"]), conn, code=entry.get("code"), at=at)


def hosts_from_profile(data: dict[str, Any]) -> list[Host]:
    """Every host of a parsed profile: ``defaults`` < ``templates[host.template]`` < host, plus
    ``generate: [{count, template, prefix, port}]`` (``port`` 0 = free ports, else the first of
    consecutive ones)."""
    if not isinstance(data, dict):
        raise ProfileError("a profile is a mapping with 'hosts' (and optional 'defaults')")
    defaults = data.get("defaults") or {}
    templates = data.get("templates") or {}
    specs: list[tuple[str, dict[str, Any]]] = []

    def resolve(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        template = spec.get("template")
        if template is not None and template not in templates:
            raise ProfileError(f"host {name}: unknown template {template!r}")
        merged = merge(defaults, templates.get(template) or {}) if template else defaults
        merged = merge(merged, spec)
        merged.pop("template", None)
        return merged

    for name, spec in (data.get("hosts") or {}).items():
        specs.append((str(name), resolve(str(name), spec or {})))
    generate = data.get("generate") or []
    for gen in [generate] if isinstance(generate, dict) else generate:
        count, template = int(gen["count"]), gen.get("template")
        prefix, first_port = (
            str(gen.get("prefix", f"{template or 'host'}-")),
            int(gen.get("port", 0)),
        )
        for i in range(count):
            spec: dict[str, Any] = {"port": first_port + i if first_port else 0}
            if template:
                spec["template"] = template
            specs.append((f"{prefix}{i + 1:04d}", resolve(f"{prefix}{i + 1:04d}", spec)))

    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ProfileError("host names must be unique")
    ports = [s.get("port", 0) for _, s in specs if s.get("port", 0)]
    if len(set(ports)) != len(ports):
        raise ProfileError("fixed ports must be unique")
    return [build_host(name, spec) for name, spec in specs]


def load_profile(path: str | Path) -> list[Host]:
    """Read a YAML profile and build its hosts."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return hosts_from_profile(data)
