"""The demo profile: every host loads, fails the way its name says, and the seed's fixes work."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from winsim import dial as dial_model
from winsim.hosts import Host, hosts_from_profile, load_profile, reboot_now
from winsim.state import ProfileError
from winsim.steps import run_plan

DEMO = Path(__file__).resolve().parents[2] / "winsim" / "profiles" / "demo.yaml"
POLICY_AGENT = r"HKLM:\SYSTEM\CurrentControlSet\Services\PolicyAgent"
RASMAN = r"HKLM:\SYSTEM\CurrentControlSet\Services\RasMan\Parameters"

EXPECTED_CODES = {
    "demo-healthy": None,
    "demo-psk-mismatch": 789,
    "demo-ipsec-proposal": 788,
    "demo-policyagent-stopped": 791,
    "demo-ikeext-disabled": 827,
    "demo-udp-blocked": 809,
    "demo-nat-t": 809,
    "demo-prohibit-ipsec": 809,
    "demo-dns": 868,
    "demo-bad-password": 691,
    "demo-stock-healthy": None,  # no AssumeUDP..., but the server is not behind NAT
    "demo-at-home": 809,  # as demo-nat-t, reached through its agent (issue #14)
    "demo-offline-laptop": None,  # healthy, but switched off
}

# The seed article's fixes, as the portal would send them; True = Windows needs a restart.
SEED_FIXES: dict[str, tuple[list[tuple[str, dict[str, Any]]], bool]] = {
    "demo-psk-mismatch": ([("set_vpn_psk", {"psk": "Kaiketsu2024Psk"})], False),
    "demo-ipsec-proposal": ([("set_vpn_ipsec", {"revert_to_default": True})], False),
    "demo-policyagent-stopped": (
        [("set_service", {"name": "PolicyAgent", "start_type": "Automatic", "action": "start"})],
        False,
    ),
    "demo-ikeext-disabled": (
        [("set_service", {"name": "IKEEXT", "start_type": "Manual", "action": "start"})],
        False,
    ),
    "demo-nat-t": (
        [("set_registry_value", {"path": POLICY_AGENT, "type": "DWord", "value": 2,
                                 "name": "AssumeUDPEncapsulationContextOnSendRule"})],
        True,
    ),
    "demo-prohibit-ipsec": (
        [("set_registry_value", {"path": RASMAN, "name": "ProhibitIpSec", "absent": True})],
        True,
    ),
}  # fmt: skip


@pytest.fixture
def demo() -> dict[str, Host]:
    hosts = {h.name: h for h in load_profile(DEMO)}
    for host in hosts.values():
        host.step_latency_ms = 0  # the demo's visible latency would only slow the tests
    return hosts


def run(host: Host, *steps: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    body = {"version": 1, "steps": [
        {"id": f"s{i}", "kind": k, "args": a} for i, (k, a) in enumerate(steps, 1)
    ]}  # fmt: skip
    lines = [json.loads(line) for line in run_plan(host, json.dumps(body))]
    assert lines[-1] == {"end": True, "steps": len(steps)}
    return lines[:-1]


def dial(host: Host) -> dict[str, Any]:
    """The employee's own dial (``vpn_dial`` dials as the WinRM account, without their
    credentials: see tests/winsim/test_dial.py)."""
    return dial_model.dial(host)


def test_demo_profile_has_the_hosts_the_portal_expects(demo: dict[str, Host]) -> None:
    assert set(demo) == set(EXPECTED_CODES) | {
        "demo-unreachable",
        "demo-hang",
        "demo-stale-healthy",
    }
    ports = sorted(h.port for h in demo.values())
    assert ports == list(range(15985, 15985 + len(demo)))
    assert {h.scheme for h in demo.values()} == {"http", "https"}
    assert {h.locale for h in demo.values()} == {"ja-JP", "en-US"}
    assert sum(h.locale == "ja-JP" for h in demo.values()) > len(demo) / 2
    assert demo["demo-unreachable"].faults.refuse_connections is True
    assert demo["demo-hang"].faults.never_answer is True
    assert demo["demo-at-home"].has_agent and not demo["demo-at-home"].winrm_reachable
    assert demo["demo-offline-laptop"].agent_offline is True
    assert all(h.username == "kaiketsu" and h.password for h in demo.values())
    assert all(150 <= h.step_latency_ms <= 300 for h in load_profile(DEMO))


@pytest.mark.parametrize(("name", "code"), EXPECTED_CODES.items())
def test_demo_host_dial_fails_with_its_code_and_logged_it(
    demo: dict[str, Host], name: str, code: int | None
) -> None:
    host = demo[name]
    (events,) = run(host, ("vpn_events", {}))
    assert events["facts"]["last_error_code"] == code  # the employee's attempt before asking
    facts = dial(host)
    assert facts["error_code"] == code
    assert facts["connected"] is (code is None)


@pytest.mark.parametrize("name", SEED_FIXES)
def test_seed_fix_makes_the_demo_host_connect(demo: dict[str, Host], name: str) -> None:
    host = demo[name]
    fixes, needs_reboot = SEED_FIXES[name]
    results = run(host, *fixes)
    assert all(r["ok"] and r["changed"] for r in results), results
    if needs_reboot:
        assert dial(host)["error_code"] == EXPECTED_CODES[name]  # not before the restart
        reboot_now(host)
    assert dial(host)["connected"] is True
    assert run(host, ("vpn_events", {"max": 1}))[0]["facts"]["events"][0]["id"] == 20225


def test_scheduled_reboot_applies_the_nat_t_fix(demo: dict[str, Host]) -> None:
    host = demo["demo-nat-t"]
    host.reboot_seconds = 1.0  # wide enough to see it down on a loaded machine
    host.shutdown_seconds = 0
    fixes, _ = SEED_FIXES["demo-nat-t"]
    run(host, *fixes, ("schedule_reboot", {"delay_seconds": 0}))
    assert host.is_down()
    deadline = time.monotonic() + 5
    while host.is_down() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dial(host)["connected"] is True


def test_hosts_without_a_host_side_fix_still_fail_after_the_other_fixes(
    demo: dict[str, Host],
) -> None:
    # UDP blocked by a GPO rule, DNS and a stale password have no fix in the catalog: the
    # portal must say so instead of pretending a fix worked.
    for name in ("demo-udp-blocked", "demo-dns", "demo-bad-password"):
        host = demo[name]
        for fixes, _ in SEED_FIXES.values():
            run(host, *fixes)
        reboot_now(host)
        assert dial(host)["error_code"] == EXPECTED_CODES[name], name


def test_generate_builds_many_hosts_from_a_template_quickly() -> None:
    started = time.monotonic()
    hosts = hosts_from_profile({
        "defaults": {"step_latency_ms": 0},
        "templates": {"laptop": {"locale": "en-US", "network": {"client_nat": True}}},
        "generate": {"count": 500, "template": "laptop", "prefix": "bench-"},
    })  # fmt: skip
    elapsed = time.monotonic() - started
    assert len({h.name for h in hosts}) == 500
    assert hosts[0].name == "bench-0001" and hosts[-1].computer_name == "BENCH-0500"
    assert all(h.port == 0 and h.locale == "en-US" for h in hosts)
    assert elapsed < 5


def test_host_fields_override_defaults_and_templates() -> None:
    (host,) = hosts_from_profile({
        "defaults": {"locale": "en-US", "services": {"IKEEXT": {"start_type": "Disabled"}}},
        "templates": {"t": {"locale": "ja-JP", "vpn_server": {"psk": "TemplatePsk"}}},
        "hosts": {"a": {"template": "t", "services": {"IKEEXT": {"status": "Stopped"}}}},
    })  # fmt: skip
    assert host.locale == "ja-JP"
    assert host.service("IKEEXT").start_type == "Disabled"
    assert host.service("IKEEXT").status == "Stopped"
    assert host.connection().psk == host.server.psk == "TemplatePsk"


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"hosts": {"a": {"colour": "red"}}}, "unknown field"),
        ({"hosts": {"a": {"template": "nope"}}}, "unknown template"),
        ({"hosts": {"a": {"locale": "fr-FR"}}}, "locale"),
        ({"hosts": {"a": {"port": 1}, "b": {"port": 1}}}, "ports must be unique"),
        ({"hosts": {"a": {"services": {"X": {"start_type": "Sometimes"}}}}}, "Sometimes"),
        ({"hosts": {"a": {"registry": {"HKCR\\x": {"v": 1}}}}}, "HKLM or HKCU"),
        ({"hosts": {"a": {"vpn_connections": {"c": {"ipsec_custom_policy": {"dh_group": "Group2"}}}}}}, "missing"),
    ],
)  # fmt: skip
def test_bad_profiles_are_refused_with_a_clear_message(profile: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        hosts_from_profile(profile)


def test_the_stale_demo_host_logged_789_yesterday_and_connects_today(
    demo: dict[str, Host],
) -> None:
    host = demo["demo-stale-healthy"]
    (events,) = run(host, ("vpn_events", {"hours": 72}))
    failed = [e for e in events["facts"]["events"] if e["id"] == 20227]
    assert [e["code"] for e in failed] == [789]
    assert dial(host)["connected"] is True
