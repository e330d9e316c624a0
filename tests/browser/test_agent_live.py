"""A laptop at home, reached only through its agent, in Chromium (issue #14): the helpdesk
makes an enrolment code, the agent enrols with it; the employee presses Diagnose while the PC
is off, sees "waiting for your PC to check in" live, the PC comes online and the checks
stream in; the fix restarts the PC and is verified after the agent checks in again."""

import re
import urllib.parse

import pytest
from playwright.sync_api import expect

from diagnostics.models import Job, Machine
from tests.browser.conftest import log_in
from tests.conftest import AT_HOME, _sim_post, agent_machines, wait_for_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_laptop_at_home_is_enrolled_diagnosed_fixed_and_verified_over_its_agent(
    browser, page, web_server, employee, helpdesk, kb, home_fleet, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[AT_HOME]
    machine.agent_key_hash = ""
    machine.save()

    # The helpdesk gets a one-time code in the console; the installer takes it.
    desk = browser.new_context(locale="ja-JP").new_page()
    log_in(desk, web_server, "helpdesk", "pw-helpdesk-1")
    desk.goto(f"{web_server}/console/machines/?q={AT_HOME}")
    desk.locator(f"#machine-{machine.pk} button[value=token]").click()
    code = re.search(r": (\S+)$", desk.locator("p.flash").first.inner_text().strip()).group(1)
    desk.context.close()
    _sim_post(machine, "/sim/fault?agent_offline=1")  # installed, but the PC is off for now
    query = urllib.parse.urlencode({"portal": web_server, "token": code})
    assert _sim_post(machine, f"/sim/agent?{query}")[0] == 204

    log_in(page, web_server, "employee", "pw-employee-1")
    page.goto(f"{web_server}/articles/l2tp-ipsec-psk-negotiation/?machine={machine.pk}")
    expect(page.locator(f"option[value='{machine.pk}']")).to_contain_text("エージェント")
    page.click("#diagnose")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    expect(page.locator("#agent-waiting")).to_have_text("PC からの問い合わせを待っています…")
    expect(page.locator("#job-channel")).to_contain_text("エージェント")

    _sim_post(machine, "/sim/fault?agent_offline=0")  # the PC is switched on, at home
    expect(page.locator("#agent-waiting")).to_have_count(0, timeout=20_000)
    machine.refresh_from_db()
    assert machine.agent_enrolled and machine.agent_last_seen is not None
    expect(page.locator("#fix-button")).to_be_visible(timeout=40_000)
    assert page.locator("tr.step[data-verdict=fail]").count() >= 1  # streamed in, live
    page.locator("#fix-button").click()
    for other in page.locator("input[name=fix]").all():
        if other.get_attribute("value") != "set-nat-traversal-2":
            other.uncheck()
    page.locator("input[name=restart][value=now]").check()
    page.click("#apply-fixes")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))

    job = wait_for_job(Job.objects.get(kind="fix"), timeout=120, connect=True)
    assert job.outcome == Job.Outcome.FIXED, (job.error, job.note)
    expect(page.locator("#job-verdict h2")).to_have_text("修正済み")
    expect(page.locator("tr.step[data-verdict=pending]")).to_have_count(0)
    assert Machine.objects.get(pk=machine.pk).agent_boot.endswith("-boot-1")
