"""Buttons that arrive over the event stream work without a reload.

The end of a job is swapped in live; its forms (verify, restart now, roll back, hand over)
must carry a CSRF token like the page's own, or the click fails with 403.
"""

import re

import pytest
from playwright.sync_api import expect

from diagnostics.models import Job
from diagnostics.workflows import fixes
from tests.browser.conftest import log_in
from tests.conftest import diagnose, wait_for_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Remembers what the page held when it loaded, and survives only as long as no reload happens.
MARK_PAGE = """() => {
  window.__loaded_with = [...document.querySelectorAll("#job-verdict form")].map(f => f.action);
}"""


def _live_forms_carry_a_token(page) -> None:
    forms = page.locator("#job-verdict form")
    assert forms.count() >= 1
    for form in forms.all():
        token = form.locator("input[name=csrfmiddlewaretoken]")
        expect(token).to_have_count(1)
        assert len(token.get_attribute("value") or "") >= 32


def _click_live(page, button, posts_to: str, timeout: float = 60_000) -> None:
    """Click a button that arrived over the event stream (the page was not reloaded since
    MARK_PAGE): its form carries a token, so the POST is answered with a redirect, not 403."""
    expect(button).to_be_visible(timeout=timeout)
    assert page.evaluate("window.__loaded_with") is not None, "reloaded instead of live"
    _live_forms_carry_a_token(page)
    with page.expect_response(re.compile(posts_to)) as posted:
        button.click()
    assert posted.value.status == 302  # not 403 (CSRF token missing)


def _employee_fixes_nat_t_restarting_later(page, web_server, employee, kb, machines) -> Job:
    """The employee diagnoses demo-nat-t, ticks only the NAT-T fix on its page, leaves the
    restart for later and applies it; returns the diagnosis (the page is on the fix job)."""
    diagnosis = diagnose(machines["demo-nat-t"], kb["l2tp-ipsec-psk-negotiation"], employee)
    log_in(page, web_server, "employee", "pw-employee-1")
    page.goto(f"{web_server}/jobs/{diagnosis.pk}/fix/")
    for box in page.locator("input[name=fix]").all():
        box.set_checked(box.get_attribute("value") == "set-nat-traversal-2")
    page.check("input[name=restart][value=later]")
    page.click("#apply-fixes")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    return diagnosis


def test_buttons_that_arrive_live_verify_then_hand_the_job_over(
    page, web_server, employee, kb, fresh_machines, use_worker_queue
):
    _employee_fixes_nat_t_restarting_later(page, web_server, employee, kb, fresh_machines)
    page.evaluate(MARK_PAGE)
    fix = Job.objects.get(kind=Job.Kind.FIX)

    # The fix is applied and waits for the restart: the two buttons arrive over the stream.
    verify = page.get_by_role("button", name="再起動しました: 今すぐ検証する")
    expect(verify).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="今すぐ再起動する")).to_be_visible()
    loaded_with = page.evaluate("window.__loaded_with")
    assert loaded_with is not None, "the page reloaded instead of following the job live"
    assert not any(a.endswith("/resume/") for a in loaded_with), "not live: already there"
    _live_forms_carry_a_token(page)

    # The employee "restarted" without restarting: when asked, their own attempt still fails.
    with page.expect_response(re.compile(r"/resume/$")) as posted:
        verify.click()
    assert posted.value.status == 302  # not 403 (CSRF token missing)
    page.wait_for_url(f"{web_server}/jobs/{fix.pk}/")
    page.evaluate(MARK_PAGE)
    fix = wait_for_job(fix, timeout=90, connect=True)
    assert fix.outcome == Job.Outcome.NOT_FIXED

    # The end of the verification arrives live, with "hand it over" and "roll back".
    handover = page.get_by_role("button", name="ヘルプデスクに引き継ぐ")
    expect(handover).to_be_visible(timeout=30_000)
    expect(page.locator("#rollback-button")).to_be_visible()
    loaded_with = page.evaluate("window.__loaded_with")
    assert loaded_with is not None, "the page reloaded instead of following the job live"
    assert not any(a.endswith("/handover/") for a in loaded_with), "not live: already there"
    _live_forms_carry_a_token(page)

    with page.expect_response(re.compile(r"/handover/$")) as posted:
        handover.click()
    assert posted.value.status == 302
    expect(page.locator(".flash.success")).to_have_text(
        "このジョブを全記録とともにヘルプデスクに引き継ぎました。"
    )
    fix.refresh_from_db()
    assert fix.handed_over_at is not None


def test_verify_before_restarting_leads_to_a_restart_and_a_confirmed_roll_back(
    page, web_server, employee, kb, fresh_machines, use_worker_queue
):
    """Issue #11, item 6: "verify" pressed before restarting ends Not fixed; the page offers
    the restart it needed (a button that arrives live), and roll back asks first."""
    diagnosis = _employee_fixes_nat_t_restarting_later(
        page, web_server, employee, kb, fresh_machines
    )
    first = Job.objects.get(kind=Job.Kind.FIX)
    page.get_by_role("button", name="再起動しました: 今すぐ検証する").click(timeout=60_000)
    page.wait_for_url(f"{web_server}/jobs/{first.pk}/")
    page.evaluate(MARK_PAGE)
    first = wait_for_job(first, timeout=90, connect=True)
    assert first.outcome == Job.Outcome.NOT_FIXED  # 809 again: the value needs a restart

    retry = page.locator("#retry-button")
    expect(retry).to_be_visible(timeout=30_000)
    assert page.evaluate("window.__loaded_with") is not None, "reloaded instead of live"
    retry.click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    second = Job.objects.filter(kind=Job.Kind.FIX).exclude(pk=first.pk).get()
    assert page.url == f"{web_server}/jobs/{second.pk}/"
    assert (second.restart, second.parent_id) == (Job.Restart.NOW, diagnosis.pk)
    second = wait_for_job(second, timeout=120, connect=True)
    assert second.outcome == Job.Outcome.FIXED, second.note
    expect(page.locator("#job-verdict h2")).to_have_text("修正済み", timeout=30_000)

    # Roll back: the second fix found the value set; the first one's change is what goes back.
    page.locator("#rollback-button").click()
    page.wait_for_url(f"{web_server}/jobs/{first.pk}/rollback/")
    expect(page.locator("#rollback-steps")).to_contain_text(
        "AssumeUDPEncapsulationContextOnSendRule"
    )
    expect(page.locator("#rollback-kept")).to_have_count(0)  # nothing unrestorable here
    assert not Job.objects.filter(kind=Job.Kind.ROLLBACK).exists()  # asking changed nothing
    page.click("#confirm-rollback")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    rollback = wait_for_job(Job.objects.get(kind=Job.Kind.ROLLBACK), timeout=90)
    assert (rollback.parent_id, rollback.outcome) == (first.pk, Job.Outcome.ROLLED_BACK)
    expect(page.locator("#job-verdict h2")).to_have_text("ロールバック済み", timeout=30_000)
    # That fix's restart was left to the employee: the old value waits for the next restart.
    expect(page.locator("#rollback-waits")).to_be_visible()


def test_the_helpdesk_restarts_a_waiting_fix_and_is_asked_before_rolling_it_back(
    page, web_server, employee, helpdesk, kb, fresh_machines, use_worker_queue
):
    """The helpdesk sees an employee's job live too: its "restart now" works without a reload,
    and its roll back asks first, saying the machine restarts again."""
    seed = kb["l2tp-ipsec-psk-negotiation"]
    diagnosis = diagnose(fresh_machines["demo-nat-t"], seed, employee)
    log_in(page, web_server, "helpdesk", "pw-helpdesk-1")
    fix = fixes.request_fix(employee, diagnosis, ["set-nat-traversal-2"], Job.Restart.LATER)
    page.goto(f"{web_server}/jobs/{fix.pk}/")
    page.evaluate(MARK_PAGE)

    _click_live(page, page.get_by_role("button", name="今すぐ再起動する"), r"/resume/$")
    fix = wait_for_job(fix, timeout=120, connect=True)
    assert (fix.restart, fix.outcome) == (Job.Restart.NOW, Job.Outcome.FIXED), fix.note

    rollback = page.locator("#rollback-button")
    expect(rollback).to_be_visible(timeout=30_000)
    rollback.click()
    page.wait_for_url(f"{web_server}/jobs/{fix.pk}/rollback/")
    expect(page.locator("#rollback-restarts")).to_be_visible()  # the fix restarted: so will this
    page.get_by_role("link", name="キャンセル").click()
    page.wait_for_url(f"{web_server}/jobs/{fix.pk}/")
    assert not Job.objects.filter(kind=Job.Kind.ROLLBACK).exists()


def test_the_helpdesk_verifies_live_then_retries_with_a_restart(
    page, web_server, employee, helpdesk, kb, fresh_machines, use_worker_queue
):
    """The helpdesk, watching an employee's waiting fix, presses "verify" as it arrives live;
    the value needs a restart, so the verification ends Not fixed, and the "restart now and
    verify again" button that arrives in its place works too."""
    seed = kb["l2tp-ipsec-psk-negotiation"]
    diagnosis = diagnose(fresh_machines["demo-nat-t"], seed, employee)
    first = fixes.request_fix(employee, diagnosis, ["set-nat-traversal-2"], Job.Restart.LATER)
    log_in(page, web_server, "helpdesk", "pw-helpdesk-1")
    page.goto(f"{web_server}/jobs/{first.pk}/")
    page.evaluate(MARK_PAGE)

    verify = page.get_by_role("button", name="再起動しました: 今すぐ検証する")
    _click_live(page, verify, r"/resume/$")
    page.wait_for_url(f"{web_server}/jobs/{first.pk}/")
    page.evaluate(MARK_PAGE)
    first = wait_for_job(first, timeout=90, connect=True)
    assert first.outcome == Job.Outcome.NOT_FIXED  # 809 again: nobody restarted

    _click_live(page, page.locator("#retry-button"), r"/retry/$", timeout=30_000)
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    second = Job.objects.filter(kind=Job.Kind.FIX).exclude(pk=first.pk).get()
    assert page.url == f"{web_server}/jobs/{second.pk}/"
    assert (second.restart, second.parent_id, second.machine_id) == (
        Job.Restart.NOW,
        diagnosis.pk,
        diagnosis.machine_id,
    )
    second = wait_for_job(second, timeout=120, connect=True)
    assert second.outcome == Job.Outcome.FIXED, second.note
    expect(page.locator("#job-verdict h2")).to_have_text("修正済み", timeout=30_000)
