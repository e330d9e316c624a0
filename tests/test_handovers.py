"""Hand-overs through the real views: who may do what, the e-mails, bad input, the counts."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnostics import dashboard
from diagnostics.models import Article, Credential, HandOver, HandOverMessage, Job, Machine
from diagnostics.workflows import fixes

pytestmark = pytest.mark.django_db


@pytest.fixture
def machine(employee):
    cred = Credential(name="ho-cred", username="kaiketsu")
    cred.set_password("Sekret-Host-Pw-1")
    cred.save()
    m = Machine.objects.create(name="PC-HO", address="127.0.0.1", port=1, credential=cred)
    m.owners.add(employee)
    return m


@pytest.fixture
def article(db):
    return Article.objects.create(
        slug="ho", title_ja="記事", title_en="Article", status=Article.Status.PUBLISHED
    )


@pytest.fixture
def job(employee, machine, article):
    return Job.objects.create(
        user=employee,
        machine=machine,
        article=article,
        status=Job.Status.ERROR,
        outcome=Job.Outcome.ERROR,
        error="PC-HO did not answer",
        pasted_text="error 809",
        transcript='{"step": "s1"}',
    )


@pytest.fixture
def mail(employee, helpdesk, mailoutbox, settings):
    """The e-mails sent, with the on-commit callbacks that send them run as in production."""
    employee.email, helpdesk.email = "employee@example.com", "hd@example.com"
    employee.save(update_fields=["email"])
    helpdesk.save(update_fields=["email"])
    settings.KAIKETSU_HELPDESK_EMAIL = "desk@example.com"
    return mailoutbox


def _post(client, captured, name, pk=None, **data):
    url = reverse(name, args=[pk] if pk is not None else [])
    with captured(execute=True):
        return client.post(url, data)


def test_employee_hands_over_an_unreachable_machines_job_and_the_helpdesk_is_emailed(
    client, employee, job, mail, django_capture_on_commit_callbacks
):
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[job.pk])).content.decode()
    assert reverse("diagnostics:job-handover", args=[job.pk]) in page  # the button is there

    response = _post(
        client, django_capture_on_commit_callbacks, "diagnostics:job-handover", job.pk,
        note="I am at home; the VPN icon says error.",
    )  # fmt: skip

    assert response.status_code == 302
    handover = HandOver.objects.get(job=job)
    assert (handover.status, handover.machine, handover.pasted_text) == (
        "open",
        job.machine,
        "error 809",
    )
    assert list(handover.messages.values_list("body", flat=True)) == [
        "I am at home; the VPN icon says error."
    ]
    job.refresh_from_db()
    assert job.handed_over_at == handover.created_at
    assert job.audit.filter(action="handed_over", actor=employee).count() == 1
    [sent] = mail
    assert sent.to == ["desk@example.com"]
    assert f"#{handover.pk}" in sent.subject and "employee" in sent.subject
    link = "http://testserver" + reverse("diagnostics:inbox-detail", args=[handover.pk])
    assert link in sent.body and "I am at home" in sent.body


def test_a_second_click_finds_the_first_hand_over(
    client, employee, job, mail, django_capture_on_commit_callbacks
):
    client.force_login(employee)
    for _ in range(2):
        _post(client, django_capture_on_commit_callbacks, "diagnostics:job-handover", job.pk)
    assert HandOver.objects.filter(job=job).count() == 1
    assert len(mail) == 1


def test_a_note_too_long_is_refused_with_its_length_and_nothing_is_handed_over(
    client, employee, job, mail, django_capture_on_commit_callbacks
):
    client.force_login(employee)
    response = _post(
        client, django_capture_on_commit_callbacks, "diagnostics:job-handover", job.pk,
        note="x" * 4001,
    )  # fmt: skip
    page = client.get(response["Location"]).content.decode()
    assert "4,001" in page and "4,000" in page
    assert not HandOver.objects.exists() and mail == []
    job.refresh_from_db()
    assert job.handed_over_at is None


def test_nobody_but_the_employee_hands_over_their_job_or_reads_their_hand_over(
    client, employee, other_employee, helpdesk, job
):
    handover = HandOver.objects.create(user=employee, job=job, machine=job.machine)
    for intruder in (other_employee, helpdesk):
        client.force_login(intruder)
        assert client.post(reverse("diagnostics:job-handover", args=[job.pk])).status_code == 404
        assert client.get(reverse("diagnostics:handover", args=[handover.pk])).status_code == 404
        reply = reverse("diagnostics:handover-reply", args=[handover.pk])
        assert client.post(reply, {"body": "hi"}).status_code == 404
    assert HandOver.objects.count() == 1 and not HandOverMessage.objects.exists()


def test_employees_never_reach_the_inbox(client, employee, job):
    handover = HandOver.objects.create(user=employee, job=job)
    client.force_login(employee)
    assert client.get(reverse("diagnostics:inbox")).status_code == 404
    assert client.get(reverse("diagnostics:inbox-detail", args=[handover.pk])).status_code == 404
    for move in ("inbox-reply", "inbox-take", "inbox-close"):
        url = reverse(f"diagnostics:{move}", args=[handover.pk])
        assert client.post(url, {"body": "closing my own"}).status_code == 404
    handover.refresh_from_db()
    assert handover.status == "open" and not handover.messages.exists()


def test_a_helpdesk_reply_takes_the_case_and_reaches_the_employee_in_their_language(
    client, employee, helpdesk, job, mail, django_capture_on_commit_callbacks
):
    client.force_login(employee)
    client.post(reverse("set_language"), {"language": "en"})
    _post(client, django_capture_on_commit_callbacks, "diagnostics:job-handover", job.pk)
    handover = HandOver.objects.get()
    assert handover.language == "en"
    mail.clear()

    client.force_login(helpdesk)
    history = client.get(reverse("diagnostics:helpdesk-job", args=[job.pk])).content.decode()
    assert reverse("diagnostics:inbox-detail", args=[handover.pk]) in history
    inbox = client.get(reverse("diagnostics:inbox"), HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert reverse("diagnostics:inbox-detail", args=[handover.pk]) in inbox
    case = client.get(reverse("diagnostics:inbox-detail", args=[handover.pk])).content.decode()
    assert "PC-HO did not answer" in case and "error 809" in case and "{&quot;step" in case
    _post(
        client, django_capture_on_commit_callbacks, "diagnostics:inbox-reply", handover.pk,
        body="Please plug in the LAN cable and press Diagnose again.",
    )  # fmt: skip

    handover.refresh_from_db()
    assert (handover.status, handover.assignee) == ("taken", helpdesk)
    [sent] = mail
    assert sent.to == ["employee@example.com"]
    assert sent.subject == f"The helpdesk answered your hand-over #{handover.pk}"
    assert "LAN cable" in sent.body
    assert "http://testserver" + reverse("diagnostics:handover", args=[handover.pk]) in sent.body

    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[job.pk])).content.decode()
    assert "LAN cable" in page and 'data-status="taken"' in page
    mine = client.get(reverse("diagnostics:my-jobs")).content.decode()
    assert "LAN cable" in mine


def test_a_closed_hand_over_refuses_more_messages_and_says_so(
    client, employee, helpdesk, job, mail, django_capture_on_commit_callbacks
):
    handover = HandOver.objects.create(user=employee, job=job, language="ja")
    client.force_login(helpdesk)
    _post(
        client, django_capture_on_commit_callbacks, "diagnostics:inbox-close", handover.pk,
        body="Fixed on site.",
    )  # fmt: skip
    handover.refresh_from_db()
    assert (handover.status, handover.assignee) == ("closed", helpdesk)
    assert mail[-1].subject == f"ヘルプデスクが引き継ぎ #{handover.pk} を完了しました"

    client.force_login(employee)
    url = reverse("diagnostics:handover-reply", args=[handover.pk])
    response = client.post(url, {"body": "still broken"}, follow=True)
    assert "この引き継ぎは完了しています。" in response.content.decode()
    assert list(handover.messages.values_list("body", flat=True)) == ["Fixed on site."]


def test_an_empty_reply_is_refused_and_adds_nothing(client, helpdesk, employee, job):
    handover = HandOver.objects.create(user=employee, job=job)
    client.force_login(helpdesk)
    url = reverse("diagnostics:inbox-reply", args=[handover.pk])
    response = client.post(url, {"body": "   "}, follow=True)
    assert "メッセージを書いてください。" in response.content.decode()
    handover.refresh_from_db()
    assert handover.status == "open" and not handover.messages.exists()


def test_a_text_nothing_matched_is_handed_over_with_the_machine_the_employee_picked(
    client, employee, machine, mail, django_capture_on_commit_callbacks
):
    client.force_login(employee)
    home = client.get(reverse("diagnostics:home"), {"q": "zzqx unknown gizmo", "go": "1"})
    assert reverse("diagnostics:handover-create") in home.content.decode()
    response = _post(
        client, django_capture_on_commit_callbacks, "diagnostics:handover-create",
        q="zzqx unknown gizmo", machine=machine.pk, note="",
    )  # fmt: skip
    handover = HandOver.objects.get()
    assert response["Location"] == reverse("diagnostics:handover", args=[handover.pk])
    assert (handover.job, handover.machine, handover.pasted_text) == (
        None,
        machine,
        "zzqx unknown gizmo",
    )
    assert "zzqx" not in mail[0].body  # the paste stays in the portal; the e-mail links to it


def test_a_text_hand_over_with_someone_elses_machine_is_refused(client, other_employee, machine):
    client.force_login(other_employee)
    url = reverse("diagnostics:handover-create")
    assert client.post(url, {"q": "help", "machine": machine.pk}).status_code == 404
    response = client.post(url, {"q": " ", "note": ""}, follow=True)
    assert "ヘルプデスクへのメモを書くか、エラーを貼り付けてください。" in response.content.decode()
    assert not HandOver.objects.exists()


def test_the_inbox_tabs_split_open_mine_and_closed(
    client, employee, helpdesk, job, django_user_model, django_assert_max_num_queries
):
    colleague = django_user_model.objects.create_user("colleague")
    mine = HandOver.objects.create(user=employee, job=job, status="taken", assignee=helpdesk)
    theirs = HandOver.objects.create(user=employee, status="taken", assignee=colleague)
    waiting = HandOver.objects.create(user=employee, pasted_text="?")
    done = HandOver.objects.create(user=employee, status="closed", closed_at=timezone.now())
    client.force_login(helpdesk)

    def listed(tab: str) -> set[int]:
        with django_assert_max_num_queries(8):
            body = client.get(reverse("diagnostics:inbox"), {"tab": tab}).content.decode()
        return {h.pk for h in (mine, theirs, waiting, done) if f'data-handover="{h.pk}"' in body}

    assert listed("open") == {mine.pk, theirs.pk, waiting.pk}
    assert listed("mine") == {mine.pk}
    assert listed("closed") == {done.pk}


def test_taking_a_case_from_a_colleague_moves_it_to_my_tab(client, helpdesk, employee, job):
    handover = HandOver.objects.create(user=employee, job=job)
    client.force_login(helpdesk)
    client.post(reverse("diagnostics:inbox-take", args=[handover.pk]))
    handover.refresh_from_db()
    assert (handover.status, handover.assignee) == ("taken", helpdesk)
    assert handover.taken_at is not None


def test_my_jobs_lists_only_my_jobs_fixes_waiting_and_the_helpdesks_notes(
    client, employee, other_employee, helpdesk, job, machine, article, django_assert_max_num_queries
):
    waiting = Job.objects.create(
        user=employee, machine=machine, article=article, kind="fix", status="approval"
    )
    declined = Job.objects.create(
        user=employee, machine=machine, article=article, kind="fix", status="approval"
    )
    fixes.decide(declined, helpdesk, approve=False, note="Call us first: 1234.")
    other_cred = Credential.objects.create(name="o", username="o")
    theirs = Job.objects.create(
        user=other_employee,
        machine=Machine.objects.create(name="PC-OTHER", address="x", credential=other_cred),
        article=article,
    )
    client.force_login(employee)
    # session, user, count and page of jobs, waiting, hand-overs, their messages and authors
    with django_assert_max_num_queries(8):
        body = client.get(reverse("diagnostics:my-jobs")).content.decode()
    for own in (job, waiting, declined):
        assert f'data-job="{own.pk}"' in body
    assert f'data-job="{theirs.pk}"' not in body and "PC-OTHER" not in body
    waiting_list = body.split('id="my-waiting"')[1].split("</ul>")[0]
    assert f"#{waiting.pk}" in waiting_list and f"#{declined.pk}" not in waiting_list
    assert "Call us first: 1234." in body
    assert (
        reverse("diagnostics:my-jobs") in client.get(reverse("diagnostics:home")).content.decode()
    )


def test_the_dashboard_counts_open_hand_overs_their_age_and_time_to_close(
    client, helpdesk, employee
):
    now = timezone.now()
    old = now - dt.timedelta(days=2)
    HandOver.objects.create(user=employee, created_at=old)
    HandOver.objects.create(
        user=employee, status="taken", assignee=helpdesk, created_at=now - dt.timedelta(hours=1)
    )
    HandOver.objects.create(
        user=employee, status="closed", created_at=old, closed_at=old + dt.timedelta(hours=3)
    )
    counts = dashboard.handover_counts(now)
    assert {k: counts[k] for k in ("open", "untaken", "over_a_day", "closed", "median_hours")} == {
        "open": 2, "untaken": 1, "over_a_day": 1, "closed": 1, "median_hours": 3.0,
    }  # fmt: skip
    assert counts["oldest"] == old
    client.force_login(helpdesk)
    body = client.get(reverse("diagnostics:dashboard")).content.decode()
    assert '<strong data-count="open">2</strong>' in body
    assert '<strong data-count="over-a-day">1</strong>' in body


def test_an_smtp_server_that_refuses_loses_the_email_but_not_the_hand_over(
    client, employee, job, settings, caplog, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # nothing listens there
    client.force_login(employee)
    with caplog.at_level(logging.WARNING, logger="diagnostics.handovers"):
        response = _post(
            client, django_capture_on_commit_callbacks, "diagnostics:job-handover", job.pk
        )
    assert response.status_code == 302
    assert HandOver.objects.filter(job=job).exists()
    assert "not sent" in caplog.text


def test_the_note_the_helpdesk_writes_when_approving_reaches_the_employees_job_page(
    client, employee, helpdesk, machine, article
):
    fix = Job.objects.create(
        user=employee, machine=machine, article=article, kind="fix", status="approval"
    )
    client.force_login(helpdesk)
    decide = reverse("diagnostics:approval-decide", args=[fix.pk])
    client.post(decide, {"decision": "approve", "note": "Approved: restart tonight please."})
    fix.refresh_from_db()
    assert (fix.status, fix.decision_note) == ("queued", "Approved: restart tonight please.")

    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[fix.pk])).content.decode()
    note = page.split('id="decision-note"')[1].split("</p>")[0]
    assert "ヘルプデスクからのメモ:" in note and "Approved: restart tonight please." in note
    mine = client.get(reverse("diagnostics:my-jobs")).content.decode()
    assert "Approved: restart tonight please." in mine


def test_the_employees_answer_reaches_whoever_holds_the_case(
    client, employee, helpdesk, job, mail, django_capture_on_commit_callbacks
):
    handover = HandOver.objects.create(user=employee, job=job, status="taken", assignee=helpdesk)
    client.force_login(employee)
    response = _post(
        client, django_capture_on_commit_callbacks, "diagnostics:handover-reply", handover.pk,
        body="The cable is in; still error 809.",
    )  # fmt: skip
    assert response["Location"] == reverse("diagnostics:job-detail", args=[job.pk])
    [sent] = mail
    assert sent.to == ["hd@example.com"]  # the holder, not the shared address
    assert "The cable is in" in sent.body
    assert handover.messages.get().from_helpdesk is False


JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
ENGLISH_UI = re.compile(
    r"\b(Hand-over|Messages|Reply|Send|Close|Take it|waiting|Closed|My jobs|Jobs)\b"
)


def _main_text(client, url: str, lang: str) -> str:
    """The page's own text in ``lang``, the header aside (its language switch shows both)."""
    page = client.get(url, HTTP_ACCEPT_LANGUAGE=lang).content.decode().split("<main>")[1]
    return re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", "", page, flags=re.S))


def test_the_hand_over_pages_speak_one_language_each(client, employee, helpdesk, job, article):
    article.title_ja = "Article"  # ASCII data: any Japanese on an English page is the UI's
    article.save()
    handover = HandOver.objects.create(user=employee, job=job, machine=job.machine)
    HandOverMessage.objects.create(
        handover=handover, author=helpdesk, body="ok", from_helpdesk=True
    )
    pages = {
        employee: [reverse("diagnostics:my-jobs"), reverse("diagnostics:handover", args=[handover.pk]),
                   reverse("diagnostics:job-detail", args=[job.pk])],
        helpdesk: [reverse("diagnostics:inbox"), reverse("diagnostics:inbox-detail", args=[handover.pk]),
                   reverse("diagnostics:dashboard")],
    }  # fmt: skip
    for user, urls in pages.items():
        client.force_login(user)
        for url in urls:
            assert not JAPANESE.search(_main_text(client, url, "en")), url
            assert not ENGLISH_UI.findall(_main_text(client, url, "ja")), url


def test_a_note_on_a_job_whose_hand_over_is_closed_is_refused_and_says_so(client, employee, job):
    handover = HandOver.objects.create(user=employee, job=job, status="closed")
    client.force_login(employee)
    url = reverse("diagnostics:job-handover", args=[job.pk])
    response = client.post(url, {"note": "it broke again"}, follow=True)
    assert "この引き継ぎは完了しています。" in response.content.decode()
    assert not handover.messages.exists() and HandOver.objects.count() == 1
