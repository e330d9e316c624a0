"""The plan builder and the evaluator: pure functions, no database."""

import re
from pathlib import Path

import pytest

from diagnostics import catalog
from diagnostics.plans import (
    MASK,
    PlanError,
    PlanStep,
    build_plan,
    evaluate,
    fact_at,
    failed_conditions,
    parse_line,
)

RUNNING = [{"fact": "status", "op": "eq", "value": "Running"}]


def test_check_passes_when_every_condition_holds():
    line = {"step": "c1", "ok": True, "facts": {"status": "Running", "start_type": "Manual"}}
    assert evaluate(RUNNING, line) == ("pass", [])


def test_check_fails_with_the_actual_value_named():
    line = {"step": "c1", "ok": True, "facts": {"status": "Stopped"}}
    verdict, failed = evaluate(RUNNING, line)
    assert verdict == "fail"
    assert failed == [{"fact": "status", "op": "eq", "value": "Running", "actual": "Stopped"}]


def test_step_that_could_not_run_is_an_error_not_a_failure():
    assert evaluate(RUNNING, {"step": "c1", "ok": False, "error": "boom"}) == ("error", [])


@pytest.mark.parametrize(
    ("op", "value", "fact", "holds"),
    [
        ("in", [None, 0], None, True),
        ("in", [None, 0], 1, False),
        ("not_in", ["Disabled"], "Manual", True),
        ("gte", 2, 2, True),
        ("gte", 2, None, False),
        ("gte", 2, "2", False),
        ("lt", 5, True, False),
        ("empty", None, [], True),
        ("empty", None, [500], False),
        ("not_empty", None, ["x"], True),
        ("contains", "MSChapv2", ["Chap", "MSChapv2"], True),
        ("not_contains", "Pap", ["Pap"], False),
        ("true", None, True, True),
        ("false", None, 0, False),
    ],
)
def test_operators(op, value, fact, holds):
    expect = [{"fact": "x", "op": op, "value": value}]
    assert (failed_conditions(expect, {"x": fact}) == []) is holds


def test_dotted_fact_paths_read_missing_parts_as_none():
    facts = {"ipsec_custom_policy": {"dh_group": "Group14"}}
    assert fact_at(facts, "ipsec_custom_policy.dh_group") == "Group14"
    assert fact_at(facts, "ipsec_custom_policy.pfs_group") is None
    assert fact_at({"ipsec_custom_policy": None}, "ipsec_custom_policy.dh_group") is None


def test_unknown_operator_is_refused():
    problems = catalog.expect_problems("expect", "service", [{"fact": "status", "op": "matches"}])
    assert problems == [f"expect[0].op: 'matches' is not one of {', '.join(catalog.OPERATORS)}"]


@pytest.mark.parametrize(
    "cond, problem",
    [
        ({"fact": "state", "op": "eq", "value": "Running"}, "service has no fact 'state'"),
        ({"fact": "status", "op": "in", "value": "Running"}, "in needs a list"),
        ({"fact": "status", "op": "gt", "value": "3"}, "gt needs a number"),
        ({"fact": "status", "op": "gt", "value": True}, "gt needs a number"),
        ({"fact": "status", "op": "eq"}, "eq needs a value"),
        ({"fact": "status", "op": "empty", "value": 1}, "empty takes no value"),
        ({"fact": "status", "op": "eq", "value": 1, "why": "x"}, "unknown key 'why'"),
    ],
)
def test_an_expectation_that_could_never_pass_is_refused(cond, problem):
    problems = catalog.expect_problems("expect", "service", [cond])
    assert len(problems) == 1 and problems[0].endswith(problem), problems


def test_the_kb_format_document_lists_exactly_the_catalogs_operators():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "kb-format.md").read_text()
    table = doc.split("## Expectation operators", 1)[1].split("\n\n", 2)[2].split("\n\n")[0]
    listed = set(re.findall(r"`([a-z_]+)`", "\n".join(r.split("|")[1] for r in table.splitlines())))
    assert listed == set(catalog.OPERATORS)


def test_plan_carries_validated_steps_in_order():
    plan, shown = build_plan(
        7,
        [
            PlanStep("c1", "service", {"name": "PolicyAgent"}),
            PlanStep("c2", "firewall_rules", {"protocol": "UDP", "ports": [500, 4500]}),
        ],
    )
    assert plan == shown
    assert plan["version"] == 1 and plan["job"] == "7"
    assert [s["id"] for s in plan["steps"]] == ["c1", "c2"]


def test_plan_refuses_a_step_outside_the_catalog():
    with pytest.raises(PlanError, match="unknown step kind"):
        build_plan(1, [PlanStep("c1", "run_script", {"script": "Remove-Item C:\\ -Recurse"})])


def test_plan_refuses_bad_args_before_anything_is_sent():
    with pytest.raises(PlanError, match="not a valid value"):
        build_plan(1, [PlanStep("c1", "service", {"name": "x'; Stop-Computer; '"})])


def test_secret_reaches_the_sent_plan_only():
    steps = [PlanStep("f1", "set_vpn_psk", {"psk": {"secret": "company-l2tp-psk"}})]
    sent, shown = build_plan(1, steps, resolve_secret=lambda name: "s3cr3t-PSK")
    assert sent["steps"][0]["args"]["psk"] == "s3cr3t-PSK"
    assert shown["steps"][0]["args"]["psk"] == {"secret": "company-l2tp-psk"}
    assert "s3cr3t-PSK" not in repr(shown)


def test_a_literal_secret_argument_is_masked_in_the_shown_plan():
    _, shown = build_plan(1, [PlanStep("f1", "set_vpn_psk", {"psk": "typed-in-kb"})])
    assert shown["steps"][0]["args"]["psk"] == MASK


def test_duplicate_step_ids_are_refused():
    with pytest.raises(PlanError, match="duplicate"):
        build_plan(1, [PlanStep("c1", "os_info", {}), PlanStep("c1", "os_info", {})])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"step": "c9", "ok": True, "facts": {}}, "unknown step id 'c9'"),
        ({"step": "c1", "facts": {}}, "missing 'ok'"),
        ({"step": "c1", "ok": True}, "missing 'facts'"),
        ({"step": "c1", "ok": True, "facts": [1, 2]}, "'facts' is not an object"),
    ],
)
def test_lines_that_break_the_protocol_are_named(line, problem):
    assert parse_line(line, {"c1"}) == problem


def test_good_lines_pass_the_protocol_check():
    assert parse_line({"step": "c1", "ok": True, "facts": {}}, {"c1"}) is None
    assert parse_line({"end": True, "steps": 1}, {"c1"}) is None


# --- "cannot tell" (issue #10) ---------------------------------------------------------------

from diagnostics.catalog import CHECK_KINDS  # noqa: E402
from diagnostics.plans import (  # noqa: E402
    PREFLIGHT_STEPS,
    capabilities,
    diagnosis_outcome,
    grant_command,
    preflight_plan,
)

DENIED = {"reason": "access_denied", "need": "event_log_readers"}


def test_a_step_that_could_not_tell_is_unknown_not_an_error_and_not_a_pass():
    line = {"step": "c1", "ok": False, "error": "denied", "cannot": DENIED}
    assert evaluate(RUNNING, line) == ("unknown", [])


def test_a_learnt_fact_that_breaks_a_condition_fails_even_when_the_rest_is_unknown():
    line = {
        "step": "c1", "ok": False, "error": "denied", "cannot": DENIED,
        "facts": {"exists": True, "start_type": "Disabled"},
    }  # fmt: skip
    expect = [*RUNNING, {"fact": "start_type", "op": "ne", "value": "Disabled"}]
    verdict, failed = evaluate(expect, line)
    assert verdict == "fail" and [f["fact"] for f in failed] == ["start_type"]


def test_learnt_facts_that_hold_still_leave_the_step_unknown():
    line = {"step": "c1", "ok": False, "cannot": DENIED, "facts": {"start_type": "Manual"}}
    expect = [*RUNNING, {"fact": "start_type", "op": "ne", "value": "Disabled"}]
    assert evaluate(expect, line) == ("unknown", [])


@pytest.mark.parametrize(
    ("verdicts", "outcome"),
    [
        (["pass", "pass"], "healthy"),
        ([], "healthy"),
        (["pass", "unknown"], "unknown"),
        (["pass", "error"], "unknown"),
        (["unknown", "fail"], "problems"),
        (["fail"], "problems"),
    ],
)
def test_a_diagnosis_with_any_unknown_or_error_step_never_ends_healthy(verdicts, outcome):
    assert diagnosis_outcome(verdicts) == outcome


def test_parse_line_accepts_known_cannot_reasons_only():
    known = {"c1"}
    assert parse_line({"step": "c1", "ok": False, "error": "x", "cannot": DENIED}, known) is None
    bad = {"step": "c1", "ok": False, "error": "x", "cannot": {"reason": "whatever"}}
    assert parse_line(bad, known) == "'cannot' is not a known reason"


def test_preflight_has_one_read_only_step_of_every_check_kind_but_the_dial():
    kinds = [s["kind"] for s in preflight_plan()["steps"]]
    assert sorted(kinds) == sorted(k for k in CHECK_KINDS if k != "vpn_dial")
    assert all(len(s.id) <= 20 for s in PREFLIGHT_STEPS)  # StepResult.step_id


def test_capabilities_name_the_missing_right_per_kind():
    lines = [{"step": s.id, "ok": True, "facts": {}} for s in PREFLIGHT_STEPS]
    lines[-1] = {"step": "p-vpn_events", "ok": False, "error": "denied", "cannot": DENIED}
    table = {row["kind"]: row for row in capabilities(lines)}
    assert table["vpn_events"]["status"] == "cannot"
    assert table["vpn_events"]["need"] == "event_log_readers"
    assert table["os_info"]["status"] == "works"
    assert table["vpn_dial"]["status"] == "untested"


def test_capabilities_after_a_language_mode_fatal_say_no_kind_works():
    table = capabilities([], fatal="language_mode: PowerShell runs in ConstrainedLanguage mode")
    assert {r["status"] for r in table if r["kind"] != "vpn_dial"} == {"cannot"}
    assert {r["need"] for r in table if r["kind"] != "vpn_dial"} == {"full_language"}


def test_grant_command_names_the_account_by_sid_group_and_strips_quotes():
    command = grant_command("event_log_readers", "kaiketsu'; rm")
    assert command == "Add-LocalGroupMember -SID 'S-1-5-32-573' -Member 'kaiketsu; rm'"
    assert grant_command("nothing", "x") == ""
