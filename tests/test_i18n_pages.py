"""Every page in Japanese, for every role: no English UI word, no untranslated msgid (issue #11).

The pages are rendered by the real views (and the event stream by its view), then read as a
person reads them: the visible text, without code, preformatted facts, the brand and the
language switch. KB content is Japanese already; product and setting names (VPN, IPsec Policy
Agent, registry value names) are not UI words and are not listed below.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import translation

from diagnostics import jobs
from diagnostics.models import Job
from tests.test_i18n import PO, read_po
from tests.test_views import SEED_JA, job, machine, not_fixed, psk_fix  # noqa: F401

pytestmark = pytest.mark.django_db

# Words of the portal's own UI that must never reach a Japanese page (case-sensitive, whole
# words). Each was seen on a page, or is the English of a label a page shows.
ENGLISH_UI = [
    "Problem", "problems? found", "waiting", "Could not", "Details", "Step", "Result",
    "Fix it", "Roll back", "Restart", "Verify", "Approve", "Decline", "Search", "Filter",
    "Export", "Log out", "Job", "Machine", "Article", "History", "Dashboard", "score",
    "phrase", "similarity", "match", "error code", "minutes ago", "hours ago", "days ago", "seconds",
    "not set", "published", "draft", "Fixs", "Fixes", "Checks", "Signatures", "Running",
    "Queued", "Not fixed", "Fixed", "True", "False", "None", "before", "facts", "What to do",
    "Could not connect", "Connection refused", "timed out", "Access denied",
]  # fmt: skip
ENGLISH = re.compile(r"(?<![\w-])(" + "|".join(ENGLISH_UI) + r")(?![\w-])")
SKIPPED = {"script", "style", "code", "pre", "textarea", "option"}


class _Text(HTMLParser):
    """The visible text of a page, minus code, preformatted facts and English on purpose."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        on_purpose = attributes.get("lang") == "en" or "lang" in (attributes.get("class") or "")
        if tag in SKIPPED or on_purpose:
            self._skip.append(tag)
        for name in ("title", "placeholder", "aria-label", "data-label"):
            if attributes.get(name) and not self._skip:
                self.parts.append(attributes[name])

    def handle_endtag(self, tag: str) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts)).replace("Kaiketsu", "")


def _msgid_fragments() -> list[str]:
    """Literal stretches (15+ characters, 3+ words) of every msgid: if one shows, the
    string was not translated when the page was made."""
    fragments = set()
    for entry in read_po(PO):
        for text in (entry.msgid, entry.msgid_plural or ""):
            for piece in re.split(r"%\(\w+\)[sd]|\{\w*\}|\n", text):
                piece = piece.strip(" .:;,'\"()…")
                if len(piece) >= 15 and piece.count(" ") >= 2:
                    fragments.add(piece)
    return sorted(fragments)


FRAGMENTS = _msgid_fragments()


def english_on(html: str) -> list[str]:
    text = visible_text(html)
    found = {m.group(0) for m in ENGLISH.finditer(text)}
    found |= {f for f in FRAGMENTS if f in text}
    return sorted(found)


def _pages(client, urls: list[str]) -> dict[str, list[str]]:
    out = {}
    for url in urls:
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="ja")
        assert response.status_code == 200, url
        body = b"".join(response).decode()  # a stream (the live fragments) too
        if english := english_on(body):
            out[url] = english
    return out


def test_the_checker_finds_english_and_untranslated_strings():
    """The check must be able to fail: an English page is caught on both counts."""
    page = "<p>2 problems found</p><p>The helpdesk has this job.</p><code>True</code>"
    assert english_on(page) == ["The helpdesk has this job", "problems found"]
    assert english_on("<p>問題が 2 件見つかりました</p><code>None</code>") == []


def test_every_employee_page_is_japanese(client, employee, kb, machine, not_fixed, psk_fix):  # noqa: F811
    rollback = Job.objects.create(
        user=employee, machine=machine, article=psk_fix.article, parent=psk_fix,
        kind=Job.Kind.ROLLBACK, status=Job.Status.DONE, outcome=Job.Outcome.ROLLED_BACK,
    )  # fmt: skip
    with translation.override("ja"):  # as the worker writes it, in the requester's language
        unreachable = jobs.remote_headline("refused", machine.name)
    failed = Job.objects.create(
        user=employee, machine=machine, article=psk_fix.article, status=Job.Status.ERROR,
        error=f"{unreachable}\nCould not connect to pc1: Connection refused (Errno 111)",
    )  # fmt: skip
    running = Job.objects.create(
        user=employee, machine=machine, article=psk_fix.article, status=Job.Status.RUNNING
    )
    client.force_login(employee)
    home = reverse("diagnostics:home")
    urls = [
        home,
        f"{home}?q={SEED_JA}&go=1",
        f"{home}?q=zzzz+qqqq+error+9999&go=1",
        reverse("diagnostics:article", args=["l2tp-ipsec-psk-negotiation"]),
        reverse("diagnostics:job-detail", args=[running.pk]),
        reverse("diagnostics:job-detail", args=[failed.pk]),
        reverse("diagnostics:job-detail", args=[not_fixed.pk]),
        reverse("diagnostics:job-events", args=[not_fixed.pk]),  # the live fragments
        reverse("diagnostics:job-detail", args=[psk_fix.pk]),
        reverse("diagnostics:job-rollback", args=[psk_fix.pk]),
        reverse("diagnostics:job-detail", args=[rollback.pk]),
        reverse("diagnostics:job-events", args=[rollback.pk]),
    ]
    assert _pages(client, urls) == {}


def test_every_helpdesk_page_is_japanese(client, helpdesk, kb, not_fixed):  # noqa: F811
    client.force_login(helpdesk)
    urls = [
        reverse("diagnostics:history"),
        reverse("diagnostics:helpdesk-job", args=[not_fixed.pk]),
        reverse("diagnostics:job-detail", args=[not_fixed.pk]),
        reverse("diagnostics:approvals"),
        reverse("diagnostics:dashboard"),
        reverse("diagnostics:machines"),
        reverse("diagnostics:scans"),
    ]
    assert _pages(client, urls) == {}


class _Labels(HTMLParser):
    """The text of every <label> and column header of a page (a form's field names), except a
    choice's label that is its value (a Windows name such as MSChapv2, shown as Windows has it)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.labels: list[str] = []
        self._open: list[str] | None = None
        self._value: str | None = None
        self._thead = False  # a <th> outside <thead> heads a row: it holds data (a name)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._thead = self._thead or tag == "thead"
        if tag == "label" or (tag == "th" and self._thead):
            self._open, self._value = [], None
        elif tag == "input" and self._open is not None:
            self._value = dict(attrs).get("value")

    def handle_endtag(self, tag: str) -> None:
        self._thead = self._thead and tag != "thead"
        if tag in ("label", "th") and self._open is not None:
            label = re.sub(r"\s+", " ", "".join(self._open)).strip(" :*")
            if label != self._value:
                self.labels.append(label)
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


# Field names that are the same in Japanese: product and protocol names (after the number a
# sorted column shows).
SAME_IN_JAPANESE = re.compile(r"^(\d+ )?(|PC|ID|URL|PSK|TLS|JSON|KB|ms|#|\d+)$")


def english_labels(html: str) -> list[str]:
    """Labels with no Japanese in them: a model field or form field without a translated
    verbose name (Django's default label is the field's English name)."""
    parser = _Labels()
    parser.feed(html)
    return sorted(
        {label for label in parser.labels if label.isascii() and not SAME_IN_JAPANESE.match(label)}
    )


def test_the_label_checker_finds_a_field_without_a_japanese_name():
    page = (
        '<label for="id_key">Key:</label><label>再起動</label>'
        "<table><thead><tr><th>Restart required</th></tr></thead><tr><th>pc-1</th></tr></table>"
        '<label><input type="checkbox" value="MSChapv2"> MSChapv2</label>'
        '<label><input type="checkbox" value="y"> Yes</label>'
    )
    assert english_labels(page) == ["Key", "Restart required", "Yes"]


def test_every_model_field_has_a_japanese_name():
    """Admin forms, lists and filters name fields by their verbose names."""
    from django.apps import apps

    untranslated = []
    for model in apps.get_app_config("diagnostics").get_models():
        for field in model._meta.get_fields():
            if not getattr(field, "concrete", False) or field.auto_created:
                continue
            with translation.override("ja"):
                name = str(field.verbose_name)
            if name.isascii() and not SAME_IN_JAPANESE.match(name):
                untranslated.append(f"{model.__name__}.{field.name}: {name}")
    assert untranslated == []


def test_every_kb_admin_page_is_japanese(client, kb_admin, kb):
    """The admin's lists ("Fixs" once) and the article's edit form with its inlines."""
    client.force_login(kb_admin)
    seed = kb["l2tp-ipsec-psk-negotiation"]
    change = reverse("admin:diagnostics_article_change", args=[seed.pk])
    urls = [
        reverse("admin:index"),
        reverse("admin:diagnostics_article_changelist"),
        change,
        reverse("admin:diagnostics_article_add"),
        f"{reverse('admin:diagnostics_article_try')}?text={SEED_JA}",
    ]
    assert _pages(client, urls) == {}
    for url in (change, reverse("admin:diagnostics_article_add")):
        page = client.get(url, HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert english_labels(page) == [], url


def test_every_admin_edit_form_is_japanese(admin_client, kb, machine, not_fixed):  # noqa: F811
    """Every change form the superuser opens (machines, credentials, jobs, ...), by label."""
    from django.contrib import admin

    found = {}
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        if info[0] != "diagnostics":
            continue
        obj = model.objects.first()
        prefix = "admin:{}_{}_".format(*info)
        urls = [reverse(prefix + "changelist"), reverse(prefix + "add")]
        if obj is not None:
            urls.append(reverse(prefix + "change", args=[obj.pk]))
        for url in urls:
            response = admin_client.get(url, HTTP_ACCEPT_LANGUAGE="ja")
            if response.status_code == 403 and url.endswith("/add/"):
                continue  # made by the portal, never by hand (jobs, audit entries)
            assert response.status_code == 200, url
            if labels := english_labels(response.content.decode()):
                found[url] = labels
    assert found == {}, "\n".join(f"{u}: {v}" for u, v in found.items())
