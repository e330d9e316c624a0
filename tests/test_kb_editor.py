"""The article editor in the admin: typed forms from the catalog, versions, second approval."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from diagnostics.kbstore import export_dir
from diagnostics.models import Article, Fix
from tests.adminforms import form_data
from tests.conftest import ROOT

SEED = "l2tp-ipsec-psk-negotiation"


@pytest.fixture(autouse=True)
def english(client):
    """Pages in English, so these tests can quote them (test_i18n keeps the Japanese)."""
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"


def change_url(article) -> str:
    return reverse("admin:diagnostics_article_change", args=[article.pk])


def inline_index(data: dict, prefix: str, key: str) -> int:
    return next(
        int(name.split("-")[1])
        for name, values in data.items()
        if name.startswith(f"{prefix}-") and name.endswith("-key") and values == [key]
    )


def test_every_shipped_article_saved_unchanged_through_the_typed_forms_exports_byte_identical(
    client, kb_admin, kb, tmp_path
):
    client.force_login(kb_admin)
    for article in kb.values():
        response = client.post(change_url(article), form_data(client, change_url(article)))
        assert response.status_code == 302, (article.slug, response.content.decode()[:4000])
    export_dir(tmp_path)
    for shipped in sorted((ROOT / "kb").glob("*.yaml")):
        exported = (tmp_path / shipped.name).read_text(encoding="utf-8")
        assert exported == shipped.read_text(encoding="utf-8"), shipped.name


# --- versions and the second KB admin -------------------------------------------------------

SMALL = "vpn-device-reported-error"  # one check of a service, one fix: start-rasman


@pytest.fixture
def second_kb_admin(django_user_model):
    from diagnostics.roles import KB_ADMIN, ensure_groups

    user = django_user_model.objects.create_user("kbadmin2", password="pw-kbadmin-2", is_staff=True)
    user.groups.add(ensure_groups()[KB_ADMIN])
    return user


def _post_change(client, article, **changes) -> object:
    """Post the article's change form with ``changes`` (by inline key: ``fix__start_type``)."""
    url = change_url(article)
    data = form_data(client, url)
    for name, value in changes.items():
        data[name] = [value] if isinstance(value, str) else value
    return client.post(url, data)


def _fix_field(client, article, key: str, field: str) -> str:
    j = inline_index(form_data(client, change_url(article)), "fixes", key)
    return f"fixes-{j}-{field}"


def test_a_save_keeps_a_version_with_who_and_what_changed_as_a_diff(client, kb_admin, kb):
    article = kb[SMALL]
    client.force_login(kb_admin)
    _post_change(client, article)  # the first save keeps the article as it was
    response = _post_change(client, article, title_en="RasMan could not start the device")
    assert response.status_code == 302

    page = client.get(reverse("admin:diagnostics_article_versions", args=[article.pk])).text
    assert [v.number for v in article.versions.all()] == [2, 1]
    assert article.versions.get(number=2).saved_by == kb_admin
    assert "+  en: RasMan could not start the device" in page
    assert "Restore version 1 as a draft" in page


def test_one_click_restores_an_earlier_version_as_a_draft(client, kb_admin, kb, tmp_path):
    article = kb[SMALL]
    shipped = (ROOT / "kb" / f"{SMALL}.yaml").read_text(encoding="utf-8")
    client.force_login(kb_admin)
    _post_change(client, article)
    _post_change(client, article, title_en="A bad edit")

    response = client.post(reverse("admin:diagnostics_article_restore", args=[article.pk, 1]))

    assert response.status_code == 302
    article.refresh_from_db()
    assert article.title_en != "A bad edit" and article.status == Article.Status.DRAFT
    assert article.versions.first().note == "restored version 1"
    export_dir(tmp_path)
    restored = (tmp_path / f"{SMALL}.yaml").read_text(encoding="utf-8")
    assert restored == shipped.replace("status: published", "status: draft")


def test_changed_fix_steps_are_published_only_after_a_second_kb_admin_approves(
    client, kb_admin, second_kb_admin, kb
):
    article = kb[SMALL]
    client.force_login(kb_admin)
    field = _fix_field(client, article, "start-rasman", "s0_set_service__start_type")

    refused = _post_change(client, article, **{field: "Automatic"})
    assert refused.status_code == 200
    assert "Publishing needs a second KB admin: the steps of start-rasman" in refused.text
    assert Fix.objects.get(article=article, key="start-rasman").steps[0]["args"]["start_type"] == (
        "Manual"
    )

    draft = _post_change(client, article, status="draft", **{field: "Automatic"})
    assert draft.status_code == 302
    fix = Fix.objects.get(article=article, key="start-rasman")
    assert fix.steps_author == kb_admin and fix.awaits_second_admin
    approve = reverse("admin:diagnostics_article_approve_steps", args=[article.pk, fix.pk])
    own = client.post(approve, follow=True)
    assert "You changed these steps: another KB admin must approve them." in own.text
    assert _post_change(client, article, status="published").status_code == 200  # still refused

    client.force_login(second_kb_admin)
    assert "Approve the steps of “start-rasman”" in client.get(change_url(article)).text
    client.post(approve)
    fix.refresh_from_db()
    assert fix.steps_approved_by == second_kb_admin and not fix.awaits_second_admin
    assert _post_change(client, article, status="published").status_code == 302
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED


def test_an_edit_of_approved_steps_or_turning_approval_off_resets_the_approval(
    client, kb_admin, second_kb_admin, kb
):
    article = kb["vpn-certificate-rejected"]  # reset-company-psk needs the helpdesk's approval
    fix = Fix.objects.get(article=article, key="reset-company-psk")
    fix.steps_author, fix.steps_approved_by = kb_admin, second_kb_admin
    fix.save()
    client.force_login(kb_admin)
    field = _fix_field(client, article, "reset-company-psk", "needs_approval")

    response = _post_change(client, article, status="draft", **{field: []})

    assert response.status_code == 302
    fix.refresh_from_db()
    assert not fix.needs_approval and fix.awaits_second_admin and fix.steps_author == kb_admin


# --- a page that fits -------------------------------------------------------------------------

SEED_PAGE_MAX_QUERIES = 24  # measured 24 (session, user, permissions, one per inline)


def test_the_seed_articles_change_page_takes_a_bounded_number_of_queries(client, kb_admin, kb):
    client.force_login(kb_admin)
    url = change_url(kb[SEED])
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    assert len(queries) <= SEED_PAGE_MAX_QUERIES, [q["sql"][:120] for q in queries]


# --- preview and try on a machine -------------------------------------------------------------


def test_the_preview_shows_the_employee_page_in_both_languages_sanitised(client, kb_admin, kb):
    article = kb[SMALL]
    Article.objects.filter(pk=article.pk).update(
        causes_en="- **bold** <script>alert('x')</script> <img src=x onerror=alert(1)>"
    )
    client.force_login(kb_admin)
    url = reverse("admin:diagnostics_article_preview", args=[article.pk])

    page = client.get(url, {"q": "エラー 720"}).text

    ja = page.split('id="preview-ja"', 1)[1].split('id="preview-en"', 1)[0]
    en = page.split('id="preview-en"', 1)[1]
    assert article.title_ja in ja and "原因" in ja
    assert article.title_en in en and "<strong>bold</strong>" in en
    assert "<script>alert" not in page and "onerror" not in page
    assert 'id="preview-rank"' in page and 'id="ranking"' in page


def test_the_preview_sits_beside_the_edit_form_in_a_same_origin_frame(client, kb_admin, kb):
    article = kb[SMALL]
    client.force_login(kb_admin)
    url = reverse("admin:diagnostics_article_preview", args=[article.pk])

    form = client.get(reverse("admin:diagnostics_article_change", args=[article.pk])).text
    framed = client.get(url, {"embed": "1"})

    assert f'<iframe src="{url}?embed=1"' in form  # on the edit page, in a panel beside it
    assert framed["X-Frame-Options"] == "SAMEORIGIN"  # the site's DENY would blank the frame
    assert "frame-ancestors 'self'" in framed["Content-Security-Policy"]  # not the site's 'none'
    assert 'id="header"' not in framed.text and 'id="preview-ja"' in framed.text
    assert 'name="embed"' in framed.text  # "Try a text" stays in the frame
    assert 'id="header"' in client.get(url).text  # on its own it is a whole admin page


@pytest.mark.django_db(transaction=True)
def test_a_kb_admin_tries_a_draft_on_their_own_machine_and_no_fix_is_offered(
    client, kb_admin, employee, kb, winsim_fleet, use_worker_queue
):
    from diagnostics import assessment, jobs
    from diagnostics.models import Job
    from diagnostics.workflows import fixes
    from tests.conftest import machines_for, wait_for_job

    host = "demo-policyagent-stopped"
    mine = machines_for({host: winsim_fleet[host]}, kb_admin)[host]
    Article.objects.filter(slug=SEED).update(status=Article.Status.DRAFT)
    article = Article.objects.get(slug=SEED)
    client.force_login(kb_admin)
    url = reverse("diagnostics:kb-try-machine", args=[article.pk])
    others = machines_for({"demo-healthy": winsim_fleet["demo-healthy"]}, employee)

    assert client.post(url, {"machine": others["demo-healthy"].pk}).status_code == 404
    response = client.post(url, {"machine": mine.pk})

    job = Job.objects.get(machine=mine)
    assert response["Location"] == reverse("diagnostics:job-detail", args=[job.pk])
    jobs.enqueue(job.pk)  # the test worker's queue; a duplicate turn is claimed only once
    job = wait_for_job(job)
    assert job.outcome == Job.Outcome.PROBLEMS
    assert assessment.assess_job(job).fixes  # published, this diagnosis would offer a fix
    assert fixes.offered_fixes(job) == []  # a draft's never
    page = client.get(response["Location"]).text
    assert reverse("diagnostics:fix-confirm", args=[job.pk]) not in page
    assert not Job.objects.filter(kind=Job.Kind.FIX).exists()


def test_drafts_are_never_offered_to_employees(client, employee, kb, idle_machine):
    from diagnostics import kbindex

    Article.objects.filter(slug=SEED).update(status=Article.Status.DRAFT)
    kbindex.bump_version()
    client.force_login(employee)
    text = "リモート アクセス エラー 789"
    assert all(m.article != SEED for m in kbindex.find(text, "ja").matches)
    assert client.get(reverse("diagnostics:article", args=[SEED])).status_code == 404
    response = client.post(
        reverse("diagnostics:job-create"), {"article": SEED, "machine": idle_machine.pk}
    )
    assert response.status_code == 404


def test_the_admin_refuses_an_article_kb_import_would_refuse_in_its_words(client, kb_admin, kb):
    article = kb[SMALL]
    client.force_login(kb_admin)

    response = _post_change(client, article, causes_en="")

    assert response.status_code == 200
    assert "kb_import would refuse this article:" in response.text
    assert "causes.en: missing or empty" in response.text
    article.refresh_from_db()
    assert article.causes_en


def test_only_a_superuser_gets_the_raw_json_form(client, kb_admin, django_user_model, kb):
    url = change_url(kb[SMALL]) + "?raw=1"
    client.force_login(kb_admin)
    typed = client.get(url).text
    assert 'name="checks-0-args"' not in typed and 'name="checks-0-service__name"' in typed

    client.force_login(django_user_model.objects.create_superuser("root", password="pw-root-1"))
    raw = client.get(url).text
    assert 'name="checks-0-args"' in raw and 'name="fixes-0-steps"' in raw
