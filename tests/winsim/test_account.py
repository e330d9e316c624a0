"""winsim answers as Windows answers the portal's account, and the runner reports the truth or
"cannot tell" (issue #10; review D-1 ... D-10 in ../shared/facts/windows-runner-review.md).

Each test builds a host that reproduces one of Windows' misleading answers, shows the misleading
answer itself (winsim.windows), then checks the step line: a true fact, or ``cannot`` with the
reason and the missing right, never the false fact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from diagnostics.plans import evaluate
from tests.winsim.conftest import STRONG_POLICY, make_host
from winsim import windows
from winsim.dial import dial
from winsim.hosts import Host
from winsim.steps import run_plan

LEAST_PRIVILEGE = {"account": {"admin": False}}
POLICY_AGENT = r"HKLM:\SYSTEM\CurrentControlSet\Services\PolicyAgent"


def run(host: Host, *steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    plan = {
        "version": 1,
        "job": "t",
        "steps": [{"id": f"s{i}", "kind": k, "args": a} for i, (k, a) in enumerate(steps, 1)],
    }
    return [json.loads(line) for line in run_plan(host, json.dumps(plan))][:-1]


# --- D-1: Get-Service under a network logon says "no such service" -----------------------------


def test_least_privilege_service_check_is_cannot_tell_with_the_start_type_from_the_registry():
    host = make_host({**LEAST_PRIVILEGE, "services": {"PolicyAgent": {"start_type": "Disabled"}}})
    assert windows.get_service(host, "PolicyAgent") is None  # what Windows answers
    (line,) = run(host, ("service", {"name": "PolicyAgent"}))
    assert line["ok"] is False
    assert line["cannot"] == {"reason": "access_denied", "need": "service_query"}
    assert line["facts"] == {"exists": True, "name": "PolicyAgent", "start_type": "Disabled"}
    # A condition on the learnt start type is a real verdict; one on the status is unknown.
    assert evaluate([{"fact": "start_type", "op": "ne", "value": "Disabled"}], line)[0] == "fail"
    assert evaluate([{"fact": "status", "op": "eq", "value": "Running"}], line)[0] == "unknown"


def test_least_privilege_still_learns_that_a_service_truly_does_not_exist():
    host = make_host({**LEAST_PRIVILEGE, "services": {"SstpSvc": None}})
    (line,) = run(host, ("service", {"name": "SstpSvc"}))
    assert line["ok"] is True and line["facts"]["exists"] is False


def test_service_query_right_gives_the_full_facts():
    host = make_host({"account": {"service_query": True}})
    (line,) = run(host, ("service", {"name": "PolicyAgent"}))
    assert line["ok"] is True and line["facts"]["status"] == "Running"


# --- D-2: an unreadable Application log looks like "no events" --------------------------------


def test_least_privilege_event_check_is_cannot_tell_not_a_clean_log():
    host = make_host({**LEAST_PRIVILEGE, "vpn_connections": {"社内VPN": {"psk": "wrong"}}})
    dial(host, None)  # the employee's failed attempt writes 20227 with 789
    assert windows.events_by_hashtable(host, 24, 20) == []  # the old query's "no events"
    (line,) = run(host, ("vpn_events", {"hours": 24}))
    assert line["ok"] is False and "facts" not in line
    assert line["cannot"] == {"reason": "access_denied", "need": "event_log_readers"}
    assert "Event Log Readers" in line["error"]


def test_event_log_readers_membership_reads_the_events():
    host = make_host({
        "account": {"event_log_readers": True},
        "vpn_connections": {"社内VPN": {"psk": "wrong"}},
    })  # fmt: skip
    dial(host, None)
    (line,) = run(host, ("vpn_events", {"hours": 24}))
    assert line["ok"] is True and line["facts"]["last_error_code"] == 789


# --- D-3: per-user connections are invisible; no guessing -------------------------------------


def test_a_per_user_connection_is_reported_as_such_to_an_admin():
    host = make_host({"vpn_connections": {"社内VPN": {"all_user_connection": False}}})
    assert windows.vpn_connections(host, all_users=True) == []
    (line,) = run(host, ("vpn_connection", {}))
    assert line["cannot"] == {"reason": "not_visible", "need": "all_user_connection"}
    assert "per-user connection of yamada" in line["error"]


def test_a_per_user_connection_is_cannot_tell_not_absent_for_a_non_admin():
    host = make_host({
        **LEAST_PRIVILEGE, "vpn_connections": {"社内VPN": {"all_user_connection": False}},
    })  # fmt: skip
    (line,) = run(host, ("vpn_connection", {}))
    assert line["ok"] is False
    assert line["cannot"] == {"reason": "access_denied", "need": "administrators"}


def test_an_admin_learns_that_there_is_truly_no_connection():
    host = make_host({"vpn_connections": {"社内VPN": None, "Corp VPN": None}})
    (line,) = run(host, ("vpn_connection", {}))
    assert line["ok"] is True and line["facts"]["exists"] is False


def two_connections() -> Host:
    return make_host({
        "vpn_connections": {
            "社内VPN": None,
            "Branch": {"tunnel_type": "Ikev2", "l2tp_ipsec_auth": None},
            "Corp VPN": {"encryption_level": "Optional"},
        }
    })  # fmt: skip


def test_with_two_connections_and_no_name_the_check_and_the_fix_refuse_to_guess():
    host = two_connections()
    check, fix = run(
        host, ("vpn_connection", {}), ("set_vpn_connection", {"encryption_level": "Required"})
    )
    assert check["cannot"]["reason"] == fix["cannot"]["reason"] == "ambiguous"
    assert "Branch" in check["error"] and "Corp VPN" in check["error"]
    assert [c.encryption_level for c in host.connections] == ["Required", "Optional"]


def test_a_named_connection_is_found_among_several():
    host = two_connections()
    (fix,) = run(host, ("set_vpn_connection", {"name": "Corp VPN", "encryption_level": "Required"}))
    assert fix["ok"] is True and fix["changed"] is True
    assert host.connections[1].encryption_level == "Required"


# --- D-5: an IP address is not looked up ------------------------------------------------------


def test_a_server_configured_by_ip_address_resolves():
    host = make_host({"vpn_connections": {"社内VPN": {"server_address": "203.0.113.10"}}})
    assert windows.resolve_dns_name(host, "203.0.113.10") == []  # a PTR answer, no address
    (line,) = run(host, ("dns_resolve", {}))
    assert line["facts"] == {
        "name": "203.0.113.10", "resolved": True, "addresses": ["203.0.113.10"], "error": None,
    }  # fmt: skip


# --- D-6: firewall rules by profile, program and default action -------------------------------

IKE_BLOCK = {"direction": "Outbound", "action": "Block", "protocol": "UDP", "remote_port": [500]}


@pytest.mark.parametrize(
    "rule",
    [
        {**IKE_BLOCK, "program": r"C:\Program Files\App\app.exe"},
        {**IKE_BLOCK, "profile": ["Public"]},
    ],
    ids=["another-program", "inactive-profile"],
)
def test_a_rule_that_cannot_touch_ike_traffic_is_not_reported_as_blocking(rule):
    host = make_host({"firewall_rules": {"r": rule}, "network_category": "Private"})
    (line,) = run(host, ("firewall_rules", {"protocol": "UDP", "ports": [500, 4500]}))
    assert line["facts"]["blocked_ports"] == [] and line["facts"]["count"] == 0


def test_a_rule_of_the_active_profile_blocks():
    host = make_host({"firewall_rules": {"r": {**IKE_BLOCK, "profile": ["Private"]}}})
    (line,) = run(host, ("firewall_rules", {"protocol": "UDP", "ports": [500, 4500]}))
    assert line["facts"]["blocked_ports"] == [500]
    assert line["facts"]["blocking"][0]["profile"] == ["Private"]


def test_a_default_block_outbound_policy_blocks_the_ports_no_allow_rule_opens():
    allow = {"direction": "Outbound", "action": "Allow", "protocol": "UDP", "remote_port": [500]}
    host = make_host({
        "firewall_profiles": {"Private": {"default_outbound_action": "Block"}},
        "firewall_rules": {"allow-ike": allow},
    })  # fmt: skip
    (line,) = run(host, ("firewall_rules", {"protocol": "UDP", "ports": [500, 4500]}))
    facts = line["facts"]
    assert facts["default_outbound"] == "Block" and facts["active_profiles"] == ["Private"]
    assert facts["blocked_ports"] == [4500]
    assert facts["blocking"][0]["name"] == "DefaultOutboundAction"


# --- D-8: IPsecCustomPolicy as numbers ----------------------------------------------------------


def test_numeric_ipsec_policy_values_come_out_as_the_catalog_names():
    host = make_host({
        "ipsec_policy_as_numbers": True,
        "vpn_connections": {"社内VPN": {"ipsec_custom_policy": STRONG_POLICY}},
    })  # fmt: skip
    raw = windows.ipsec_policy(host, host.connections[0])
    assert raw["dh_group"] == 3 and raw["integrity_check_method"] == 2
    (line,) = run(host, ("vpn_connection", {}))
    assert line["facts"]["ipsec_custom_policy"] == STRONG_POLICY


# --- D-10: the key never reaches a PowerShell log -----------------------------------------------


def test_with_module_logging_the_psk_fix_refuses_and_the_key_stays_unset():
    host = make_host({"module_logging": True})
    old = host.connections[0].psk
    (line,) = run(host, ("set_vpn_psk", {"psk": "N3w-Psk-Value"}))
    assert line["ok"] is False
    assert line["cannot"] == {"reason": "module_logging", "need": "no_module_logging"}
    assert host.connections[0].psk == old
    assert not any("N3w-Psk-Value" in entry for entry in host.module_log)


# --- changes need an administrator ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("set_service", {"name": "PolicyAgent", "action": "start"}),
        ("set_registry_value", {"path": POLICY_AGENT, "name": "X", "type": "DWord", "value": 2}),
        ("set_vpn_connection", {"encryption_level": "Required"}),
        ("set_vpn_psk", {"psk": "N3w-Psk-Value"}),
        ("schedule_reboot", {"delay_seconds": 600}),
    ],
)
def test_a_least_privilege_account_cannot_change_anything(kind, args):
    host = make_host(LEAST_PRIVILEGE)
    (line,) = run(host, (kind, args))
    assert line["ok"] is False
    assert line["cannot"] == {"reason": "access_denied", "need": "administrators"}


# --- over the wire: the real bootstrap and runner, stock pywinrm ---------------------------------


def run_real_bootstrap(host: Host, plan: dict[str, Any]) -> tuple[bytes, bytes, int]:
    from diagnostics.remote import build_command
    from tests.winsim.conftest import Fleet
    from winsim.server import FleetThread

    command, stdin = build_command(plan)
    with FleetThread([host]):
        p = Fleet([host]).protocol(host.name)
        shell_id = p.open_shell(codepage=65001, noprofile=True)
        command_id = p.run_command(shell_id, command)
        p.send_command_input(shell_id, command_id, stdin, end=True)
        result = p.get_command_output(shell_id, command_id)
        p.close_shell(shell_id)
    return result


def test_constrained_language_mode_ends_the_job_with_a_clear_fatal_line():
    # D-9: the bootstrap checks the language mode before its first .NET call.
    host = make_host({"language_mode": "ConstrainedLanguage"})
    plan = {"version": 1, "job": "t", "steps": [{"id": "s1", "kind": "os_info", "args": {}}]}
    out, _err, code = run_real_bootstrap(host, plan)
    assert code == 1
    (fatal,) = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    assert fatal["fatal"].startswith("language_mode: ")
    assert "ConstrainedLanguage" in fatal["fatal"]


def test_japanese_facts_arrive_intact_when_the_console_encoding_cannot_be_switched():
    # D-7: stdout in the ANSI code page (the switch to UTF-8 failed): lines are ASCII anyway.
    host = make_host({"faults": {"console_codepage": 932}, "vpn_connections": {"社内VPN": {}}})
    plan = {"version": 1, "job": "t", "steps": [{"id": "s1", "kind": "vpn_connection"}]}
    out, _err, code = run_real_bootstrap(host, plan)
    assert code == 0 and out.isascii()
    assert json.loads(out.decode().splitlines()[0])["facts"]["name"] == "社内VPN"
