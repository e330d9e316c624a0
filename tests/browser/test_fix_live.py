"""Confirm -> live fix -> restart -> Fixed, in Chromium, on a winsim host of the test's own."""

import re

import pytest
from playwright.sync_api import expect

from diagnostics.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_employee_confirms_a_fix_and_watches_it_restart_and_verify(
    page, web_server, employee, kb, fresh_machines, use_worker_queue
):
    machine = fresh_machines["demo-nat-t"]
    page.goto(web_server + "/login/")
    page.fill("input[name=username]", "employee")
    page.fill("input[name=password]", "pw-employee-1")
    page.click("main button[type=submit]")
    page.goto(f"{web_server}/articles/l2tp-ipsec-psk-negotiation/?machine={machine.pk}")
    page.click("#diagnose")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    page.locator("#fix-button").click(timeout=30_000)

    # The confirmation shows the setting, its current value and the new one, before anything runs.
    offer = page.locator("fieldset.offer", has=page.locator("input[value=set-nat-traversal-2]"))
    expect(offer).to_contain_text("AssumeUDPEncapsulationContextOnSendRule")
    expect(offer.locator("td strong")).to_have_text("2")
    for other in page.locator("input[name=fix]").all():
        if other.get_attribute("value") != "set-nat-traversal-2":
            other.uncheck()
    assert not Job.objects.filter(kind="fix").exists()
    page.click("#apply-fixes")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    page.evaluate("window.__samePage = true")

    expect(page.locator("#job-progress .status")).to_have_text(
        re.compile("再起動中|Restarting"), timeout=30_000
    )
    verdict = page.locator("#job-verdict h2")
    expect(verdict).to_have_text(re.compile("修正済み|Fixed"), timeout=90_000)
    assert page.evaluate("window.__samePage") is True
    expect(page.locator("tr.step[data-verdict=pending]")).to_have_count(0)
    job = Job.objects.get(kind="fix")
    assert job.outcome == Job.Outcome.FIXED
    expect(page.locator("#rollback-button")).to_be_visible()
