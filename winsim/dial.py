"""The causal dial model: a host's state -> what dialling its VPN connection gives.

``evaluate`` is the model (pure: reads the state, changes nothing); ``dial`` is what the
``vpn_dial`` step does with it: starts the services a dial starts on demand, writes the RasClient
events Windows writes and hangs up. The rows below, in order, are the table in winsim/README.md
("Causal dial model"); the first that applies decides the outcome. Windows checks the device
(IPsec) stage before PPP authentication (facts section 2, event 20222 note), so a wrong password
is only ever reported once IPsec has succeeded.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from winsim import messages
from winsim.state import (
    ASSUME_UDP,
    POLICY_AGENT_KEY,
    PROHIBIT_IPSEC,
    RASMAN_PARAMETERS_KEY,
    WINDOWS_DEFAULT_ESP,
    WINDOWS_DEFAULT_IKE,
    VpnConnection,
)

if TYPE_CHECKING:
    from winsim.hosts import Host

# Failures before PPP that an "Automatic" connection reports as 800 (facts row 13): it tried the
# tunnels it could and all failed.
_DEVICE_STAGE = frozenset({766, 788, 789, 791, 809})


@dataclass(frozen=True)
class Outcome:
    """The result of one dial: ``code`` None means connected. ``cause`` names the table row."""

    code: int | None
    cause: str

    @property
    def connected(self) -> bool:
        return self.code is None


def resolve(host: Host, name: str) -> list[str]:
    """What the host's DNS answers for ``name`` (an IP literal answers itself)."""
    try:
        return [str(ipaddress.ip_address(name.strip("[]")))]
    except ValueError:
        return list(host.network.dns.get(name.lower().rstrip("."), []))


def udp_blocked_locally(host: Host, port: int) -> bool:
    """An enabled outbound Block rule of the client's firewall (any store) covers UDP ``port``."""
    return any(
        r.enabled
        and r.action == "Block"
        and r.direction == "Outbound"
        and r.protocol in ("UDP", "Any")
        and r.covers(port)
        for r in host.firewall
    )


def udp_reachable(host: Host, port: int) -> bool:
    """UDP ``port`` of the VPN server is reachable: the path lets it through, the client too."""
    return port in host.network.server_udp_reachable and not udp_blocked_locally(host, port)


def _offers(conn: VpnConnection) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(main-mode offers, quick-mode offers) the client sends."""
    policy = conn.ipsec_custom_policy
    if policy is None:
        return list(WINDOWS_DEFAULT_IKE), list(WINDOWS_DEFAULT_ESP)
    ike = {
        "encryption": policy["encryption_method"],
        "integrity": policy["integrity_check_method"],
        "dh_group": policy["dh_group"],
    }
    esp = {
        "cipher": policy["cipher_transform_constants"],
        "auth": policy["authentication_transform_constants"],
        "pfs": policy["pfs_group"],
    }
    return [ike], [esp]


def _main_mode_agrees(host: Host, conn: VpnConnection) -> bool:
    ike, _ = _offers(conn)
    return any(o == s for o in ike for s in host.server.ike_proposals)


def _quick_mode_agrees(host: Host, conn: VpnConnection) -> bool:
    _, esp = _offers(conn)
    pfs_ok = host.server.pfs_groups
    return any(
        o["cipher"] == s["cipher"]
        and o["auth"] == s["auth"]
        and (pfs_ok is None or o["pfs"] in pfs_ok)
        for o in esp
        for s in host.server.esp_proposals
    )


def _service_up(host: Host, name: str) -> bool:
    svc = host.service(name)
    return svc is None or svc.startable("dial")  # an absent service is not modelled as a fault


def _ipsec_stage(host: Host, conn: VpnConnection, ikev2: bool) -> Outcome | None:
    """Rows 5-13: the IPsec (device) stage; None when IPsec comes up."""
    if not ikev2 and conn.l2tp_ipsec_auth != "Psk":
        return Outcome(766, "l2tp_certificate_without_machine_cert")
    if not ikev2 and host.boot_value(RASMAN_PARAMETERS_KEY, PROHIBIT_IPSEC) == 1:
        # No automatic IPsec policy: L2TP goes out in the clear and the server drops it.
        return Outcome(809, "prohibit_ipsec")
    if not (_service_up(host, "BFE") and _service_up(host, "IKEEXT")):
        return Outcome(827, "ikeext_or_bfe_not_running")
    if not ikev2 and not _service_up(host, "PolicyAgent"):
        return Outcome(791, "policyagent_stopped")  # modelling decision, see README
    if not udp_reachable(host, 500):
        return Outcome(809, "udp_500_blocked")
    nat = host.network.client_nat or host.network.server_nat
    if not ikev2:
        assume = host.boot_value(POLICY_AGENT_KEY, ASSUME_UDP)
        if host.network.server_nat and host.network.client_nat and assume != 2:
            return Outcome(809, "nat_both_sides_needs_2")
        if host.network.server_nat and assume not in (1, 2):
            return Outcome(809, "nat_server_needs_1_or_2")
    if nat and not udp_reachable(host, 4500):
        return Outcome(789, "udp_4500_blocked_with_nat")
    if not _main_mode_agrees(host, conn):
        return Outcome(13868 if ikev2 else 788, "ike_proposal_mismatch")
    if not ikev2 and conn.psk != host.server.psk:
        return Outcome(789, "psk_mismatch")
    if not _quick_mode_agrees(host, conn):
        return Outcome(13868 if ikev2 else 788, "esp_proposal_mismatch")
    return None


def _auth_stage(host: Host, conn: VpnConnection, ikev2: bool) -> Outcome:
    """Rows 14-15: PPP (or IKEv2 EAP) authentication of the user."""
    methods = set(conn.authentication_method)
    if ikev2:
        methods &= {"Eap", "MSChapv2", "MachineCertificate"}
    if not methods & set(host.server.auth_methods):
        return Outcome(13801 if ikev2 else 691, "auth_method_mismatch")
    expected = host.server.users.get(conn.username or "")
    if expected is None or conn.password != expected:
        return Outcome(13801 if ikev2 else 691, "bad_credentials")
    return Outcome(None, "connected")


def evaluate(host: Host, conn: VpnConnection, as_employee: bool = True) -> Outcome:
    """The outcome of dialling ``conn`` from ``host``'s current state (changes nothing).

    ``as_employee`` False is a dial from the portal's WinRM account (``vpn_dial``): it runs
    without a user profile, so it has neither the employee's saved credentials nor their
    per-user phone book (shared/facts/windows-runner-review.md D-3/D-4). IPsec uses the
    connection's PSK as usual; PPP authentication then has no user name: 691 (which code
    Windows gives is unverified; 691 is the facts file's first candidate).
    """
    with host.lock:
        ras = host.service("RasMan")
        if ras is not None and not ras.startable("dial"):
            return Outcome(711, "rasman_cannot_start")
        addresses = resolve(host, conn.server_address)
        if not addresses:
            return Outcome(868, "dns_not_resolvable")
        tunnel = conn.tunnel_type
        if tunnel == "Automatic":
            tunnel = next((t for t in ("Ikev2", "L2tp") if t in host.server.tunnel_types), "L2tp")
        if host.server.ip not in addresses or tunnel not in host.server.tunnel_types:
            outcome = Outcome(809, "server_not_answering")
        else:
            ikev2 = tunnel == "Ikev2"
            outcome = _ipsec_stage(host, conn, ikev2)
            if outcome is None and not as_employee:
                outcome = Outcome(13801 if ikev2 else 691, "no_user_credentials_in_winrm")
            outcome = outcome or _auth_stage(host, conn, ikev2)
        if conn.tunnel_type == "Automatic" and outcome.code in _DEVICE_STAGE:
            return Outcome(800, outcome.cause)
        return outcome


def _settings_text(conn: VpnConnection) -> str:
    # Shaped like the settings block of a real 20221 (facts section 5, hwdsl2#428).
    auth = ", ".join(conn.authentication_method)
    ipsec = {"Psk": "Pre-shared key", "Certificate": "Certificate"}.get(
        conn.l2tp_ipsec_auth or "", "None"
    )
    return (
        f"\nVpnStrategy = {conn.tunnel_type.upper()}\nDataEncryption = {conn.encryption_level}"
        f"\nAuthentication Type = {auth}\nIPsec authentication for L2TP = {ipsec}\n"
    )


def record_attempt(
    host: Host, conn: VpnConnection, code: int | None, *, at: datetime | None = None
) -> None:
    """The RasClient events one attempt writes: 20221, then 20225 (connected) or 20227."""
    coid = "{" + str(uuid.uuid4()).upper() + "}"  # one CoId ties a dial's events together
    host.write_event(20221, conn, coid=coid, at=at, settings=_settings_text(conn))
    if code is None:
        host.write_event(20225, conn, coid=coid, at=at, settings=_settings_text(conn))
    else:
        host.write_event(20227, conn, code=code, coid=coid, at=at)


def dial(
    host: Host,
    name: str | None = None,
    *,
    at: datetime | None = None,
    as_employee: bool = True,
) -> dict[str, Any]:
    """Dial a connection (named, else the default one) and hang up.

    ``as_employee`` True is the employee at the machine (profile events, the ``/sim/connect``
    control); False is ``vpn_dial`` from the WinRM account, which sees only the all-user phone
    book and has no user credentials (see ``evaluate``). Returns the step's facts. Raises
    LookupError when the connection does not exist for that account.
    """
    with host.lock:
        conn = host.connection(name)
        if conn is not None and not as_employee and not conn.all_user_connection:
            conn = None  # a per-user connection lives in the employee's %AppData% phone book
        if conn is None:
            raise LookupError(
                f"The VPN connection {name or '(default)'} cannot be found. "
                f"{messages.error_text(623, host.locale)}"
            )
        outcome = evaluate(host, conn, as_employee)
        # A dial starts the Manual services it needs on demand (IKEEXT, RasMan; facts rows 7-8).
        for svc in host.services.values() if outcome.code != 711 else ():
            if svc.trigger == "dial" and not svc.running() and svc.start_type != "Disabled":
                svc.status = "Running"
        record_attempt(host, conn, outcome.code, at=at)
        return {
            "name": conn.name,
            "connected": outcome.connected,
            "error_code": outcome.code,
            "message": messages.rasdial_text(conn.name, outcome.code, host.locale),
        }
