"""The helpdesk approves with sight: the approval card and the audit trail in words."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from diagnostics.models import Article, AuditEntry, Credential, Job, Machine
from diagnostics.workflows import fixes
from tests.conftest import diagnose

REGISTRY = "AssumeUDPEncapsulationContextOnSendRule"


def _section(html: str, element_id: str) -> str:
    return html.split(f'id="{element_id}"', 1)[1].split("</section>", 1)[0]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_approval_card_shows_the_evidence_and_what_changes_never_a_fake_secret(
    employee, helpdesk, demo_machines, seed_article, company_psk, use_worker_queue
):
    diagnosis = diagnose(demo_machines["demo-psk-mismatch"], seed_article, employee)
    fix = fixes.request_fix(employee, diagnosis, ["reset-company-psk"])
    assert fix.status == Job.Status.APPROVAL
    desk = Client()
    desk.force_login(helpdesk)

    card = desk.get(reverse("diagnostics:approvals")).content.decode()
    card = card.split(f'id="approval-{fix.pk}"', 1)[1].split("</article>", 1)[0]

    assert "789" in card  # the evidence: the error the employee's attempts end with
    assert "会社の事前共有キーを設定し直す" in card  # the fix's title, not its key
    assert "reset-company-psk" not in card
    assert "会社のキーに置き換えられます" in card and "Windows では読み取れません" in card
    assert "****" not in card


@pytest.mark.django_db
def test_audit_rows_read_as_sentences_with_json_values_not_python_dicts(helpdesk, employee):
    cred = Credential.objects.create(name="c", username="u")
    machine = Machine.objects.create(name="PC-AUDIT", address="x", credential=cred)
    article = Article.objects.create(slug="a", title_ja="記事", title_en="Article")
    step = {"path": "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent", "name": REGISTRY}
    job = Job.objects.create(
        user=employee,
        machine=machine,
        article=article,
        kind=Job.Kind.FIX,
        status=Job.Status.DONE,
        plan={"steps": [{"id": "f1-1", "kind": "set_registry_value", "args": step}]},
    )
    AuditEntry.objects.create(
        job=job,
        machine=machine,
        actor=None,
        action=AuditEntry.Action.FIX_APPLIED,
        changes=[
            {
                "step": "f1-1",
                "kind": "set_registry_value",
                "from": {"exists": False, "value": None, "type": None},
                "to": {"exists": True, "value": 2, "type": "DWord"},
            },
            {"step": "f2-1", "kind": "set_vpn_psk", "from": None, "to": None},
        ],
    )
    AuditEntry.objects.create(
        job=job, machine=machine, actor=helpdesk, action="fix_approved", detail="今夜どうぞ"
    )
    client = Client()
    client.force_login(helpdesk)

    audit = _section(
        client.get(reverse("diagnostics:helpdesk-job", args=[job.pk])).content.decode(),
        "job-audit",
    )

    assert "helpdesk さんが修正を承認しました。 メモ: 今夜どうぞ" in audit
    assert "修正が実行され、4 件の設定が変わりました。" in audit
    assert f"{REGISTRY}: value: 未設定 → 2" in audit
    assert f"{REGISTRY}: exists: false → true" in audit
    assert "会社のキーに置き換えました" in audit
    for python in ("{'", "None", "True", "False"):
        assert python not in audit


@pytest.mark.django_db
def test_a_kb_admin_sees_what_nothing_matched_and_drafts_an_article_in_one_click(
    kb_admin, employee
):
    text = "エラー 812: 認証プロトコルが許可されていません"
    searcher = Client()
    searcher.force_login(employee)
    searcher.get(reverse("diagnostics:home"), {"q": text, "go": "1"})
    editor = Client()
    editor.force_login(kb_admin)

    home = editor.get(reverse("diagnostics:home")).content.decode()
    assert reverse("diagnostics:unmatched") in home  # reachable from the header
    assert editor.get(reverse("diagnostics:dashboard")).status_code == 404  # not helpdesk
    page = editor.get(reverse("diagnostics:unmatched")).content.decode()
    assert text in page
    draft = re.search(r'href="(/admin/diagnostics/article/add/\?[^"]+)"', page).group(1)
    form = editor.get(draft.replace("&amp;", "&"))
    assert form.status_code == 200
    assert form.context["adminform"].form.initial["status"] == "draft"
    assert text in form.context["adminform"].form.initial["summary_ja"]
