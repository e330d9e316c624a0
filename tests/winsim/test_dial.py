"""The causal dial model, row by row: host state -> the Windows error code of the dial.

Each row of the table in winsim/README.md ("Causal dial model") has a case here. A case is the
smallest profile entry that produces it on top of the healthy defaults.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.winsim.conftest import STRONG_POLICY, make_host
from winsim import dial, messages
from winsim.hosts import reboot_now
from winsim.state import ASSUME_UDP, POLICY_AGENT_KEY, RegValue

RASMAN = r"HKLM:\SYSTEM\CurrentControlSet\Services\RasMan\Parameters"
POLICY_AGENT = r"HKLM:\SYSTEM\CurrentControlSet\Services\PolicyAgent"
WEAK_POLICY = {
    "authentication_transform_constants": "SHA196",
    "cipher_transform_constants": "DES3",
    "encryption_method": "DES3",
    "integrity_check_method": "SHA1",
    "dh_group": "Group2",
    "pfs_group": "None",
}


def conn(**fields: Any) -> dict[str, Any]:
    return {"vpn_connections": {"Corp VPN": fields}}


def nat(client: bool, server: bool, assume: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"network": {"client_nat": client, "server_nat": server}}
    if assume is not None:
        spec["registry"] = {POLICY_AGENT: {ASSUME_UDP: assume}}
    return spec


def block_rule(**fields: Any) -> dict[str, Any]:
    rule = {"direction": "Outbound", "protocol": "UDP", "remote_port": ["500", "4500"]}
    return {"firewall_rules": {"Block IKE": {**rule, **fields}}}


ROWS: list[tuple[str, dict[str, Any], int | None]] = [
    ("healthy", {}, None),
    ("rasman_disabled", {"services": {"RasMan": {"status": "Stopped", "start_type": "Disabled"}}}, 711),
    ("rasman_stopped_manual_starts_on_demand", {"services": {"RasMan": {"status": "Stopped"}}}, None),
    ("dns_no_answer", {"network": {"dns": {"vpn.example.co.jp": None}}}, 868),
    ("dns_points_elsewhere", {"network": {"dns": {"vpn.example.co.jp": ["198.51.100.7"]}}}, 809),
    ("server_ip_literal", conn(server_address="203.0.113.10"), None),
    ("tunnel_the_server_does_not_offer", conn(tunnel_type="Sstp"), 809),
    ("automatic_tunnel_healthy", conn(tunnel_type="Automatic"), None),
    ("automatic_tunnel_unreachable", {**conn(tunnel_type="Automatic"), **block_rule()}, 800),
    ("l2tp_certificate_auth", conn(l2tp_ipsec_auth="Certificate"), 766),
    ("prohibit_ipsec_1", {"registry": {RASMAN: {"ProhibitIpSec": 1}}}, 809),
    ("prohibit_ipsec_0", {"registry": {RASMAN: {"ProhibitIpSec": 0}}}, None),
    ("ikeext_disabled", {"services": {"IKEEXT": {"status": "Stopped", "start_type": "Disabled"}}}, 827),
    ("ikeext_stopped_manual_trigger_starts", {"services": {"IKEEXT": {"status": "Stopped"}}}, None),
    ("bfe_stopped", {"services": {"BFE": {"status": "Stopped"}}}, 827),
    ("policyagent_stopped", {"services": {"PolicyAgent": {"status": "Stopped"}}}, 791),
    ("udp_500_blocked_on_path", {"network": {"server_udp_reachable": [4500, 1701]}}, 809),
    ("udp_500_blocked_by_client_rule", block_rule(), 809),
    ("udp_500_blocked_by_gpo_rule", block_rule(policy_store="GroupPolicy"), 809),
    ("disabled_block_rule_has_no_effect", block_rule(enabled=False), None),
    ("inbound_block_rule_has_no_effect", block_rule(direction="Inbound"), None),
    ("udp_1701_blocked_on_path_has_no_effect", {"network": {"server_udp_reachable": [500, 4500]}}, None),
    ("no_nat_value_0", nat(False, False, 0), None),
    ("client_nat_value_absent", nat(True, False), None),
    ("server_nat_value_absent", nat(False, True), 809),
    ("server_nat_value_0", nat(False, True, 0), 809),
    ("server_nat_value_1", nat(False, True, 1), None),
    ("server_nat_value_2", nat(False, True, 2), None),
    ("both_nat_value_0", nat(True, True, 0), 809),
    ("both_nat_value_1", nat(True, True, 1), 809),
    ("both_nat_value_2", nat(True, True, 2), None),
    (
        "nat_with_udp_4500_blocked",
        {**nat(True, False), "network": {"client_nat": True, "server_udp_reachable": [500, 1701]}},
        789,
    ),
    ("no_nat_udp_4500_blocked_has_no_effect", {"network": {"server_udp_reachable": [500, 1701]}}, None),
    ("ike_proposal_mismatch", conn(ipsec_custom_policy=WEAK_POLICY), 788),
    ("custom_policy_the_server_accepts", conn(ipsec_custom_policy=STRONG_POLICY), None),
    (
        "esp_proposal_mismatch",
        conn(ipsec_custom_policy={**STRONG_POLICY, "cipher_transform_constants": "DES3"}),
        788,
    ),
    (
        "ikev2_proposal_mismatch",
        {**conn(tunnel_type="Ikev2", ipsec_custom_policy=WEAK_POLICY),
         "vpn_server": {"tunnel_types": ["Ikev2"]}},
        13868,
    ),
    ("psk_mismatch", conn(psk="OldPsk"), 789),
    ("auth_method_mismatch", conn(authentication_method=["Pap"]), 691),
    ("wrong_password", conn(password="wrong"), 691),
    ("unknown_user", conn(username="nobody"), 691),
    # Order: the device (IPsec) stage is decided before the user is ever authenticated.
    ("psk_mismatch_before_wrong_password", conn(psk="OldPsk", password="wrong"), 789),
    (
        "prohibit_ipsec_before_psk",
        {**conn(psk="OldPsk"), "registry": {RASMAN: {"ProhibitIpSec": 1}}},
        809,
    ),
    (
        "dns_before_services",
        {"network": {"dns": {"vpn.example.co.jp": None}},
         "services": {"IKEEXT": {"status": "Stopped", "start_type": "Disabled"}}},
        868,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "code"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_dial_outcome_follows_the_causal_table(spec: dict[str, Any], code: int | None) -> None:
    host = make_host(spec)
    assert dial.evaluate(host, host.connection()).code == code
    facts = dial.dial(host)
    assert facts["connected"] is (code is None)
    assert facts["error_code"] == code


def test_evaluate_changes_nothing_but_dial_starts_trigger_services() -> None:
    host = make_host({"services": {"IKEEXT": {"status": "Stopped"}}})
    dial.evaluate(host, host.connection())
    assert host.service("IKEEXT").status == "Stopped"
    assert not host.events
    dial.dial(host)
    assert host.service("IKEEXT").status == "Running"


def test_registry_fix_changes_the_dial_only_after_a_reboot() -> None:
    host = make_host(nat(True, True))
    key = host.registry[POLICY_AGENT_KEY.lower()]
    key.values[ASSUME_UDP.lower()] = RegValue(ASSUME_UDP, "DWord", 2)
    assert dial.dial(host)["error_code"] == 809
    reboot_now(host)
    assert dial.dial(host)["connected"] is True


def test_value_present_at_profile_load_counts_as_booted_with() -> None:
    host = make_host(nat(True, True, 2))
    assert dial.dial(host)["connected"] is True


def test_failed_dial_writes_20221_then_20227_with_its_code_in_japanese() -> None:
    host = make_host(conn(psk="OldPsk"))
    facts = dial.dial(host)
    started, failed = host.events
    assert (started.id, failed.id, failed.code) == (20221, 20227, 789)
    assert "エラー コードは 789 です" in failed.message
    assert started.message.split(":")[0] == failed.message.split(":")[0]  # same CoId
    assert messages.error_text(789, "ja-JP") in facts["message"]


def test_successful_dial_writes_20225_in_english_on_an_en_us_host() -> None:
    host = make_host({"locale": "en-US"})
    facts = dial.dial(host)
    assert [e.id for e in host.events] == [20221, 20225]
    assert "has successfully connected" in host.events[1].message
    assert facts["message"].startswith("Connecting to Corp VPN...")


def test_seed_wording_is_used_for_789_and_791() -> None:
    assert messages.error_text(789, "ja-JP") == (
        "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが"
        "検出されたため、L2TP接続に失敗しました。"
    )
    assert messages.error_text(791, "ja-JP").startswith("この接続のセキュリティ ポリシーが")
    assert set(messages.JA_VERIFIED) == {789, 791}


def test_every_code_the_model_gives_has_both_texts() -> None:
    codes = {c for _, _, c in ROWS if c is not None} | {13801}
    for code in codes:
        assert code in messages.EN and code in messages.JA, code


def test_a_dial_from_the_winrm_account_has_no_user_credentials() -> None:
    """The portal's account dials without the employee's saved credentials (D-4): IPsec
    comes up, PPP authentication cannot; a test trusting such a dial must fail."""
    host = make_host({})
    assert dial.dial(host, as_employee=False)["error_code"] == 691
    assert dial.dial(host, as_employee=True)["connected"] is True
    broken = make_host(conn(psk="OldPsk"))
    assert dial.dial(broken, as_employee=False)["error_code"] == 789  # IPsec faults still show


def test_a_per_user_connection_is_invisible_to_the_winrm_account() -> None:
    host = make_host(conn(all_user_connection=False))
    with pytest.raises(LookupError):
        dial.dial(host, as_employee=False)
    assert dial.dial(host, as_employee=True)["connected"] is True


def test_a_profile_can_record_an_attempt_made_when_the_state_differed() -> None:
    host = make_host({"events": [{"dial": True, "minutes_ago": 1560, "code": 789}]})
    assert [(e.id, e.code) for e in host.events] == [(20221, None), (20227, 789)]
    assert dial.dial(host)["connected"] is True
