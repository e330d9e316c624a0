"""Step handlers and run_plan: fact shapes from the catalog, idempotent fixes, the plan stream."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from diagnostics.catalog import CHECK_KINDS, FIX_KINDS, KINDS
from tests.winsim.conftest import STRONG_POLICY, make_host
from winsim import dial as dial_model
from winsim.hosts import Host
from winsim.steps import HANDLERS, run_plan

POLICY_AGENT = r"HKLM:\SYSTEM\CurrentControlSet\Services\PolicyAgent"

SAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "os_info": {},
    "service": {"name": "PolicyAgent"},
    "registry_value": {"path": POLICY_AGENT, "name": "AssumeUDPEncapsulationContextOnSendRule"},
    "vpn_connection": {},
    "firewall_rules": {"protocol": "UDP", "ports": [500, 4500, 1701]},
    "dns_resolve": {},
    "tcp_connect": {"port": 443},
    "ping": {},
    "vpn_events": {"hours": 24},
    "vpn_dial": {},
    "set_service": {"name": "IKEEXT", "start_type": "Manual", "action": "start"},
    "set_registry_value": {
        "path": POLICY_AGENT,
        "name": "AssumeUDPEncapsulationContextOnSendRule",
        "type": "DWord",
        "value": 2,
    },
    "set_vpn_connection": {"authentication_method": ["MSChapv2", "Chap"]},
    "set_vpn_ipsec": STRONG_POLICY,
    "set_vpn_psk": {"psk": "S3cret-Psk-Value"},
    "schedule_reboot": {"delay_seconds": 600, "message": "VPN fix"},
}


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "version": 1,
            "job": "1",
            "steps": [
                {"id": f"s{i + 1}", "kind": kind, "args": args}
                for i, (kind, args) in enumerate(steps)
            ],
        }  # fmt: skip
    )


def run(host: Host, *steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run_plan(host, plan(*steps))]


def test_there_is_one_handler_per_catalog_kind() -> None:
    assert set(HANDLERS) == set(KINDS)


def test_every_kind_has_sample_args() -> None:
    assert set(SAMPLE_ARGS) == set(KINDS)


@pytest.mark.parametrize("kind", CHECK_KINDS)
def test_check_returns_exactly_the_catalog_fact_keys(kind: str) -> None:
    (line, end) = run(make_host(), (kind, SAMPLE_ARGS[kind]))
    assert line["ok"] is True, line
    assert list(line["facts"]) == list(KINDS[kind].facts)
    assert set(line) == {"step", "ok", "facts", "ms"}
    assert end == {"end": True, "steps": 1}


@pytest.mark.parametrize("kind", FIX_KINDS)
def test_fix_returns_before_after_changed_with_the_catalog_keys(kind: str) -> None:
    (line, _) = run(
        make_host({"services": {"IKEEXT": {"status": "Stopped"}}}), (kind, SAMPLE_ARGS[kind])
    )
    assert line["ok"] is True, line
    assert set(line) == {"step", "ok", "before", "after", "changed", "ms"}
    assert list(line["before"]) == list(KINDS[kind].facts)
    assert list(line["after"]) == list(KINDS[kind].facts)
    assert line["changed"] is True


@pytest.mark.parametrize(
    "kind", [k for k in FIX_KINDS if k not in ("set_vpn_psk", "schedule_reboot")]
)
def test_running_a_fix_twice_changes_nothing_the_second_time(kind: str) -> None:
    host = make_host({"services": {"IKEEXT": {"status": "Stopped"}}})
    first, second, _ = run(host, (kind, SAMPLE_ARGS[kind]), (kind, SAMPLE_ARGS[kind]))
    assert first["changed"] is True
    assert second["changed"] is False
    assert second["before"] == second["after"] == first["after"]


def test_psk_is_never_echoed_and_always_counts_as_changed() -> None:
    host = make_host()
    step = ("set_vpn_psk", SAMPLE_ARGS["set_vpn_psk"])
    lines = list(run_plan(host, plan(step, step)))
    assert not any("S3cret-Psk-Value" in line for line in lines)
    assert json.loads(lines[1])["changed"] is True
    assert host.connection().psk == "S3cret-Psk-Value"


def test_a_second_reboot_schedule_is_refused_and_keeps_the_first() -> None:
    host = make_host()
    first, second, check, _ = run(
        host,
        ("schedule_reboot", {"delay_seconds": 600}),
        ("schedule_reboot", {"delay_seconds": 5}),
        ("schedule_reboot", {"cancel": True}),
    )
    assert first["after"] == {"pending_reboot": True, "delay_seconds": 600}
    assert second == {
        "step": "s2",
        "ok": False,
        "error": "shutdown.exe /r failed with code 1190",
        "ms": second["ms"],
    }
    assert check["before"] == {"pending_reboot": True, "delay_seconds": 600}
    assert check["after"] == {"pending_reboot": False, "delay_seconds": None}
    assert not host.is_down()


def test_reboot_takes_the_host_down_then_applies_boot_time_settings() -> None:
    host = make_host({
        "reboot_seconds": 1.0,  # wide enough for the checks while down on a loaded machine
        "shutdown_seconds": 0,
        "network": {"client_nat": True, "server_nat": True},
        "services": {"PolicyAgent": {"status": "Stopped"}, "SstpSvc": {"status": "Running"}},
    })  # fmt: skip
    run(host, *[("set_registry_value", SAMPLE_ARGS["set_registry_value"])])
    (before,) = [json.loads(x) for x in run_plan(host, plan(("vpn_dial", {})))][:1]
    assert before["facts"]["error_code"] == 791
    run(host, ("schedule_reboot", {"delay_seconds": 0}))
    assert host.is_down() is True
    assert list(run_plan(host, plan(("os_info", {})))) == []  # the runner dies with the machine
    deadline = time.monotonic() + 5
    while host.is_down() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host.is_down() is False
    assert host.boot_count == 1
    assert host.service("PolicyAgent").status == "Running"  # Manual, trigger-started at boot
    assert host.service("IKEEXT").status == "Stopped"  # Manual, started by the next dial
    assert host.service("SstpSvc").status == "Stopped"
    assert host.service("BFE").status == "Running"
    (dialled, _) = run(host, ("vpn_dial", {}))
    # IPsec now comes up; the WinRM account has no user credentials for PPP (issue #9).
    assert dialled["facts"]["error_code"] == 691
    assert dial_model.dial(host)["connected"] is True  # the employee's own dial


def test_absent_things_are_facts_not_errors() -> None:
    host = make_host()
    svc, reg, vpn, _ = run(
        host,
        ("service", {"name": "NoSuchSvc"}),
        ("registry_value", {"path": r"HKLM:\SOFTWARE\Nope", "name": "X"}),
        ("vpn_connection", {"name": "Other VPN"}),
    )
    assert svc["facts"] == {
        "exists": False,
        "name": None,
        "display_name": None,
        "status": None,
        "start_type": None,
    }
    assert reg["facts"] == {"exists": False, "value": None, "type": None}
    assert vpn["facts"]["exists"] is False and vpn["facts"]["name"] is None


def test_missing_objects_a_fix_needs_are_step_errors_and_the_plan_goes_on() -> None:
    host = make_host()
    svc, vpn, ok, end = run(
        host,
        ("set_service", {"name": "NoSuchSvc", "action": "start"}),
        ("set_vpn_psk", {"name": "Other VPN", "psk": "x"}),
        ("os_info", {}),
    )
    assert svc["ok"] is False and "NoSuchSvc" in svc["error"]
    assert vpn == {
        "step": "s2",
        "ok": False,
        "error": "The VPN connection Other VPN cannot be found.",
        "ms": vpn["ms"],
    }
    assert ok["ok"] is True and end["steps"] == 3


def test_starting_a_disabled_service_fails_like_start_service() -> None:
    host = make_host({"services": {"IKEEXT": {"status": "Stopped", "start_type": "Disabled"}}})
    (line, _) = run(host, ("set_service", {"name": "IKEEXT", "action": "start"}))
    assert line["ok"] is False
    assert "cannot be started" in line["error"]
    assert host.service("IKEEXT").status == "Stopped"


def test_registry_values_keep_their_windows_types() -> None:
    host = make_host()
    path = r"HKLM:\SOFTWARE\Kaiketsu\Test"
    w1, w2, w3, r1, gone, r2, _ = run(
        host,
        ("set_registry_value", {"path": path, "name": "D", "type": "DWord", "value": -1}),
        (
            "set_registry_value",
            {"path": path, "name": "M", "type": "MultiString", "value": ["a", "b"]},
        ),
        ("set_registry_value", {"path": path, "name": "Bad", "type": "DWord", "value": "two"}),
        ("registry_value", {"path": r"HKLM:\software\kaiketsu\TEST", "name": "d"}),
        ("set_registry_value", {"path": path, "name": "M", "absent": True}),
        ("registry_value", {"path": path, "name": "M"}),
    )
    assert w1["after"] == {"exists": True, "value": 4294967295, "type": "DWord"}
    assert w2["after"]["value"] == ["a", "b"]
    assert w3["ok"] is False and "DWord" in w3["error"]
    assert r1["facts"]["value"] == 4294967295  # names and paths are case-insensitive
    assert gone["changed"] is True and r2["facts"]["exists"] is False


def test_set_vpn_ipsec_and_revert() -> None:
    host = make_host()
    custom, conn, revert, _ = run(
        host,
        ("set_vpn_ipsec", STRONG_POLICY),
        ("vpn_connection", {}),
        ("set_vpn_ipsec", {"revert_to_default": True}),
    )
    assert custom["before"] == {"ipsec_custom_policy": None}
    assert custom["after"] == {"ipsec_custom_policy": STRONG_POLICY}
    assert conn["facts"]["ipsec_custom_policy"] == STRONG_POLICY
    assert conn["facts"]["encryption_level"] == "Custom"
    assert revert["after"] == {"ipsec_custom_policy": None}


def test_firewall_rules_lists_enabled_blocking_rules_for_the_asked_ports() -> None:
    host = make_host({"firewall_rules": {
        "gpo-ike": {"remote_port": "500,4500", "policy_store": "GroupPolicy"},
        "off": {"remote_port": ["1701"], "enabled": False},
        "allow": {"remote_port": ["1701"], "action": "Allow"},
        "tcp": {"protocol": "TCP", "remote_port": ["500"]},
        "range": {"direction": "Inbound", "local_port": ["1000-2000"]},
    }})  # fmt: skip
    (line, _) = run(host, ("firewall_rules", {"protocol": "UDP", "ports": [500, 4500, 1701]}))
    facts = line["facts"]
    assert [r["name"] for r in facts["blocking"]] == ["gpo-ike", "range"]
    assert facts["blocked_ports"] == [500, 1701, 4500]
    assert facts["blocking"][0]["remote_port"] == ["500", "4500"]
    (outbound, _) = run(
        host, ("firewall_rules", {"protocol": "UDP", "ports": [1701], "direction": "Outbound"})
    )
    assert outbound["facts"] == {
        "blocking": [], "blocked_ports": [], "count": 0,
        "active_profiles": ["Private"], "default_outbound": "Allow",
    }  # fmt: skip


def test_network_checks_target_the_vpn_server_by_default() -> None:
    host = make_host({"locale": "en-US", "network": {"dns": {"vpn.example.co.jp": None}}})
    dns, tcp, ping, other, _ = run(
        host, ("dns_resolve", {}), ("tcp_connect", {"port": 443}), ("ping", {}),
        ("dns_resolve", {"host": "www.example.com"}),
    )  # fmt: skip
    assert dns["facts"] == {
        "name": "vpn.example.co.jp", "resolved": False, "addresses": [],
        "error": "DNS_ERROR_RCODE_NAME_ERROR,Microsoft.DnsClient.Commands.ResolveDnsName",
    }  # fmt: skip
    assert tcp["facts"]["reachable"] is False and ping["facts"]["rtt_ms"] is None
    assert other["facts"]["resolved"] is False  # a name the profile does not know


def test_vpn_events_newest_first_with_the_last_error_code() -> None:
    host = make_host({"events": [
        {"id": 20227, "code": 809, "minutes_ago": 60 * 30},
        {"dial": True, "minutes_ago": 30},
        {"id": 20227, "code": 691, "minutes_ago": 90},
    ]})  # fmt: skip
    (line, _) = run(host, ("vpn_events", {"hours": 24, "max": 2}))
    facts = line["facts"]
    assert [(e["id"], e["code"]) for e in facts["events"]] == [(20225, None), (20221, None)]
    assert facts["last_error_code"] is None
    (wider, _) = run(host, ("vpn_events", {}))
    assert [e["id"] for e in wider["facts"]["events"]] == [20225, 20221, 20227]
    # The newest dial connected, so the older 691 no longer counts as the last error.
    assert wider["facts"]["last_error_code"] is None
    assert wider["facts"]["events"][0]["time"].endswith("Z")


def test_vpn_events_last_error_is_the_newest_dial_outcome_when_it_failed() -> None:
    host = make_host({"events": [
        {"dial": True, "minutes_ago": 90},
        {"id": 20227, "code": 691, "minutes_ago": 30},
    ]})  # fmt: skip
    (line, _) = run(host, ("vpn_events", {}))
    assert line["facts"]["last_error_code"] == 691


def test_plan_errors_are_one_fatal_line() -> None:
    host = make_host()
    assert list(run_plan(host, "{not json")) == [
        json.dumps(
            {
                "fatal": "plan: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
            }
        )
    ]
    (line,) = run_plan(host, json.dumps({"version": 2, "steps": []}))
    assert json.loads(line) == {"fatal": "plan: version 2 is not supported by this runner"}
    (dup,) = run_plan(
        host, json.dumps({"version": 1, "steps": [{"id": "a", "kind": "os_info"}] * 2})
    )
    assert "twice" in json.loads(dup)["fatal"]


def test_steps_the_portal_would_reject_are_rejected_per_step() -> None:
    host = make_host()
    unknown, bad, ok, _ = run(
        host,
        ("format_disk", {}),
        ("service", {"name": "x; Remove-Item C:\\"}),
        ("os_info", {}),
    )
    assert unknown["ok"] is False and "unknown step kind" in unknown["error"]
    assert bad["ok"] is False and "not a valid value" in bad["error"]
    assert ok["ok"] is True


def test_lines_stream_as_each_step_finishes_with_latency() -> None:
    host = make_host({"step_latency_ms": 60, "faults": {"slow_step_ms": 40}})
    stream = run_plan(host, plan(("os_info", {}), ("os_info", {}), ("os_info", {})))
    started = time.monotonic()
    first = json.loads(next(stream))
    first_at = time.monotonic() - started
    rest = list(stream)
    total = time.monotonic() - started
    assert first["ms"] >= 100
    assert 0.09 <= first_at < 0.2 and total >= 0.3
    assert json.loads(rest[-1]) == {"end": True, "steps": 3}


def test_malformed_output_fault_adds_one_garbage_line() -> None:
    host = make_host({"faults": {"malformed_output": True}})
    lines = list(run_plan(host, plan(("os_info", {}), ("os_info", {}))))
    assert len(lines) == 4
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert bad == ["@{step=s1; ok=True; facts=System.Collections.Hashtable}"]


def test_a_restart_now_lets_the_rest_of_the_plan_finish_first() -> None:
    host = make_host({"shutdown_seconds": 1.0, "reboot_seconds": 30})
    lines = run(host, ("schedule_reboot", {"delay_seconds": 0}), ("os_info", {}))
    assert [line.get("ok") for line in lines[:2]] == [True, True]
    assert lines[-1] == {"end": True, "steps": 2}
    assert host.is_down() is False
    time.sleep(1.1)
    assert host.is_down() is True
