"""What Windows answers the portal's account: the cmdlets' results, the misleading ones included.

On a real machine a denial often looks like emptiness (``../shared/facts/windows-runner-review.md``):
Windows PowerShell 5.1's Get-Service reports "no such service" when it may not query one (D-1),
a ``-FilterHashtable`` event query on an unreadable log finds "no events" (D-2), the portal's
account sees only all-user VPN connections (D-3), Resolve-DnsName reverse-resolves an IP address
(D-5), IPsecCustomPolicy may carry numbers (D-8). These functions give exactly those answers for
the host's ``account``; the step handlers in ``winsim.steps`` mirror runner.ps1's logic on top of
them, so a test fails when the runner takes such an answer at face value.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from diagnostics.catalog import IPSEC_VALUES
from winsim.hosts import Host
from winsim.state import Event, Service, VpnConnection

# HKLM\SYSTEM\CurrentControlSet\Services\<name>\Start (readable by Users): 0 Boot, 1 System,
# 2 Automatic, 3 Manual, 4 Disabled.
START_VALUES = {"Automatic": 2, "Manual": 3, "Disabled": 4}
UNAUTHORIZED = "Attempted to perform an unauthorized operation."


class Denied(Exception):
    """Windows refused the account outright (an error, not an empty answer)."""


def get_service(host: Host, name: str) -> Service | None:
    """``Get-Service -Name X -ErrorAction SilentlyContinue``: None for a missing service and,
    as 5.1's AddIfValidService does, also for one the account may not query."""
    if not host.account.can_query_services():
        return None
    return host.service(name)


def service_start_value(host: Host, name: str) -> int | None:
    """The service key's ``Start`` value, or None when the key does not exist."""
    svc = host.service(name)
    return None if svc is None else START_VALUES[svc.start_type]


def events_by_hashtable(host: Host, hours: int, limit: int) -> list[Event]:
    """``Get-WinEvent -FilterHashtable``: TolerateQueryErrors turns a denied log into no events."""
    if not host.account.can_read_application_log():
        return []
    return host.recent_events(hours, limit)


def events_by_xpath(host: Host, hours: int, limit: int) -> list[Event]:
    """``Get-WinEvent -LogName Application -FilterXPath``: a denied log is an error."""
    if not host.account.can_read_application_log():
        raise Denied(UNAUTHORIZED)
    return host.recent_events(hours, limit)


def vpn_connections(host: Host, *, all_users: bool) -> list[VpnConnection]:
    """``Get-VpnConnection [-AllUserConnection]``. Without the switch it lists the *portal
    account's* phone book, which under WINRS_NOPROFILE is empty: never the employee's."""
    if all_users:
        return [c for c in host.connections if c.all_user_connection]
    return []


def per_user_phonebooks(host: Host) -> dict[str, list[str]]:
    """Entry names in ``C:\\Users\\*\\AppData\\Roaming\\Microsoft\\Network\\Connections\\Pbk\\
    rasphone.pbk`` per user; other users' profiles are readable only by administrators."""
    if not host.account.can_read_other_profiles():
        raise Denied("Access to the path 'C:\\Users' is denied.")
    books: dict[str, list[str]] = {}
    for conn in host.connections:
        if not conn.all_user_connection:
            books.setdefault(conn.owner or "user", []).append(conn.name)
    return books


def ipsec_policy(host: Host, conn: VpnConnection) -> dict[str, Any] | None:
    """``$conn.IPsecCustomPolicy``: names, or on a host that reports them so the uint32s."""
    if not conn.ipsec_custom_policy:
        return None
    if host.ipsec_policy_as_numbers:
        return {k: IPSEC_VALUES[k].index(v) for k, v in conn.ipsec_custom_policy.items()}
    return dict(conn.ipsec_custom_policy)


def resolve_dns_name(host: Host, name: str) -> list[str]:
    """IPAddress records of ``Resolve-DnsName -Name X``: an IP address is reverse-looked-up
    (PTR records only), so it yields none."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return []
    except ValueError:
        return list(host.network.dns.get(name.lower().rstrip("."), []))
