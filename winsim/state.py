"""The state of one simulated Windows machine, and how a profile's YAML mapping becomes it.

Every part has defaults that describe a healthy Windows 11 laptop with an L2TP/IPsec (PSK)
connection to an hwdsl2-style server, so a profile only writes what differs. Names of
services, registry paths and values are case-insensitive, as on Windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from diagnostics.catalog import AUTH_METHODS, IPSEC_VALUES, REGISTRY_TYPES

POLICY_AGENT_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Services\PolicyAgent"
RASMAN_PARAMETERS_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Services\RasMan\Parameters"
ASSUME_UDP = "AssumeUDPEncapsulationContextOnSendRule"
PROHIBIT_IPSEC = "ProhibitIpSec"

# Values Windows reads only at boot (facts 3.1, 3.2): the dial model sees the value that was in
# the registry at the last simulated boot, not the current one.
BOOT_TIME_VALUES: tuple[tuple[str, str], ...] = (
    (POLICY_AGENT_KEY, ASSUME_UDP),
    (RASMAN_PARAMETERS_KEY, PROHIBIT_IPSEC),
)

# name -> (display name, status, start type, trigger). trigger says which Manual service comes up
# without being started explicitly: "dial" = started on demand by a VPN dial (IKEEXT, RasMan;
# facts rows 7-8), "boot" = trigger-started during boot (PolicyAgent is Manual (Trigger Start)
# and normally running on Windows 10/11; a modelling decision so a reboot restores it, as the
# seed article's "PC再起動でもOK" says).
DEFAULT_SERVICES: dict[str, tuple[str, str, str, str | None]] = {
    "BFE": ("Base Filtering Engine", "Running", "Automatic", None),
    "IKEEXT": ("IKE and AuthIP IPsec Keying Modules", "Running", "Manual", "dial"),
    "PolicyAgent": ("IPsec Policy Agent", "Running", "Manual", "boot"),
    "RasMan": ("Remote Access Connection Manager", "Running", "Manual", "dial"),
    "SstpSvc": ("Secure Socket Tunneling Protocol Service", "Stopped", "Manual", None),
    "Dnscache": ("DNS Client", "Running", "Automatic", None),
    "mpssvc": ("Windows Defender Firewall", "Running", "Automatic", None),
    "WinRM": ("Windows Remote Management (WS-Management)", "Running", "Automatic", None),
}
SERVICE_STATUSES = ("Running", "Stopped", "Paused", "StartPending", "StopPending")

# Windows 10/11 L2TP main-mode offers without a custom policy, in order (facts row 3, from
# libreswan logs of Windows 10 clients).
WINDOWS_DEFAULT_IKE = (
    {"encryption": "AES256", "integrity": "SHA1", "dh_group": "ECP384"},
    {"encryption": "AES128", "integrity": "SHA1", "dh_group": "ECP256"},
    {"encryption": "AES256", "integrity": "SHA1", "dh_group": "Group14"},
)
# Quick-mode (ESP) offers without a custom policy: not in the stored sources; a modelling
# decision (AES-CBC with HMAC-SHA1, which every report of a working Windows client shows).
WINDOWS_DEFAULT_ESP = (
    {"cipher": "AES256", "auth": "SHA196", "pfs": "None"},
    {"cipher": "AES128", "auth": "SHA196", "pfs": "None"},
)
# hwdsl2's server defaults (facts section 8), in Windows' vocabulary.
SERVER_DEFAULT_IKE = (
    {"encryption": "AES256", "integrity": "SHA256", "dh_group": "Group14"},
    {"encryption": "AES128", "integrity": "SHA256", "dh_group": "Group14"},
    {"encryption": "AES256", "integrity": "SHA1", "dh_group": "Group14"},
    {"encryption": "AES128", "integrity": "SHA1", "dh_group": "Group14"},
)
SERVER_DEFAULT_ESP = (
    {"cipher": "GCMAES128", "auth": "GCMAES128"},
    {"cipher": "AES128", "auth": "SHA196"},
    {"cipher": "AES256", "auth": "SHA196"},
    {"cipher": "AES128", "auth": "SHA256128"},
    {"cipher": "AES256", "auth": "SHA256128"},
)


class ProfileError(ValueError):
    """A profile does not describe a host winsim can simulate."""


LANGUAGE_MODES = ("FullLanguage", "ConstrainedLanguage")
FIREWALL_PROFILES = ("Domain", "Private", "Public")


@dataclass
class Account:
    """What the portal's WinRM account may do on the host (issue #10); default: an admin.

    A non-admin in Remote Management Users logs on over the network: the default service
    DACLs give it no query right and the Application log's ACL no read right (review D-1, D-2),
    and it cannot open other users' profiles (so their per-user phone books, D-3).
    """

    admin: bool = True
    event_log_readers: bool = False
    service_query: bool = False

    def can_query_services(self) -> bool:
        return self.admin or self.service_query

    def can_read_application_log(self) -> bool:
        return self.admin or self.event_log_readers

    def can_read_other_profiles(self) -> bool:
        return self.admin


@dataclass
class FirewallProfile:
    """One Windows Firewall profile (Get-NetFirewallProfile)."""

    name: str
    enabled: bool = True
    default_outbound_action: str = "Allow"  # Windows' default; "Block" on hardened PCs


@dataclass
class Service:
    name: str
    display_name: str
    status: str = "Running"
    start_type: str = "Manual"
    trigger: str | None = None  # "dial" | "boot" | None (see DEFAULT_SERVICES)

    def running(self) -> bool:
        return self.status == "Running"

    def startable(self, by: str) -> bool:
        """True when the service runs, or a trigger of kind ``by`` ("dial") would start it."""
        if self.running():
            return True
        return self.start_type != "Disabled" and self.trigger == by


@dataclass
class RegValue:
    name: str
    type: str
    value: Any


@dataclass
class RegKey:
    path: str
    values: dict[str, RegValue] = field(default_factory=dict)  # lower-case name -> value


@dataclass
class VpnConnection:
    name: str
    server_address: str
    tunnel_type: str = "L2tp"
    authentication_method: list[str] = field(default_factory=lambda: ["MSChapv2"])
    encryption_level: str = "Required"
    l2tp_ipsec_auth: str | None = "Psk"
    psk: str | None = None
    ipsec_custom_policy: dict[str, str] | None = None
    all_user_connection: bool = True
    # A per-user connection (made in Settings) lives in this user's %AppData% phone book; the
    # portal's account never sees it with Get-VpnConnection (review D-3).
    owner: str | None = None
    username: str | None = None  # the saved credentials (RememberCredential)
    password: str | None = None


@dataclass
class FirewallRule:
    name: str
    display_name: str
    direction: str = "Outbound"
    action: str = "Block"
    protocol: str = "UDP"
    local_port: list[str] = field(default_factory=lambda: ["Any"])
    remote_port: list[str] = field(default_factory=lambda: ["Any"])
    enabled: bool = True
    policy_store: str = "PersistentStore"  # or "GroupPolicy"; ActiveStore shows both
    profile: list[str] = field(default_factory=lambda: ["Any"])  # Any or Domain/Private/Public
    program: str = "Any"  # an application filter: a rule for one program never blocks IKEEXT

    def covers(self, port: int) -> bool:
        """True if this rule's port filter matches ``port`` on both ends (IKE uses the same
        port on both, so runner.ps1 asks both to match), whichever way the rule points."""
        return port_matches(self.remote_port, port) and port_matches(self.local_port, port)


@dataclass
class Network:
    client_nat: bool = False
    server_nat: bool = False
    dns: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> addresses
    server_udp_reachable: list[int] = field(default_factory=lambda: [500, 4500, 1701])
    icmp: bool = True
    rtt_ms: int = 18
    internet: bool = True  # resolvable names other than the VPN server answer on TCP 80/443
    tcp_open: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class VpnServer:
    address: str = "vpn.example.co.jp"
    ip: str = "203.0.113.10"
    psk: str = "Kaiketsu2024Psk"
    tunnel_types: list[str] = field(default_factory=lambda: ["L2tp"])
    ike_proposals: list[dict[str, str]] = field(default_factory=lambda: list(SERVER_DEFAULT_IKE))
    esp_proposals: list[dict[str, str]] = field(default_factory=lambda: list(SERVER_DEFAULT_ESP))
    pfs_groups: list[str] | None = None  # None: any PFS group (or none) is accepted
    auth_methods: list[str] = field(default_factory=lambda: ["MSChapv2", "Chap"])
    users: dict[str, str] = field(default_factory=lambda: {"yamada": "Yamada-2024!"})


@dataclass
class Event:
    id: int
    time: datetime
    connection: str
    code: int | None
    message: str
    seq: int = 0  # tie-breaker: events written in the same second keep their order


# --- parsing helpers -------------------------------------------------------------------------


def registry_path(path: str) -> str:
    """``HKEY_LOCAL_MACHINE\\X``, ``HKLM\\X`` or ``HKLM:\\X`` -> ``HKLM:\\X`` (PowerShell form)."""
    p = path.strip().replace("/", "\\")
    for long, short in (("HKEY_LOCAL_MACHINE", "HKLM"), ("HKEY_CURRENT_USER", "HKCU")):
        if p.upper().startswith(long + "\\"):
            p = short + ":" + p[len(long) :]
    m = re.match(r"^(HKLM|HKCU):?\\", p, re.IGNORECASE)
    if not m:
        raise ProfileError(f"registry path {path!r} must start with HKLM or HKCU")
    return m.group(1).upper() + ":\\" + p[m.end() :].rstrip("\\")


def native_registry_path(path: str) -> str:
    """``HKLM:\\X`` -> ``HKEY_LOCAL_MACHINE\\X``, as PowerShell's error messages print it."""
    hive, _, rest = path.partition(":\\")
    return {"HKLM": "HKEY_LOCAL_MACHINE", "HKCU": "HKEY_CURRENT_USER"}[hive] + "\\" + rest


def coerce_registry_value(type_: str, value: Any) -> Any:
    """Check ``value`` fits registry ``type_`` and return it as Windows stores it."""
    if type_ not in REGISTRY_TYPES:
        raise ProfileError(f"registry type {type_!r} is not one of {', '.join(REGISTRY_TYPES)}")
    if type_ in ("DWord", "QWord"):
        bits = 32 if type_ == "DWord" else 64
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"Cannot convert value {value!r} to type {type_}.")
        if value < 0:  # Windows stores negatives as their two's complement
            value += 1 << bits
        if not 0 <= value < (1 << bits):
            raise ProfileError(f"Value {value} is out of range for {type_}.")
        return value
    if type_ == "MultiString":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProfileError(f"Cannot convert value {value!r} to type MultiString.")
        return list(value)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ProfileError(f"Cannot convert value {value!r} to type {type_}.")
    return str(value)


def port_matches(ports: list[str], port: int) -> bool:
    """Windows port filter semantics: "Any", single ports and "low-high" ranges."""
    for p in ports:
        text = str(p).strip()
        if text.lower() == "any":
            return True
        low, _, high = text.partition("-")
        if low.isdigit() and int(low) <= port <= int(high or low):
            return True
    return False


def _ports(value: Any) -> list[str]:
    if value is None:
        return ["Any"]
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items]


def _pick(data: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    unknown = set(data) - allowed
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return data


def _choice(value: str, choices: tuple[str, ...] | list[str], where: str) -> str:
    if value not in choices:
        raise ProfileError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def parse_services(data: dict[str, Any] | None) -> dict[str, Service]:
    """The default services overlaid with the profile's ``services`` mapping."""
    services = {
        k.lower(): Service(k, d, s, t, trig) for k, (d, s, t, trig) in DEFAULT_SERVICES.items()
    }
    for name, spec in (data or {}).items():
        where = f"services.{name}"
        if spec is None:  # the service does not exist on this host
            services.pop(name.lower(), None)
            continue
        spec = _pick(dict(spec), {"display_name", "status", "start_type", "trigger"}, where)
        svc = services.get(name.lower()) or Service(name, spec.get("display_name", name))
        svc.display_name = spec.get("display_name", svc.display_name)
        svc.status = _choice(spec.get("status", svc.status), SERVICE_STATUSES, where)
        svc.start_type = _choice(
            spec.get("start_type", svc.start_type), ("Automatic", "Manual", "Disabled"), where
        )
        svc.trigger = spec.get("trigger", svc.trigger)
        services[name.lower()] = svc
    return services


def parse_registry(data: dict[str, Any] | None) -> dict[str, RegKey]:
    """Registry keys: ``{path: {name: value | {type, value} | null}}``.

    A bare int is a DWord, a string a String, a list a MultiString; null removes the value.
    The PolicyAgent and RasMan\\Parameters keys always exist, as on Windows.
    """
    keys: dict[str, RegKey] = {}
    for path in (POLICY_AGENT_KEY, RASMAN_PARAMETERS_KEY):
        keys[path.lower()] = RegKey(path)
    for raw_path, values in (data or {}).items():
        path = registry_path(raw_path)
        key = keys.setdefault(path.lower(), RegKey(path))
        for name, spec in (values or {}).items():
            if spec is None:
                key.values.pop(name.lower(), None)
                continue
            if isinstance(spec, dict):
                type_, value = spec.get("type", "DWord"), spec.get("value")
            elif isinstance(spec, list):
                type_, value = "MultiString", spec
            elif isinstance(spec, int) and not isinstance(spec, bool):
                type_, value = "DWord", spec
            else:
                type_, value = "String", spec
            key.values[name.lower()] = RegValue(name, type_, coerce_registry_value(type_, value))
    return keys


def parse_server(data: dict[str, Any] | None) -> VpnServer:
    """The VPN server the host dials."""
    data = _pick(dict(data or {}), set(VpnServer.__dataclass_fields__), "vpn_server")
    server = VpnServer(**data)
    for m in server.auth_methods:
        _choice(m, AUTH_METHODS, "vpn_server.auth_methods")
    server.users = {str(k): str(v) for k, v in server.users.items()}
    return server


def _custom_policy(data: dict[str, Any] | None, where: str) -> dict[str, str] | None:
    if data is None:
        return None
    data = _pick(dict(data), set(IPSEC_VALUES), where)
    missing = [k for k in IPSEC_VALUES if k not in data]
    if missing:
        raise ProfileError(f"{where}: missing {', '.join(missing)}")
    return {k: _choice(str(data[k]), IPSEC_VALUES[k], f"{where}.{k}") for k in IPSEC_VALUES}


def parse_connections(data: dict[str, Any] | None, server: VpnServer) -> list[VpnConnection]:
    """VPN connections ``{name: {...}}``; PSK and saved credentials default to the server's."""
    allowed = set(VpnConnection.__dataclass_fields__) - {"name"}
    user, password = next(iter(server.users.items()), (None, None))
    conns = []
    for name, spec in (data or {}).items():
        if spec is None:
            continue
        where = f"vpn_connections.{name}"
        spec = _pick(dict(spec), allowed, where)
        conn = VpnConnection(
            name=str(name),
            server_address=str(spec.pop("server_address", server.address)),
            psk=spec.pop("psk", server.psk),
            username=spec.pop("username", user),
            password=spec.pop("password", password),
            ipsec_custom_policy=_custom_policy(spec.pop("ipsec_custom_policy", None), where),
            **spec,
        )
        conn.authentication_method = [
            _choice(m, AUTH_METHODS, where) for m in conn.authentication_method
        ]
        if not conn.all_user_connection and conn.owner is None:
            conn.owner = conn.username or "user"  # Settings saves it in its maker's profile
        if conn.l2tp_ipsec_auth not in ("Psk", "Certificate", None):
            raise ProfileError(f"{where}: l2tp_ipsec_auth must be Psk, Certificate or null")
        conns.append(conn)
    return conns


def parse_firewall(data: dict[str, Any] | None) -> list[FirewallRule]:
    """Firewall rules ``{name: {direction, action, protocol, local_port, remote_port, ...}}``."""
    allowed = set(FirewallRule.__dataclass_fields__) - {"name"}
    rules = []
    for name, spec in (data or {}).items():
        if spec is None:
            continue
        spec = _pick(dict(spec), allowed, f"firewall_rules.{name}")
        rule = FirewallRule(name=str(name), display_name=str(spec.pop("display_name", name)))
        for k, v in spec.items():
            setattr(rule, k, _ports(v) if k in ("local_port", "remote_port") else v)
        rule.profile = [
            _choice(str(p), ("Any", *FIREWALL_PROFILES), f"firewall_rules.{name}.profile")
            for p in (rule.profile if isinstance(rule.profile, list) else [rule.profile])
        ]
        rules.append(rule)
    return rules


def parse_account(data: dict[str, Any] | None) -> Account:
    """``account: {admin, event_log_readers, service_query}``; absent: an administrator."""
    data = _pick(dict(data or {}), set(Account.__dataclass_fields__), "account")
    if "admin" not in data and data:
        data["admin"] = False  # naming any right describes a least-privilege account
    return Account(**{k: bool(v) for k, v in data.items()})


def parse_firewall_profiles(data: dict[str, Any] | None) -> dict[str, FirewallProfile]:
    """``firewall_profiles: {Public: {enabled, default_outbound_action}}`` over the defaults."""
    profiles = {n: FirewallProfile(n) for n in FIREWALL_PROFILES}
    for name, spec in (data or {}).items():
        where = f"firewall_profiles.{name}"
        _choice(str(name), FIREWALL_PROFILES, where)
        spec = _pick(dict(spec or {}), {"enabled", "default_outbound_action"}, where)
        prof = profiles[str(name)]
        prof.enabled = bool(spec.get("enabled", prof.enabled))
        prof.default_outbound_action = _choice(
            spec.get("default_outbound_action", prof.default_outbound_action),
            ("Allow", "Block"),
            where,
        )
    return profiles


def parse_network(data: dict[str, Any] | None, server: VpnServer) -> Network:
    """Network facts; DNS answers the server's name with its IP unless the profile says not."""
    data = _pick(dict(data or {}), set(Network.__dataclass_fields__), "network")
    dns = {server.address.lower(): [server.ip]}
    for name, addrs in (data.pop("dns", None) or {}).items():
        dns[str(name).lower()] = [] if addrs is None else [str(a) for a in addrs]
    tcp = {
        str(h).lower(): [int(p) for p in ps] for h, ps in (data.pop("tcp_open", None) or {}).items()
    }
    return Network(dns=dns, tcp_open=tcp, **data)
