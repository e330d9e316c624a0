"""The knowledge base in the database: import/export, the admin, and the matcher's index."""

import html
import json
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from diagnostics import catalog, kb, kbindex
from diagnostics.kbstore import KBError, export_dir, import_dir
from diagnostics.models import Article, Check, Fix
from tests.adminforms import form_data
from tests.conftest import ROOT, _child_env, child_database_url

SEED = "l2tp-ipsec-psk-negotiation"


def test_export_after_import_gives_back_every_shipped_file_byte_for_byte(kb, tmp_path):
    export_dir(tmp_path)

    for shipped in sorted((ROOT / "kb").glob("*.yaml")):
        exported = tmp_path / shipped.name
        assert exported.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")


def test_import_with_one_bad_file_imports_nothing(db, tmp_path):
    good = kb.load_file(ROOT / "kb" / f"{SEED}.yaml")
    (tmp_path / "a.yaml").write_text(kb.dump(good), encoding="utf-8")
    bad = dict(good, slug="broken", checks=[{**good["checks"][0], "kind": "run_script"}])
    (tmp_path / "b.yaml").write_text(kb.dump(bad), encoding="utf-8")

    with pytest.raises(KBError, match="broken"):
        import_dir(tmp_path)
    assert not Article.objects.exists()


def test_kb_admin_tries_a_text_and_sees_the_ranking_with_scores(client, kb_admin, kb):
    client.force_login(kb_admin)
    url = reverse("admin:diagnostics_article_try")
    text = "Remote Access error 789 - The L2TP connection attempt failed because the security layer encountered a processing error during initial negotiations with the remote computer."

    response = client.post(url, {"text": text})

    body = response.content.decode()
    assert response.status_code == 200
    first_row = body.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert SEED in first_row and "<mark>" in body


def test_try_a_text_ranks_drafts_too(client, kb_admin, kb):
    Article.objects.filter(slug=SEED).update(status="draft")
    client.force_login(kb_admin)
    response = client.post(reverse("admin:diagnostics_article_try"), {"text": "エラー 789"})
    assert SEED in response.content.decode()
    employee_view = kbindex.find("エラー 789", "ja")  # not for employees
    assert all(m.article != SEED for m in employee_view.matches)
    assert not employee_view.confident


def test_employees_cannot_open_the_try_page(client, employee):
    client.force_login(employee)
    response = client.get(reverse("admin:diagnostics_article_try"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_markdown_from_the_kb_is_rendered_without_raw_html(client, employee, kb):
    Article.objects.filter(slug=SEED).update(
        causes_en="- **bold** <script>alert('x')</script> <img src=x onerror=alert(1)>"
    )
    client.force_login(employee)
    body = client.get(
        reverse("diagnostics:article", args=[SEED]), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    assert "<strong>bold</strong>" in body
    assert "<script>alert" not in body and "onerror" not in body


def test_draft_articles_are_not_shown_to_employees(client, employee, kb):
    Article.objects.filter(slug=SEED).update(status="draft")
    client.force_login(employee)
    assert client.get(reverse("diagnostics:article", args=[SEED])).status_code == 404


INDEX_PROBE = """
import django, sys
django.setup()
from diagnostics import kbindex
text = sys.argv[1]
print(kbindex.find(text, "en").matches[0].article if kbindex.find(text, "en").matches else "-", flush=True)
sys.stdin.readline()
print(kbindex.find(text, "en").matches[0].article if kbindex.find(text, "en").matches else "-", flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_an_admin_edit_rebuilds_the_index_in_another_process(client, kb_admin, kb):
    """A long-lived process (like a web or worker process) sees the edit on its next match."""
    probe = subprocess.Popen(
        [sys.executable, "-c", INDEX_PROBE, "kaiketsu-unique-phrase-for-the-index-test"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=_child_env(DATABASE_URL=child_database_url()),
    )  # fmt: skip
    try:
        before = probe.stdout.readline().strip()
        article = Article.objects.get(slug=SEED)
        client.force_login(kb_admin)
        data = _change_form_data(client, article)
        n = data["signatures-TOTAL_FORMS"][0]
        data.update({
            "signatures-TOTAL_FORMS": str(int(n) + 1),
            f"signatures-{n}-lang": "en",
            f"signatures-{n}-text": "kaiketsu unique phrase for the index test",
            f"signatures-{n}-source": "test",
            f"signatures-{n}-verified": "on",
        })  # fmt: skip
        response = client.post(reverse("admin:diagnostics_article_change", args=[article.pk]), data)
        assert response.status_code == 302, response.content.decode()[:3000]
        probe.stdin.write("\n")
        probe.stdin.flush()
        after = probe.stdout.readline().strip()
    finally:
        probe.kill()
    assert before != SEED
    assert after == SEED


def _change_form_data(client, article) -> dict:
    """The admin change form's current values, as a browser would post them back."""
    return form_data(client, reverse("admin:diagnostics_article_change", args=[article.pk]))


def test_the_article_page_does_not_query_once_per_fix_choice(client, kb_admin, kb):
    # Every check offers every fix of the knowledge base, each labelled with its article's
    # slug: that label must come with the fixes, not a query per choice and form (618 then).
    article = kb["l2tp-ipsec-psk-negotiation"]
    client.force_login(kb_admin)
    url = reverse("admin:diagnostics_article_change", args=[article.pk])
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    assert Fix.objects.count() > 30 and len(queries) < 100, len(queries)


def test_the_index_is_rebuilt_only_when_the_kb_version_changes(kb, django_assert_num_queries):
    kbindex.bump_version()
    first = kbindex.get_index()
    with django_assert_num_queries(0):  # unchanged KB: one cache read, no database
        assert kbindex.get_index() is first
    Article.objects.filter(slug="vpn-server-not-responding").update(status="draft")
    assert kbindex.get_index() is first  # an edit that does not bump the version is not seen
    kbindex.bump_version()
    changed = kbindex.get_index()
    assert changed is not first
    assert "vpn-server-not-responding" not in {a.slug for a in changed.articles}


# --- one validator: the admin refuses what kb_import refuses, in the same words ---------------

NEVER_PASSES = [{"fact": "state", "op": "in", "value": "Running"}]  # no such fact; not a list
NOT_A_FIX = [{"kind": "run_script", "args": {"script": "Stop-Service PolicyAgent"}}]


def _shipped() -> dict:
    return kb.load_file(ROOT / "kb" / f"{SEED}.yaml")


def _kb_import_refusal(tmp_path, change) -> str:
    data = _shipped()
    change(data)
    (tmp_path / f"{SEED}.yaml").write_text(kb.dump(data), encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        call_command("kb_import", str(tmp_path))
    return str(refused.value)


def _admin_refusal(client, article, fields: dict, query: str = "") -> str:
    url = reverse("admin:diagnostics_article_change", args=[article.pk]) + query
    data = form_data(client, url)
    data.update(fields)
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with its errors: nothing saved
    return html.unescape(response.content.decode())


def _inline_index(data: dict, prefix: str, key: str) -> int:
    return next(
        int(name.split("-")[1])
        for name, value in data.items()
        if name.startswith(f"{prefix}-") and name.endswith("-key") and value in (key, [key])
    )


def test_admin_and_kb_import_refuse_a_check_that_can_never_pass_with_one_message(
    client, kb_admin, kb, tmp_path
):
    shipped = _shipped()
    i, check = next((i, c) for i, c in enumerate(shipped["checks"]) if c["kind"] == "service")
    expected = [
        "expect[0].fact: service has no fact 'state'",
        "expect[0].value: in needs a list",
    ]

    def change(data):
        data["checks"][i]["expect"] = NEVER_PASSES

    refusal = _kb_import_refusal(tmp_path, change)
    assert [f"checks[{i}].{p}" in refusal for p in expected] == [True, True], refusal

    client.force_login(kb_admin)
    article = kb[SEED]
    j = _inline_index(_change_form_data(client, article), "checks", check["key"])
    rows = {  # the typed rows: fact "state" is not in the service kind's list, so not offered
        f"checks-{j}-expect_0_fact": "state",
        f"checks-{j}-expect_0_op": "lt",
        f"checks-{j}-expect_0_value": "Running",
        **{f"checks-{j}-expect_{n}_fact": "" for n in range(1, 6)},
    }
    page = _admin_refusal(client, article, rows)
    # The same words as kb_import; a list operator always gets a list from the typed value, so
    # the value problem shown is a number operator's.
    assert expected[0] in page and "expect[0].value: lt needs a number" in page
    stored = Check.objects.get(article=article, key=check["key"]).expect
    assert stored == check["expect"]


def test_admin_and_kb_import_refuse_a_fix_step_outside_the_catalog_with_one_message(
    client, django_user_model, kb, tmp_path
):
    shipped = _shipped()
    fix = shipped["fixes"][0]
    kinds = ", ".join(catalog.FIX_KINDS)
    expected = f"steps[0].kind: 'run_script' is not a fix kind ({kinds})"

    def change(data):
        data["fixes"][0]["steps"] = NOT_A_FIX

    assert f"fixes[0].{expected}" in _kb_import_refusal(tmp_path, change)

    # The typed form offers no such kind; the raw JSON form (superusers) refuses it in these words.
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-1")
    client.force_login(superuser)
    article = kb[SEED]
    j = _inline_index(_change_form_data(client, article), "fixes", fix["key"])
    page = _admin_refusal(client, article, {f"fixes-{j}-steps": json.dumps(NOT_A_FIX)}, "?raw=1")
    assert expected in page
    assert Fix.objects.get(article=article, key=fix["key"]).steps == fix["steps"]


def test_notes_for_kb_editors_never_reach_the_article_page(client, employee, kb):
    seed = kb["l2tp-ipsec-psk-negotiation"]
    assert "ポータルが修正を提案する条件" in seed.editor_notes_ja  # imported from kb/
    assert "When the portal offers a fix" in seed.editor_notes_en
    client.force_login(employee)
    for lang in ("ja", "en"):
        page = client.get(
            reverse("diagnostics:article", args=[seed.slug]), HTTP_ACCEPT_LANGUAGE=lang
        ).content.decode()
        assert ("KB926179" in page) and ("元記事" in page or "seed article" in page)  # notes
        assert "ポータルが修正を提案する条件" not in page
        assert "When the portal offers a fix" not in page
