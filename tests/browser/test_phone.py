"""A phone is enough: paste, article, job and fix pages at 390×844 (issue #11, item 3)."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
SEED_JA = (
    "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出された"
    "ため、L2TP接続に失敗しました。"
)

# How far the page scrolls sideways, and where the verdict sits on the whole page.
WIDTHS = """() => {
  // The innermost elements whose box or text reaches past the window, to name the culprit.
  const over = [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right + window.scrollX > window.innerWidth + 0.5
                 || (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === "visible"))
    .slice(-4).map(e => `${e.tagName}.${e.className} ${e.scrollWidth}`);
  return [document.documentElement.scrollWidth, window.innerWidth, over];
}"""
VERDICT_BOTTOM = """() => {
  const box = document.querySelector("#job-verdict h2").getBoundingClientRect();
  return box.bottom + window.scrollY;
}"""


@pytest.fixture
def phone(browser):
    """A 390×844 window: innerWidth stays 390, so a wide page really scrolls sideways."""
    context = browser.new_context(locale="ja-JP", viewport=PHONE)
    page = context.new_page()
    yield page
    context.close()


def _screenshot(page, name: str) -> None:
    """With KAIKETSU_SCREENSHOTS=DIR, keep what the phone shows (docs/ holds the README's)."""
    if folder := os.environ.get("KAIKETSU_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / name))


def _fits_every_phone(page, what: str) -> None:
    """The narrowest and widest common phones too (issue #11: 360–414 px), then back to 390."""
    for width in (360, 414, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": PHONE["height"]})
        _fits(page, f"{what} at {width} px")


def _fits(page, what: str) -> None:
    scroll_width, inner_width, wide = page.evaluate(WIDTHS)
    assert inner_width == page.viewport_size["width"]
    assert scroll_width <= inner_width, f"{what}: {scroll_width} px at {inner_width} px: {wide}"


def test_employee_on_a_phone_pastes_diagnoses_and_reaches_the_fix_without_side_scrolling(
    phone, web_server, employee, kb, fresh_machines, use_worker_queue
):  # its own fleet: the fix it applies changes the host
    page = phone
    log_in(page, web_server, "employee", "pw-employee-1")
    page.fill("#paste", SEED_JA)
    page.select_option("#machine", label="demo-nat-t")
    best = page.locator("ol.matches li.best a")
    expect(best).to_be_visible()
    _fits_every_phone(page, "paste page with results")
    best.click()
    page.wait_for_url(re.compile(r"/articles/"))
    _fits_every_phone(page, "article page")
    page.click("#diagnose")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    _fits(page, "job page while running")
    _screenshot(page, "phone-job.png")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # following the steps

    verdict = page.locator("#job-verdict h2")
    expect(verdict).to_be_visible(timeout=30_000)
    # The reader had scrolled down to follow the steps: the verdict is brought into view.
    expect(verdict).to_be_in_viewport(ratio=1)
    expect(page.locator("#fix-button")).to_be_in_viewport()
    _fits(page, "job page with its verdict")
    _screenshot(page, "phone-verdict.png")
    bottom = page.evaluate(VERDICT_BOTTOM)
    assert bottom <= 2 * PHONE["height"], f"the verdict ends {bottom:.0f} px down the page"

    _fits_every_phone(page, "job page with its verdict")

    page.click("#fix-button")
    page.wait_for_url(re.compile(r"/fix/$"))
    expect(page.locator("#apply-fixes")).to_be_visible()
    _fits_every_phone(page, "fix confirmation page")

    # Applied from the phone, restart left for later: the fix's page asks for the restart.
    page.check("input[name=restart][value=later]")
    page.click("#apply-fixes")
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    verify = page.get_by_role("button", name="再起動しました: 今すぐ検証する")
    expect(verify).to_be_visible(timeout=60_000)
    _fits(page, "fix job waiting for the restart")
