"""scripts/windows/selftest.ps1: the administrator's self-test runs the portal's own runner over
the seed article's read-only checks and the preflight, and stays Windows PowerShell 5.1.

The plan is embedded in the script (a Windows admin has no Python); this test keeps it equal to
the one built here from the KB file and plans.PREFLIGHT_STEPS. After changing either, print the
new line with ``.venv/bin/python -m tests.test_selftest`` and paste it into the script.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from diagnostics.catalog import validate_args
from diagnostics.plans import PREFLIGHT_STEPS
from tests.test_powershell import ps7_only_syntax, syntax_errors

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "windows" / "selftest.ps1"
SEED = ROOT / "kb" / "l2tp-ipsec-psk-negotiation.yaml"


def selftest_plan() -> dict:
    """The seed article's checks (c1, c2, ... as on the job page) minus the dial, then the
    preflight's one step of every check kind."""
    checks = yaml.safe_load(SEED.read_text(encoding="utf-8"))["checks"]
    steps = [
        {"id": f"c{i}", "kind": c["kind"], "args": validate_args(c["kind"], c.get("args"))}
        for i, c in enumerate(checks, 1)
        if c["kind"] != "vpn_dial"
    ]
    steps += [{"id": s.id, "kind": s.kind, "args": s.args} for s in PREFLIGHT_STEPS]
    return {"version": 1, "job": "selftest", "steps": steps}


def plan_line() -> str:
    return json.dumps(selftest_plan(), ensure_ascii=True, separators=(",", ":"))


def embedded_plan() -> str:
    text = SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"\$PlanJson = @'\r?\n(.*?)\r?\n'@", text, re.S)
    assert match, "selftest.ps1 must hold the plan in a $PlanJson = @'...'@ here-string"
    return match.group(1)


def test_the_embedded_plan_is_the_seed_articles_read_only_checks_and_the_preflight():
    assert json.loads(embedded_plan()) == selftest_plan(), (
        "run: .venv/bin/python -m tests.test_selftest"
    )


def test_the_self_test_changes_nothing_on_the_machine():
    kinds = {s["kind"] for s in selftest_plan()["steps"]}
    assert kinds.isdisjoint({"vpn_dial", "set_service", "set_registry_value", "set_vpn_connection",
                             "set_vpn_ipsec", "set_vpn_psk", "schedule_reboot"})  # fmt: skip


def test_the_self_test_is_windows_powershell_51_and_ascii():
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.isascii()
    assert syntax_errors(text) == []
    assert ps7_only_syntax(text) == []
    # It runs the repository's own bootstrap and runner, exactly as the portal sends them.
    assert "diagnostics\\powershell\\runner.ps1" in text
    assert "diagnostics\\powershell\\bootstrap.ps1" in text
    assert "-EncodedCommand" in text


if __name__ == "__main__":
    print(plan_line())
