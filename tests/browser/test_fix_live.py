"""Confirm -> live fix -> restart -> Fixed, in Chromium, on a winsim host of the test's own."""

import re

import pytest
from playwright.sync_api import expect

from diagnostics.models import Job
from diagnostics.workflows import fixes
from tests.browser.conftest import log_in
from tests.conftest import diagnose, wait_for_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_employee_confirms_a_fix_and_watches_it_restart_and_verify(
    page, web_server, employee, kb, fresh_machines, use_worker_queue
):
    machine = fresh_machines["demo-nat-t"]
    log_in(page, web_server, "employee", "pw-employee-1")
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
    # Record every (status, verdict box) pair the page shows, as it is swapped in: a short
    # state cannot slip between two polls of an assertion.
    page.evaluate(RECORD_STATES)

    job = wait_for_job(Job.objects.get(kind="fix"), timeout=90)
    assert job.outcome == Job.Outcome.FIXED, _record(job)
    expect(page.locator("#job-verdict h2")).to_have_text(re.compile("修正済み|Fixed"))
    expect(page.locator("#job-progress .status")).to_have_text("完了")
    seen = page.evaluate("window.__seen")
    assert seen is not None, "the page reloaded instead of following the job live"
    statuses = [status for status, _ in seen]
    # Restarting, shown live on the same page, in the bar and in the box; then verification.
    assert ["再起動中", "PC を再起動しています…"] in seen, seen
    after_restart = seen[seen.index(["再起動中", "PC を再起動しています…"]) + 1 :]
    assert any(s == "実行中" and "再起動" not in box for s, box in after_restart), seen
    assert statuses[-1] == "完了" and seen[-1][1] == "修正済み", seen
    expect(page.locator("tr.step[data-verdict=pending]")).to_have_count(0)
    expect(page.locator("#rollback-button")).to_be_visible()


def test_employee_sees_the_helpdesk_approve_a_fix_live(
    page, web_server, employee, helpdesk, kb, fresh_machines, company_psk, use_worker_queue
):
    seed = kb["l2tp-ipsec-psk-negotiation"]
    diagnosis = diagnose(fresh_machines["demo-psk-mismatch"], seed, employee)
    fix = fixes.request_fix(employee, diagnosis, ["reset-company-psk"])
    assert fix.status == Job.Status.APPROVAL

    log_in(page, web_server, "employee", "pw-employee-1")
    page.goto(f"{web_server}/jobs/{fix.pk}/")
    page.evaluate(RECORD_STATES)
    expect(page.locator("#job-verdict h2")).to_have_text(
        "ヘルプデスクによる修正の承認を待っています"
    )

    fixes.decide(fix, helpdesk, approve=True)
    fix = wait_for_job(fix, timeout=90)
    assert fix.outcome == Job.Outcome.FIXED, _record(fix)
    expect(page.locator("#job-verdict h2")).to_have_text("修正済み")
    seen = page.evaluate("window.__seen")
    assert seen is not None, "the page reloaded instead of following the job live"
    boxes = [box for _, box in seen]
    waiting = boxes.index("ヘルプデスクによる修正の承認を待っています")
    assert "実行中です… 各ステップが終わるたびに結果が表示されます。" in boxes[waiting:], seen


RECORD_STATES = """() => {
  window.__seen = [];
  const text = (selector) => document.querySelector(selector)?.textContent.trim() ?? "";
  const record = () => {
    const state = [text("#job-progress .status"), text("#job-verdict h2") || text("#job-verdict .hint")];
    const last = window.__seen.at(-1);
    if (!last || last[0] !== state[0] || last[1] !== state[1]) window.__seen.push(state);
  };
  record();
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _record(job: Job) -> str:
    steps = [(s.step_id, s.verdict, s.error[:200]) for s in job.steps.order_by("pk")]
    return f"status={job.status} outcome={job.outcome} error={job.error!r} steps={steps}"
