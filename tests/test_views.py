"""Pages through the real views: access rules, bad input, and what each persona sees."""

import json
import os
import re

import pytest
from django.test import Client
from django.urls import reverse

from diagnostics.models import Credential, Job, Machine, StepResult

pytestmark = pytest.mark.django_db

SEED = "l2tp-ipsec-psk-negotiation"
SEED_JA = "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出されたため、L2TP接続に失敗しました。"


@pytest.fixture
def machine(employee):
    cred = Credential(name="pc1-cred", username="kaiketsu")
    cred.set_password("Sekret-Host-Pw-1")
    cred.save()
    m = Machine.objects.create(
        name="pc1", address="127.0.0.1", port=1, scheme="http", credential=cred
    )
    m.owners.add(employee)
    return m


@pytest.fixture
def job(machine, seed_article, employee):
    job = Job.objects.create(user=employee, machine=machine, article=seed_article)
    first = seed_article.checks.order_by("position").first()
    StepResult.objects.create(
        job=job,
        step_id="c1",
        position=0,
        kb_check=first,
        kind=first.kind,
        facts={"status": "Stopped"},
        verdict="fail",
    )
    return job


def test_anonymous_is_sent_to_log_in(client):
    response = client.get(reverse("diagnostics:home"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_employee_finds_the_seed_article_from_the_japanese_error(client, employee, kb, machine):
    client.force_login(employee)
    response = client.get(reverse("diagnostics:home"), {"q": SEED_JA, "machine": machine.pk})
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("diagnostics:article", args=[SEED]) in body
    assert "<mark>" in body


def test_suggestions_come_back_as_a_fragment_for_htmx(client, employee, kb):
    client.force_login(employee)
    response = client.get(reverse("diagnostics:home"), {"q": "エラー 789"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="results"') and "<html" not in body


@pytest.mark.parametrize(
    "text",
    [
        "x" * 100_001,
        "<script>alert(1)</script> エラー 789",
        "'; DROP TABLE diagnostics_job; --",
        "\x00\x01\x02\ufffd binary",
        "😀🙈 VPN つながらない",
        "   \n\t  ",
    ],
)
def test_bad_pastes_get_an_answer_not_a_500_and_nothing_unescaped(client, employee, kb, text):
    client.force_login(employee)
    response = client.get(reverse("diagnostics:home"), {"q": text})
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.content.decode()
    if len(text) > 100_000:
        assert "too long" in response.content.decode() or "長すぎ" in response.content.decode()


def test_employee_cannot_diagnose_another_employees_machine(client, other_employee, machine, kb):
    client.force_login(other_employee)
    response = client.post(
        reverse("diagnostics:job-create"), {"article": SEED, "machine": machine.pk}
    )
    assert response.status_code == 404
    assert not Job.objects.exists()


def test_other_employee_gets_404_for_a_job(client, other_employee, job):
    client.force_login(other_employee)
    assert client.get(reverse("diagnostics:job-detail", args=[job.pk])).status_code == 404
    assert client.get(reverse("diagnostics:job-events", args=[job.pk])).status_code == 404


def test_owner_and_helpdesk_see_the_job(client, employee, helpdesk, job):
    for user in (employee, helpdesk):
        client.force_login(user)
        response = client.get(reverse("diagnostics:job-detail", args=[job.pk]))
        assert response.status_code == 200
        assert 'id="step-c1"' in response.content.decode()


def test_job_page_never_shows_the_machine_password(client, employee, job):
    client.force_login(employee)
    body = client.get(reverse("diagnostics:job-detail", args=[job.pk])).content.decode()
    assert "Sekret-Host-Pw-1" not in body


def test_diagnose_creates_a_queued_job_and_puts_it_on_the_broker(
    client, employee, machine, kb, django_capture_on_commit_callbacks, settings
):
    """The real Redis broker receives the task; no worker listens on this queue."""
    import redis

    from portal.celery import app

    queue = f"kaiketsu-view-test-{os.getpid()}"
    app.conf.task_default_queue = queue
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    key = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + queue  # the install's
    client.force_login(employee)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("diagnostics:job-create"),
                {"article": SEED, "machine": machine.pk, "q": SEED_JA, "score": "0.95"},
            )
        messages = [json.loads(m) for m in broker.lrange(key, 0, -1)]
    finally:
        app.conf.task_default_queue = "kaiketsu"
        broker.delete(key)
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnostics:job-detail", args=[job.pk])
    assert (job.user, job.machine, job.status, job.match_score) == (
        employee,
        machine,
        Job.Status.QUEUED,
        0.95,
    )
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages] == [
        ("diagnostics.tasks.run_job", f"[{job.pk}, 0]")  # the job's first turn
    ]


def test_language_follows_the_browser_and_can_be_switched(client, employee, kb):
    client.force_login(employee)
    assert "What error do you see?" in client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert "What error do you see?" in client.get("/").content.decode()


def test_credential_password_is_encrypted_at_rest(machine):
    stored = Credential.objects.get(pk=machine.credential_id).password_encrypted
    assert "Sekret-Host-Pw-1" not in stored
    assert machine.credential.get_password() == "Sekret-Host-Pw-1"


def test_live_progress_replaces_the_content_of_a_wrapper_that_keeps_listening(
    client, employee, job
):
    # htmx's SSE extension drops an event aimed at an element it has just replaced (the new one
    # listens only once settled), so the progress wrapper must stay and only its content change.
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[job.pk])).content.decode()
    wrapper = re.search(r'<div id="job-progress"[^>]*>', page).group(0)
    assert 'sse-swap="progress"' in wrapper and 'hx-swap="innerHTML"' in wrapper

    Job.objects.filter(pk=job.pk).update(status=Job.Status.DONE)
    stream = b"".join(client.get(reverse("diagnostics:job-events", args=[job.pk]))).decode()
    progress = re.search(r"event: progress\n((?:data: .*\n)+)", stream).group(1)
    assert 'class="status"' in progress
    assert "job-progress" not in progress and "sse-swap" not in progress


def test_an_employee_no_longer_owning_the_machine_cannot_act_through_an_old_job(
    client, employee, machine, seed_article
):
    fix = Job.objects.create(
        user=employee,
        machine=machine,
        article=seed_article,
        kind=Job.Kind.FIX,
        status=Job.Status.WAITING,
        restart=Job.Restart.LATER,
    )
    machine.owners.remove(employee)
    client.force_login(employee)
    for name, data in (("job-resume", {"action": "restart"}), ("job-rollback", {})):
        response = client.post(reverse(f"diagnostics:{name}", args=[fix.pk]), data)
        assert response.status_code == 404, name
    fix.refresh_from_db()
    assert (fix.status, fix.restart) == (Job.Status.WAITING, Job.Restart.LATER)
    assert Job.objects.count() == 1
    # Still the employee's own record: the page stays readable.
    assert client.get(reverse("diagnostics:job-detail", args=[fix.pk])).status_code == 200


def test_every_page_links_the_favicon_and_favicon_ico_leads_to_it(client):
    page = client.get(reverse("login"))
    icon = re.search(r'<link rel="icon" href="([^"]+)"', page.content.decode()).group(1)
    assert client.get("/favicon.ico").headers["Location"] == icon
    served = client.get(icon)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(served.streaming_content)


def test_a_pasted_code_outside_the_kb_shows_windows_meaning_and_no_article(client, employee, kb):
    client.force_login(employee)
    response = client.get(
        reverse("diagnostics:home"),
        {"q": "Remote Access error 629", "go": "1"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="code-meanings"' in body
    assert "The connection was closed by the remote computer." in body
    assert "not in our knowledge base yet" in body
    assert "No confident match" in body and "Ask the helpdesk" in body
    assert 'class="best"' not in body


def test_a_japanese_reader_sees_the_code_notice_in_japanese_and_the_english_meaning_marked(
    client, employee, kb
):
    client.force_login(employee)
    response = client.get(reverse("diagnostics:home"), {"q": "エラー 629"})
    body = response.content.decode()
    assert "まだナレッジベースにありません" in body
    assert 'lang="en"' in body and "英語で表示" in body


def test_a_pasted_code_in_the_kb_is_marked_so_and_its_article_is_the_answer(client, employee, kb):
    client.force_login(employee)
    response = client.get(reverse("diagnostics:home"), {"q": "エラー 789"})
    body = response.content.decode()
    assert "ナレッジベースにあります" in body
    assert 'class="best"' in body and reverse("diagnostics:article", args=[SEED]) in body


def test_a_form_that_arrives_over_the_event_stream_carries_a_token_that_posts(
    employee, machine, seed_article
):
    # Once the stream rendered its forms without the request, so "Hand it to the
    # helpdesk" and the others arrived without a CSRF token and their POST got 403.
    fix = Job.objects.create(
        user=employee,
        machine=machine,
        article=seed_article,
        kind=Job.Kind.FIX,
        status=Job.Status.DONE,
        outcome=Job.Outcome.NOT_FIXED,
    )
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(employee)
    browser.get(reverse("diagnostics:job-detail", args=[fix.pk]))  # sets the CSRF cookie
    stream = b"".join(browser.get(reverse("diagnostics:job-events", args=[fix.pk]))).decode()
    done = re.search(r"event: done\n((?:data: .*\n)+)", stream).group(1)
    assert reverse("diagnostics:job-handover", args=[fix.pk]) in done
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', done).group(1)

    url = reverse("diagnostics:job-handover", args=[fix.pk])
    assert browser.post(url, {"csrfmiddlewaretoken": token}).status_code == 302
    fix.refresh_from_db()
    assert fix.handed_over_at is not None


@pytest.fixture
def not_fixed(machine, seed_article, employee):
    """A fix whose verification found the IPsec Policy Agent still stopped; the rest never ran."""
    from diagnostics.workflows import fixes

    job = Job.objects.create(
        user=employee, machine=machine, article=seed_article, kind=Job.Kind.FIX,
        status=Job.Status.DONE, outcome=Job.Outcome.NOT_FIXED,
    )  # fmt: skip
    step = next(
        s for s in fixes.verify_steps(job) if s.check and s.check.key == "policyagent-running"
    )
    StepResult.objects.create(
        job=job, step_id=step.id, phase=StepResult.Phase.VERIFY, position=0, kb_check=step.check,
        kind=step.kind, facts={"exists": True, "status": "Stopped", "start_type": None,
        "display_name": "IPsec Policy Agent " * 6}, verdict="fail",
    )  # fmt: skip
    return job


def test_a_problem_is_headed_by_what_is_wrong_not_by_the_healthy_condition(
    client, employee, not_fixed
):
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[not_fixed.pk])).content.decode()
    headings = re.findall(r'<li class="finding finding-problem">\s*<h3>(.*?)</h3>', page, re.S)
    assert headings == ["IPsec Policy Agent (PolicyAgent) が停止しているか無効になっています。"]
    assert "IPsec Policy Agent サービスが起動している" not in headings[0]  # the check's title


def test_the_helpdesk_details_show_facts_as_json_not_python(client, employee, not_fixed):
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[not_fixed.pk])).content.decode()
    details = page[page.index("ヘルプデスク向けの詳細") :]
    assert "<th>exists</th><td><code>true</code>" in details
    assert "<th>start_type</th><td><code>null</code>" in details
    assert "<th>status</th><td><code>&quot;Stopped&quot;</code>" in details
    # One string stays one value: pprint would split it into '…' '…' pieces.
    assert '"' + "IPsec Policy Agent " * 6 + '"' in page.replace("&quot;", '"')
    assert "True" not in details and "None" not in details and "&#x27;" not in details


def test_an_ended_job_says_its_steps_did_not_run_instead_of_waiting(client, employee, not_fixed):
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[not_fixed.pk])).content.decode()
    rows = page[page.index('id="job-steps"') :]
    assert "実行されず" in rows
    assert "待機中" not in rows and 'sse-swap="step-' not in rows


@pytest.fixture
def psk_fix(machine, seed_article, employee):
    """A finished fix that reset the PSK (unreadable, so unrecorded) and set a registry value."""
    policy_agent = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent"
    plan = {"steps": [
        {"id": "f1-1", "kind": "set_vpn_psk", "args": {"name": "VPN", "psk": {"secret": "k"}}},
        {"id": "f2-1", "kind": "set_registry_value", "args": {"path": policy_agent,
         "name": "AssumeUDPEncapsulationContextOnSendRule", "type": "DWord", "value": 2}},
    ]}  # fmt: skip
    job = Job.objects.create(
        user=employee, machine=machine, article=seed_article, kind=Job.Kind.FIX, plan=plan,
        status=Job.Status.DONE, outcome=Job.Outcome.FIXED, restart=Job.Restart.NOW,
    )  # fmt: skip
    for n, (step, before) in enumerate(zip(plan["steps"], [{}, {"exists": False}], strict=True)):
        StepResult.objects.create(
            job=job, step_id=step["id"], phase=StepResult.Phase.FIX, position=n,
            kind=step["kind"], before=before, after={}, changed=True, verdict="pass",
        )  # fmt: skip
    return job


def test_roll_back_asks_first_and_says_the_psk_cannot_be_put_back(client, employee, psk_fix):
    client.force_login(employee)
    url = reverse("diagnostics:job-rollback", args=[psk_fix.pk])
    page = client.get(url).content.decode()
    assert not Job.objects.filter(kind=Job.Kind.ROLLBACK).exists()  # asking changes nothing
    kept = page[page.index('id="rollback-kept"') :]
    assert "VPN 接続の事前共有キー" in kept[: kept.index("</ul>")]
    steps = page[page.index('id="rollback-steps"') :]
    assert "AssumeUDPEncapsulationContextOnSendRule" in steps[: steps.index("</ul>")]
    assert 'id="rollback-restarts"' in page  # the fix restarted, so its roll-back does too
    response = client.post(url)
    rollback = Job.objects.get(kind=Job.Kind.ROLLBACK)
    assert response["Location"] == reverse("diagnostics:job-detail", args=[rollback.pk])


def test_a_finished_roll_back_never_claims_the_psk_was_put_back(client, employee, psk_fix):
    rollback = Job.objects.create(
        user=employee, machine=psk_fix.machine, article=psk_fix.article, parent=psk_fix,
        kind=Job.Kind.ROLLBACK, status=Job.Status.DONE, outcome=Job.Outcome.ROLLED_BACK,
        restart=Job.Restart.NOW,
    )  # fmt: skip
    client.force_login(employee)
    page = client.get(reverse("diagnostics:job-detail", args=[rollback.pk])).content.decode()
    assert "ただし、次のものは戻せません" in page and "VPN 接続の事前共有キー" in page
    assert "修正で変更した設定を元に戻しました。<" not in page
