"""Issue #16: a fuzz pass over every form and query parameter of the helpdesk and admin pages.

Hypothesis sends each page any mix of its parameters, with odd text and the values that broke
pages before (year 1 and 9999, "²" as a port, NUL, a cursor past any database id). No answer
may be a 500: Django's test client raises the view's exception, so a crash fails here with
its traceback. Bounded (``max_examples`` per page) so the file runs well under two minutes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnostics import connectivity
from diagnostics.models import Article, Credential, Job, Machine, Scan

pytestmark = pytest.mark.django_db

TOKEN = "fuzz-token"
BIG = "99999999999999999999"
NASTY = [
    "",
    " ",
    "0",
    "-1",
    BIG,
    "1e309",
    "nan",
    "²",
    "①",
    "٣",
    "0001-01-01",
    "9999-12-31",
    "2026-02-30",
    "\x00",
    "a\x00b",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%",
    "*",
    "..",
    "user:pass@host#frag",
    "x" * 5000,
    base64.urlsafe_b64encode(f"1.{BIG}".encode()).decode(),
    base64.urlsafe_b64encode(f"{BIG}.1".encode()).decode(),
]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
)
HISTORY = ("user", "machine", "article", "status", "kind", "outcome", "date_from", "date_to")
HISTORY += ("q", "after")


@dataclass(frozen=True)
class Page:
    name: str
    keys: tuple[str, ...]
    method: str = "get"
    args: str = ""  # which fixture object fills the URL's pk


HELPDESK_PAGES = [
    Page("diagnostics:history", HISTORY),
    Page("diagnostics:history-export", HISTORY),
    Page("diagnostics:helpdesk-job", ("row",), args="job"),
    Page("diagnostics:dashboard", ()),
    Page("diagnostics:machines", ("q", "page")),
    Page("diagnostics:scans", ()),
    Page("diagnostics:scans", ("article", "owner", "name_pattern", "failed_days"), "post"),
    Page("diagnostics:scan", ("show",), args="scan"),
    Page("diagnostics:scan-export", ("show",), args="scan"),
    Page("diagnostics:machines-import", ("csv", "action", "update"), "post"),
    Page("diagnostics:approvals", ()),
    Page("diagnostics:approval-decide", ("decision", "note"), "post", args="approval"),
    Page("diagnostics:helpdesk-job-cancel", (), "post", args="approval"),
    Page("diagnostics:home", ("q", "machine", "go")),
    Page("diagnostics:home", ("q", "machine", "go"), "post"),
    Page("diagnostics:article", ("machine", "q", "score"), args="slug"),
]
ADMIN_PAGES = [
    Page(f"admin:diagnostics_{model}_changelist", ("q", "o", "p", "all", *filters))
    for model, filters in (
        ("article", ("status",)),
        ("machine", ("scheme",)),
        ("job", ("status", "outcome", "kind")),
        ("auditentry", ("action",)),
        ("credential", ()),
        ("unmatchedpaste", ()),
    )
] + [
    Page("admin:diagnostics_article_try", ("text",), "post"),
    Page(
        "admin:diagnostics_machine_change",
        ("name", "address", "port", "scheme", "verify_tls", "credential", "owners"),
        "post",
        args="machine",
    ),
    Page(
        "admin:diagnostics_credential_add",
        ("name", "username", "address_pattern", "allow_unverified", "secret"),
        "post",
    ),
]


@pytest.fixture
def objects(employee):
    cred = Credential(name="fuzz-cred", username="kaiketsu")
    cred.set_password("pw")
    cred.save()
    machine = Machine.objects.create(name="PC-FUZZ", address="127.0.0.1", port=1, credential=cred)
    machine.owners.add(employee)
    article = Article.objects.create(
        slug="fuzz", title_ja="記事", title_en="Article", status=Article.Status.PUBLISHED
    )
    done = Job.objects.create(
        user=employee, machine=machine, article=article, status="done", outcome="healthy"
    )
    approval = Job.objects.create(
        user=employee, machine=machine, article=article, kind="fix", status="approval"
    )
    scan = Scan.objects.create(
        article=article, created_by=employee, selection="all", machine_ids=[machine.pk]
    )
    cache.set(connectivity.key(machine.pk, TOKEN), {"status": "pending"}, 60)
    return {"job": done, "approval": approval, "scan": scan, "machine": machine, "slug": article}


def _url(page: Page, objects: dict) -> str:
    if not page.args:
        return reverse(page.name)
    obj = objects[page.args]
    return reverse(page.name, args=[obj.slug if page.args == "slug" else obj.pk])


def _probe(client, page: Page, url: str, examples: int) -> None:
    params = st.dictionaries(st.sampled_from(page.keys or ("x",)), VALUES, max_size=6)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(params=params, htmx=st.booleans())
    def probe(params, htmx):
        headers = {"HX-Request": "true"} if htmx else {}
        answer = getattr(client, page.method)(url, params, headers=headers)
        if hasattr(answer, "streaming_content"):
            b"".join(answer)  # an export fails mid-download, not at its first byte
        assert answer.status_code < 500, (page.name, params, answer.status_code)

    probe()


def _fuzz(client, pages: list[Page], objects: dict, examples: int) -> None:
    for page in pages:
        _probe(client, page, _url(page, objects), examples)


def test_no_helpdesk_page_or_form_answers_500(client, helpdesk, objects):
    client.force_login(helpdesk)
    _fuzz(client, HELPDESK_PAGES, objects, examples=25)


def test_no_admin_page_or_form_answers_500(client, admin_user, objects):
    client.force_login(admin_user)
    _fuzz(client, ADMIN_PAGES, objects, examples=20)


def test_the_machine_test_result_takes_any_token(client, helpdesk, objects):
    client.force_login(helpdesk)
    pk = objects["machine"].pk

    @settings(max_examples=30, deadline=None, database=None)
    @given(token=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
    def probe(token):
        if "/" in token:
            return  # not this route
        url = reverse("diagnostics:machine-test-result", args=[pk, token])
        assert client.get(url).status_code in (200, 404)

    probe()
