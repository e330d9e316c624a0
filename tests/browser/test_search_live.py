"""The paste box in Chromium: live suggestions while typing, and a submitted search counted."""

import pytest
from playwright.sync_api import expect

from diagnostics.models import UnmatchedPaste
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UNKNOWN = "プリンターに印刷できません。スプーラーが停止しています"


def test_typing_suggests_but_only_pressing_find_counts_a_blind_spot(page, web_server, employee, kb):
    log_in(page, web_server, "employee", "pw-employee-1")

    with page.expect_response(lambda r: "q=" in (r.request.post_data or "")):  # suggestions
        page.fill("#paste", UNKNOWN)
    assert not UnmatchedPaste.objects.exists()

    with page.expect_response(lambda r: "go=1" in (r.request.post_data or "")):
        page.click("#search button[type=submit]")
    expect(page.locator("#results")).to_be_visible()
    assert UnmatchedPaste.objects.get().text == UNKNOWN
