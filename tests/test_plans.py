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
