"""Issue #16, finding 2: a fix may touch only the registry values and services listed in code.

A `Run`-key step in a no-approval fix would run a program on every machine that applies it.
The one validator (catalog.step_problems) refuses it in the admin and in kb_import with one
message, and the plan builder refuses it again should one ever reach the database.
"""

from __future__ import annotations

import pytest

from diagnostics import catalog, kb, plans
from diagnostics.models import Fix
from tests.conftest import ROOT
from tests.test_kb_admin import (
    SEED,
    _admin_refusal,
    _change_form_data,
    _inline_index,
    _kb_import_refusal,
    _shipped,
)

RUN_KEY = {
    "kind": "set_registry_value",
    "args": {
        "path": "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
        "name": "Updater",
        "type": "String",
        "value": "C:\\Users\\Public\\evil.exe",
    },
}
REFUSAL = (
    "steps[0].args: set_registry_value may not write "
    "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater: fixes may change only "
)


@pytest.mark.django_db
def test_admin_and_kb_import_refuse_a_run_key_step_with_one_message(client, kb_admin, kb, tmp_path):
    shipped = _shipped()
    fix = next(f for f in shipped["fixes"] if not f["needs_approval"])

    def change(data):
        data["fixes"][0]["steps"] = [RUN_KEY]

    assert f"fixes[0].{REFUSAL}" in _kb_import_refusal(tmp_path, change)

    client.force_login(kb_admin)
    article = kb[SEED]
    j = _inline_index(_change_form_data(client, article), "fixes", fix["key"])
    page = _admin_refusal(client, article, f"fixes-{j}-steps", [RUN_KEY])
    assert REFUSAL in page
    assert Fix.objects.get(article=article, key=fix["key"]).steps == fix["steps"]


@pytest.mark.parametrize(
    ("step", "refusal"),
    [
        (
            {"kind": "set_service", "args": {"name": "WinDefend", "action": "stop"}},
            "set_service may not change the service 'WinDefend'",
        ),
        (
            {
                "kind": "set_registry_value",
                "args": {
                    "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
                    "name": "AssumeUDPEncapsulationContextOnSendRule",
                    "type": "DWord",
                    "value": 7,
                },
            },
            "may write AssumeUDPEncapsulationContextOnSendRule only as DWord 0, 1, 2",
        ),
        (
            {
                "kind": "set_registry_value",
                "args": {
                    "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters",
                    "name": "ProhibitIpSec",
                    "type": "DWord",
                    "value": True,
                },
            },
            "may write ProhibitIpSec only as DWord 0, 1",
        ),
        (
            {
                "kind": "set_registry_value",
                "args": {
                    "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent\\..\\..\\X",
                    "name": "ImagePath",
                    "absent": True,
                },
            },
            "may not write HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent\\..",
        ),
    ],
)
def test_a_fix_outside_the_allow_list_is_refused_with_what_it_would_touch(step, refusal):
    problems = catalog.fix_steps_problems("steps", [step])
    assert len(problems) == 1 and refusal in problems[0], problems


def test_every_shipped_article_still_validates_against_the_allow_list():
    articles = kb.load_dir(ROOT / "kb")
    assert articles
    assert {a["slug"]: kb.validate(a) for a in articles if kb.validate(a)} == {}


def test_a_run_key_step_that_reached_the_database_is_never_sent():
    step = plans.PlanStep("f1", RUN_KEY["kind"], RUN_KEY["args"])
    with pytest.raises(plans.PlanError, match="may not write HKLM:"):
        plans.build_plan(1, [step])


def test_a_roll_back_may_restore_any_earlier_value_of_an_allowed_key():
    # A machine had 5 before the fix wrote 2: undoing the fix writes 5 back.
    args = {
        "path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent",
        "name": "AssumeUDPEncapsulationContextOnSendRule",
        "type": "DWord",
        "value": 5,
    }
    sent, _ = plans.build_plan(1, [plans.PlanStep("r1", "set_registry_value", args)])
    assert sent["steps"][0]["args"]["value"] == 5
