"""An employee goes from a pasted Japanese error to the root cause, live, in Chromium."""

import re

import pytest
from playwright.sync_api import expect

from diagnostics.models import Job
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEED_JA = (
    "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出された"
    "ため、L2TP接続に失敗しました。"
)


def test_employee_watches_a_diagnosis_arrive_step_by_step(
    page, web_server, employee, kb, demo_machines, use_worker_queue
):
    log_in(page, web_server, "employee", "pw-employee-1")

    page.fill("#paste", SEED_JA)
    page.select_option("#machine", label="demo-policyagent-stopped")
    best = page.locator("ol.matches li.best a")  # suggestions arrive while typing (htmx)
    expect(best).to_contain_text("L2TP/IPsec")
    best.click()
    page.add_init_script(RECORD_DONE_ROWS)  # from the job page's first paint on
    page.click("#diagnose")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    page.evaluate("window.__samePage = true")
    assert page.locator("tr.step").count() > 3
    expect(page.locator("#job-verdict h2")).to_be_visible(timeout=30_000)

    assert page.evaluate("window.__samePage") is True  # never reloaded
    expect(page.locator("tr.step[data-verdict=pending]")).to_have_count(0)
    verdict = page.locator("#job-verdict")
    expect(verdict).to_contain_text("IPsec Policy Agent")
    expect(page.locator("#job-progress .status")).to_have_text("完了")
    job = Job.objects.get()
    assert job.status == Job.Status.DONE and job.machine.name == "demo-policyagent-stopped"
    # Rows turned done one batch after another while others still waited, never backwards:
    # every change the page went through was recorded, none sampled.
    done = page.evaluate("window.__doneRows")
    total = job.steps.count()
    between = [n for n in done if 0 < n < total]
    assert len(between) >= 3 and done == sorted(done) and done[-1] == total, done


RECORD_DONE_ROWS = """(() => {
  window.__doneRows = [];
  new MutationObserver(() => {
    const done = document.querySelectorAll("tr.step:not([data-verdict=pending])").length;
    if (done !== window.__doneRows.at(-1)) window.__doneRows.push(done);
  }).observe(document, {subtree: true, childList: true, attributes: true});
})();"""


def test_other_employee_gets_404_on_that_job(
    page, web_server, employee, other_employee, kb, demo_machines
):
    job = Job.objects.create(
        user=employee,
        machine=demo_machines["demo-policyagent-stopped"],
        article=kb["l2tp-ipsec-psk-negotiation"],
    )
    log_in(page, web_server, "other", "pw-other-1")
    response = page.goto(f"{web_server}/jobs/{job.pk}/")
    assert response.status == 404
