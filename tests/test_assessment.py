"""Evidence and causes -> the fixes a diagnosis may offer (issue #9): pure, no database."""

from datetime import UTC, datetime, timedelta

import pytest

from diagnostics.plans import (
    CauseInput,
    CauseStatus,
    Evidence,
    EvidenceState,
    assess,
    read_evidence,
)

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _events(*events: tuple[int, float, int | None], name: str = "社内VPN") -> dict:
    """Newest first, as the runner lists them: (id, minutes ago, code)."""
    rows = [
        {"id": i, "time": _at(m), "connection": name, "code": c, "message": ""}
        for i, m, c in sorted(events, key=lambda e: e[1])
    ]
    return {"events": rows, "count": len(rows), "last_error_code": None}


def test_a_recent_failure_with_nothing_after_it_is_current():
    ev = read_evidence(True, _events((20221, 12, None), (20227, 12, 789)), NOW)
    assert ev == Evidence(EvidenceState.FAILING, 789, 12, "社内VPN")
    assert ev.as_json()["last_error_code"] == 789 and ev.current


def test_a_failure_yesterday_with_no_attempt_since_is_unconfirmed():
    ev = read_evidence(True, _events((20227, 26 * 60, 789)), NOW)
    assert (ev.state, ev.code, ev.age_minutes) == (EvidenceState.UNCONFIRMED, 789, 1560)
    assert not ev.current


def test_a_failure_followed_by_a_success_is_not_current():
    ev = read_evidence(True, _events((20227, 26 * 60, 789), (20225, 10 * 60, None)), NOW)
    assert ev.state == EvidenceState.RECOVERED and ev.success_age_minutes == 600


def test_a_success_on_another_connection_does_not_clear_a_failure():
    facts = _events((20227, 5, 809))
    facts["events"].insert(0, {"id": 20225, "time": _at(1), "connection": "Other", "code": None})
    assert read_evidence(True, facts, NOW).state == EvidenceState.FAILING


def test_unreadable_events_are_unknown_not_healthy():
    assert read_evidence(False, None, NOW).state == EvidenceState.UNKNOWN
    result = assess([], {}, read_evidence(False, None, NOW))
    assert result.outcome == "problems" and result.fixes == []


def test_only_successes_or_nothing_logged():
    assert read_evidence(True, _events((20225, 3, None)), NOW).state == EvidenceState.WORKING
    assert read_evidence(True, _events(), NOW).state == EvidenceState.NONE


NAT = CauseInput(
    "nat-traversal-registry",
    (809, 789),
    "fail",
    when=(
        {"fact": "evidence.code", "op": "in", "value": [809, 789]},
        {"fact": "vpn-connection.server_address", "op": "in", "value": ["vpn-nat.example"]},
    ),
    fix="set-nat-traversal-2",
)
FIREWALL = CauseInput("firewall-udp-ports", (809, 789), "pass")
IKEEXT = CauseInput("ikeext-running", (827,), "pass", fix="start-ikeext")
PSK = CauseInput("psk", (789, 791), fix="reset-company-psk", inferred=True)
BEHIND_NAT = {"vpn-connection": {"server_address": "vpn-nat.example"}}
DIRECT = {"vpn-connection": {"server_address": "vpn.example"}}


def _failing(code):
    return Evidence(EvidenceState.FAILING, code, 5, "VPN")


def test_a_stock_machine_that_connects_gets_no_nat_fix():
    working = Evidence(EvidenceState.WORKING)
    result = assess([NAT, FIREWALL, IKEEXT, PSK], DIRECT, working)
    assert result.outcome == "healthy" and result.fixes == []
    assert result.findings[0].status == CauseStatus.NOT_APPLICABLE


def test_a_missing_nat_value_is_proven_only_behind_nat_with_a_fitting_code():
    assert assess([NAT], BEHIND_NAT, _failing(809)).fixes == ["set-nat-traversal-2"]
    assert assess([NAT], DIRECT, _failing(809)).fixes == []
    assert assess([NAT], BEHIND_NAT, _failing(827)).fixes == []


def test_a_stale_failure_offers_nothing_and_looks_healthy():
    stale = Evidence(EvidenceState.UNCONFIRMED, 789, 1560, "VPN")
    result = assess([NAT, FIREWALL, IKEEXT, PSK], BEHIND_NAT, stale)
    assert (result.outcome, result.fixes) == ("healthy", [])


def test_the_psk_is_proven_only_when_every_other_789_cause_is_ruled_out():
    assert assess([FIREWALL, IKEEXT, PSK], DIRECT, _failing(789)).fixes == ["reset-company-psk"]
    blocked = CauseInput("firewall-udp-ports", (809, 789), "fail")
    result = assess([blocked, IKEEXT, PSK], DIRECT, _failing(789))
    assert result.fixes == [] and result.findings[-1].status == CauseStatus.NOT_PROVEN
    unreadable = CauseInput("firewall-udp-ports", (809, 789), "error")
    result = assess([unreadable, IKEEXT, PSK], DIRECT, _failing(789))
    assert result.findings[-1].status == CauseStatus.CANNOT_TELL and result.fixes == []


@pytest.mark.parametrize("code", [809, 827, 791, 868])
def test_the_psk_is_never_a_catch_all(code):
    psk = CauseInput("psk", (789,), fix="reset-company-psk", inferred=True)
    assert "reset-company-psk" not in assess([FIREWALL, IKEEXT, psk], DIRECT, _failing(code)).fixes


def test_nat_masking_the_psk_offers_the_nat_fix_first():
    result = assess([NAT, FIREWALL, PSK], BEHIND_NAT, _failing(809))
    assert result.fixes == ["set-nat-traversal-2"]


def test_a_cause_that_does_not_fit_the_current_code_is_suspect_not_fixed():
    disabled = CauseInput("ikeext-running", (827,), "fail", fix="start-ikeext")
    result = assess([disabled], {}, _failing(809))
    assert result.findings[0].status == CauseStatus.SUSPECT and result.fixes == []
    assert result.outcome == "problems"


def test_a_condition_on_a_check_that_could_not_run_cannot_tell():
    unreadable = CauseInput("vpn-connection", (), "error")
    result = assess([unreadable, NAT], BEHIND_NAT, _failing(809))
    assert result.findings[1].status == CauseStatus.CANNOT_TELL and result.fixes == []


def test_the_employees_attempt_is_read_from_events_newer_than_the_baseline():
    from diagnostics.plans import attempt_since

    baseline = _events((20227, 30, 809))
    assert attempt_since(baseline, baseline, "社内VPN") is None
    later = _events((20227, 30, 809), (20227, 1, 789))
    assert attempt_since(baseline, later, "社内VPN") == ("failed", 789)
    later = _events((20227, 30, 809), (20225, 0, None))
    assert attempt_since(baseline, later, "社内VPN") == ("connected", None)
    assert attempt_since(baseline, later, "Other VPN") is None


def test_every_undoable_fix_kind_has_a_read_only_read_back():
    from diagnostics.plans import readback, state_of

    args = {"path": "HKLM:\\SOFTWARE\\X", "name": "V", "type": "DWord", "value": 2}
    assert readback("set_registry_value", args) == (
        "registry_value",
        {"path": "HKLM:\\SOFTWARE\\X", "name": "V"},
    )
    assert readback("set_service", {"name": "IKEEXT", "action": "start"}) == (
        "service",
        {"name": "IKEEXT"},
    )
    assert readback("set_vpn_psk", {"psk": "x"}) is None
    facts = {"exists": True, "name": "IKEEXT", "status": "Running", "start_type": "Manual"}
    assert state_of("set_service", facts) == {"status": "Running", "start_type": "Manual"}
