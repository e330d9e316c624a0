"""Searches that find nothing are counted, and the dashboard lists them as blind spots."""

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnostics import dashboard
from diagnostics.models import UnmatchedPaste

pytestmark = pytest.mark.django_db

UNKNOWN = "プリンターに印刷できません。スプーラーが停止しています"


def test_a_submitted_search_without_a_confident_match_is_counted(client, employee, kb):
    client.force_login(employee)
    client.post(reverse("diagnostics:home"), {"q": UNKNOWN})
    client.post(reverse("diagnostics:home"), {"q": f"  {UNKNOWN}\n"})  # the same text, again

    paste = UnmatchedPaste.objects.get()
    assert paste.count == 2 and paste.text == UNKNOWN
    rows = dashboard.unmatched_texts(timezone.now())
    assert [(r["pasted_text"], r["n"]) for r in rows] == [(UNKNOWN, 2)]
    assert rows[0]["draft_url"].startswith("/admin/diagnostics/article/add/")


def test_live_suggestions_and_confident_matches_are_not_counted(client, employee, kb):
    client.force_login(employee)
    client.post(reverse("diagnostics:home"), {"q": UNKNOWN}, HTTP_HX_REQUEST="true")
    client.post(reverse("diagnostics:home"), {"q": "エラー 789"})
    assert not UnmatchedPaste.objects.exists()


def test_a_get_never_adds_to_the_blind_spots(client, employee, kb):
    # A cross-site link or image (GET, no CSRF token) must not write to the dashboard.
    client.force_login(employee)
    answer = client.get(reverse("diagnostics:home"), {"q": UNKNOWN, "go": "1"})
    assert answer.status_code == 200 and 'class="nomatch"' in answer.content.decode()
    assert not UnmatchedPaste.objects.exists()


def test_a_submitted_search_without_the_csrf_token_is_refused_and_counts_nothing(employee, kb):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(employee)
    answer = browser.post(reverse("diagnostics:home"), {"q": UNKNOWN, "go": "1"})
    assert answer.status_code == 403
    assert not UnmatchedPaste.objects.exists()


def test_ask_the_helpdesk_goes_to_the_configured_address(client, employee, kb, settings):
    settings.KAIKETSU_HELPDESK_EMAIL = "it-help@corp.example"
    client.force_login(employee)
    body = client.get(reverse("diagnostics:home"), {"q": UNKNOWN}).content.decode()
    assert 'href="mailto:it-help@corp.example?subject=' in body
