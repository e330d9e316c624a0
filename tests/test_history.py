"""The helpdesk history through the real views: access, filters, search, keyset pages,
the job detail, re-run and the streamed CSV export."""

from __future__ import annotations

import csv
import importlib
import io
import tracemalloc
from datetime import UTC, datetime, timedelta

import factory
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from diagnostics import history
from diagnostics.models import (
    Article,
    AuditEntry,
    Check,
    Credential,
    Job,
    Machine,
    Secret,
    StepResult,
)

pytestmark = pytest.mark.django_db

PSK_JA = "リモートコンピューターと最初にネゴシエートするときに、セキュリティ層で処理エラーが検出されたため、L2TP接続に失敗しました。"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.get_fixed_timezone(540))


class CredentialFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Credential

    name = factory.Sequence(lambda n: f"cred-{n}")
    username = "kaiketsu"
    password_encrypted = factory.LazyFunction(lambda: _encrypted("Host-Pw-Never-Shown-1"))


def _encrypted(raw: str) -> str:
    from diagnostics import vault

    return vault.encrypt(raw)


class MachineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Machine

    name = factory.Sequence(lambda n: f"pc-{n:03d}")
    address = "127.0.0.1"
    port = 1
    scheme = "http"
    credential = factory.SubFactory(CredentialFactory)


class ArticleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Article

    slug = factory.Sequence(lambda n: f"article-{n}")
    status = Article.Status.PUBLISHED
    title_ja = factory.Sequence(lambda n: f"記事 {n}")
    title_en = factory.Sequence(lambda n: f"Article {n}")


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    machine = factory.SubFactory(MachineFactory)
    article = factory.SubFactory(ArticleFactory)
    kind = Job.Kind.DIAGNOSE
    status = Job.Status.DONE
    outcome = Job.Outcome.HEALTHY
    pasted_text = "VPN does not connect"
    created_at = factory.Sequence(lambda n: T0 + timedelta(minutes=n))


@pytest.fixture
def dataset(employee, other_employee):
    """A small realistic history: two employees, three machines, two articles, mixed jobs."""
    psk = ArticleFactory(slug="l2tp-psk", title_en="L2TP pre-shared key")
    dns = ArticleFactory(slug="dns-suffix", title_en="DNS suffix")
    pc1, pc2, laptop = (
        MachineFactory(name="pc-tokyo-01"),
        MachineFactory(name="pc-osaka-02"),
        MachineFactory(name="laptop-kobe-03"),
    )
    day = timedelta(days=1)
    jobs = {
        "psk_ja": JobFactory(
            user=employee, machine=pc1, article=psk, pasted_text=PSK_JA, created_at=T0
        ),
        "psk_fix": JobFactory(
            user=employee,
            machine=pc1,
            article=psk,
            kind=Job.Kind.FIX,
            outcome=Job.Outcome.FIXED,
            pasted_text="",
            created_at=T0 + day,
        ),
        "dns_error": JobFactory(
            user=other_employee,
            machine=pc2,
            article=dns,
            status=Job.Status.ERROR,
            outcome=Job.Outcome.ERROR,
            error="WinRM: Access is denied (0x80070005)",
            pasted_text="cannot resolve intranet",
            created_at=T0 + 2 * day,
        ),
        "rollback": JobFactory(
            user=other_employee,
            machine=laptop,
            article=psk,
            kind=Job.Kind.ROLLBACK,
            outcome=Job.Outcome.ROLLED_BACK,
            pasted_text="",
            created_at=T0 + 3 * day,
        ),
        "running": JobFactory(
            user=employee,
            machine=pc2,
            article=dns,
            status=Job.Status.RUNNING,
            outcome=Job.Outcome.NONE,
            pasted_text="error 809",
            created_at=T0 + 4 * day,
        ),
    }
    StepResult.objects.create(
        job=jobs["rollback"],
        step_id="c1",
        position=0,
        kind="service_status",
        verdict=StepResult.Verdict.ERROR,
        error="The RPC server is unavailable",
    )
    StepResult.objects.create(
        job=jobs["psk_ja"],
        step_id="c1",
        position=0,
        kind="service_status",
        verdict=StepResult.Verdict.FAIL,
        facts={"status": "Stopped"},
    )
    return jobs


def _ids(response) -> set[int]:
    return {job.pk for job in response.context["page"].jobs}


@pytest.fixture
def helpdesk_client(client, helpdesk):
    client.force_login(helpdesk)
    return client


# --- access --------------------------------------------------------------------------------


def _history_urls(job: Job) -> list[tuple[str, str]]:
    return [
        ("get", reverse("diagnostics:history")),
        ("get", reverse("diagnostics:history-export")),
        ("get", reverse("diagnostics:helpdesk-job", args=[job.pk])),
        ("post", reverse("diagnostics:helpdesk-job-rerun", args=[job.pk])),
    ]


def test_employee_gets_404_on_every_history_url_even_for_own_job(client, employee, dataset):
    client.force_login(employee)
    for method, url in _history_urls(dataset["psk_ja"]):
        assert getattr(client, method)(url).status_code == 404, url
    assert not Job.objects.filter(user=employee, created_at__gt=T0 + timedelta(days=5)).exists()


def test_kb_admin_without_helpdesk_role_gets_404(client, kb_admin, dataset):
    client.force_login(kb_admin)
    for method, url in _history_urls(dataset["psk_ja"]):
        assert getattr(client, method)(url).status_code == 404, url


def test_anonymous_is_sent_to_log_in_from_history(client, dataset):
    for method, url in _history_urls(dataset["psk_ja"]):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_helpdesk_and_superuser_get_the_history_pages(client, helpdesk, admin_user, dataset):
    for user in (helpdesk, admin_user):
        client.force_login(user)
        for method, url in _history_urls(dataset["psk_ja"])[:3]:
            assert getattr(client, method)(url).status_code == 200, (user, url)


# --- filters and search --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"psk_ja", "psk_fix", "dns_error", "rollback", "running"}),
        ({"user": "employee"}, {"psk_ja", "psk_fix", "running"}),
        ({"user": "nobody-by-that-name"}, set()),
        ({"machine": "pc-osaka-02"}, {"dns_error", "running"}),
        # user and machine match any part of the name, in any case
        ({"user": "EMPLOY"}, {"psk_ja", "psk_fix", "running"}),
        ({"machine": "OSAKA"}, {"dns_error", "running"}),
        ({"machine": "pc-"}, {"psk_ja", "psk_fix", "dns_error", "running"}),
        ({"article": "l2tp-psk"}, {"psk_ja", "psk_fix", "rollback"}),
        ({"status": "error"}, {"dns_error"}),
        ({"status": "running"}, {"running"}),
        ({"kind": "fix"}, {"psk_fix"}),
        ({"kind": "rollback"}, {"rollback"}),
        ({"outcome": "fixed"}, {"psk_fix"}),
        ({"outcome": "none"}, {"running"}),
        ({"date_from": "2026-03-03", "date_to": "2026-03-04"}, {"psk_fix", "dns_error"}),
        ({"date_to": "2026-03-02"}, {"psk_ja"}),
        ({"user": "other", "kind": "rollback"}, {"rollback"}),
        ({"q": "ネゴシエート"}, {"psk_ja"}),
        ({"q": "OSAKA"}, {"dns_error", "running"}),
        ({"q": "access is denied"}, {"dns_error"}),
        ({"q": "rpc server"}, {"rollback"}),
        ({"q": "809"}, {"running"}),
        ({"q": "kobe", "status": "done"}, {"rollback"}),
        ({"q": "no such text anywhere"}, set()),
    ],
)
def test_each_filter_and_search_finds_exactly_the_matching_jobs(
    helpdesk_client, dataset, params, expected
):
    response = helpdesk_client.get(reverse("diagnostics:history"), params)
    assert response.status_code == 200
    assert _ids(response) == {dataset[name].pk for name in expected}


def test_a_too_short_search_is_refused_with_a_message_and_other_filters_still_apply(
    helpdesk_client, dataset
):
    response = helpdesk_client.get(
        reverse("diagnostics:history"), {"q": "pc", "kind": "fix"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert "at least 3 characters" in response.content.decode()
    assert _ids(response) == {dataset["psk_fix"].pk}


def test_history_is_newest_first_and_escapes_what_users_typed(helpdesk_client, dataset, employee):
    evil = JobFactory(
        user=employee,
        machine=dataset["psk_ja"].machine,
        article=dataset["psk_ja"].article,
        pasted_text="<script>alert(1)</script>",
        created_at=T0 + timedelta(days=9),
    )
    response = helpdesk_client.get(reverse("diagnostics:history"), {"q": "<script>"})
    assert _ids(response) == {evil.pk}
    assert "<script>alert(1)</script>" not in response.content.decode()
    jobs = helpdesk_client.get(reverse("diagnostics:history")).context["page"].jobs
    assert [j.created_at for j in jobs] == sorted((j.created_at for j in jobs), reverse=True)


def test_query_count_does_not_grow_with_rows(helpdesk_client, dataset, django_assert_num_queries):
    url = reverse("diagnostics:history")
    # Session, user, two permission lookups, the article choices; two search branches on
    # the job, the newest jobs, then their errors; the page's rows with user, machine and
    # article.
    with django_assert_num_queries(10):
        small = helpdesk_client.get(url, {"q": "error"})
    psk = dataset["psk_ja"]
    for n in range(60):
        JobFactory(
            user=psk.user,
            machine=MachineFactory(),
            article=ArticleFactory(),
            pasted_text=f"error {n}",
        )
    with django_assert_num_queries(10):
        big = helpdesk_client.get(url, {"q": "error"})
    assert len(small.context["page"].jobs) < len(big.context["page"].jobs) == history.PAGE_SIZE
    # the article's slug resolved once; user and machine names are subqueries of the page's
    with django_assert_num_queries(7):
        helpdesk_client.get(
            url, {"user": "employee", "machine": "pc-tokyo-01", "article": "l2tp-psk"}
        )


# --- keyset pages --------------------------------------------------------------------------


def test_keyset_pages_have_no_gaps_or_duplicates_while_new_jobs_arrive(helpdesk_client, employee):
    machine, article = MachineFactory(), ArticleFactory()
    # Ties on created_at included: (created_at, id) must still order every row.
    originals = [
        JobFactory(
            user=employee,
            machine=machine,
            article=article,
            created_at=T0 + timedelta(seconds=n // 3),
        )
        for n in range(130)
    ]
    url = reverse("diagnostics:history")
    seen: list[int] = []
    params: dict = {"machine": machine.name}
    pages = 0
    while True:
        response = helpdesk_client.get(url, params)
        seen += [job.pk for job in response.context["page"].jobs]
        pages += 1
        # New jobs arrive between page fetches, newer than everything listed so far.
        JobFactory(user=employee, machine=machine, article=article, created_at=timezone.now())
        cursor = response.context["page"].next_cursor
        if not cursor:
            break
        assert f"after={cursor}" in response.content.decode()
        params = {"machine": machine.name, "after": cursor}
    assert pages == 3
    assert len(seen) == len(set(seen)) == 130
    assert seen == [job.pk for job in sorted(originals, key=lambda j: (j.created_at, j.pk))][::-1]


def test_a_malformed_cursor_starts_at_the_newest_job(helpdesk_client, dataset):
    for bad in ("%%%", "bm90LWEtY3Vyc29y", "x" * 100, "LTEuLTE"):
        response = helpdesk_client.get(reverse("diagnostics:history"), {"after": bad})
        assert response.status_code == 200
        assert response.context["page"].jobs[0] == dataset["running"]


@pytest.mark.parametrize("micro", [0, 1, 678901, 999999])
def test_cursor_round_trips_to_the_microsecond(micro):
    cursor = history.Cursor(datetime(2026, 1, 2, 3, 4, 5, micro, tzinfo=UTC), 42)
    assert history.decode_cursor(history.encode_cursor(cursor)) == cursor


def test_a_common_step_error_is_searched_in_bounded_chunks_without_gaps(monkeypatch, employee):
    """The walk for a common step error: short pages end at the scan boundary, none lost."""
    monkeypatch.setattr(history, "ERROR_HITS_CAP", 2)
    monkeypatch.setattr(history, "ERROR_SCAN_CHUNK", 4)
    monkeypatch.setattr(history, "ERROR_SCAN_CHUNKS", 2)
    machine, article = MachineFactory(), ArticleFactory()
    jobs = [JobFactory(user=employee, machine=machine, article=article) for _ in range(40)]
    matching = {job.pk for job in jobs[::7]}  # sparse: some 8-job scans find nothing
    for job in jobs:
        StepResult.objects.create(
            job=job,
            step_id="c1",
            position=0,
            kind="service_status",
            verdict=StepResult.Verdict.ERROR,
            error="The RPC server is unavailable" if job.pk in matching else "Timed out",
        )
    filters = history.Filters(text="rpc SERVER")
    seen: list[int] = []
    cursor, pages = None, 0
    while True:
        page = history.fetch_page(filters, cursor, size=3)
        seen += [job.pk for job in page.jobs]
        pages += 1
        if not page.next_cursor:
            break
        cursor = history.decode_cursor(page.next_cursor)
    assert sorted(seen, reverse=True) == seen and set(seen) == matching
    assert len(seen) == len(matching) and pages > len(matching) // 3
    exported = [row[0] for batch in history.export_rows(filters, batch=3) for row in batch]
    assert exported == seen


def _step(job: Job, n: int, error: str) -> None:
    StepResult.objects.create(
        job=job,
        step_id=f"c{n}",
        position=n,
        kind="service_status",
        verdict=StepResult.Verdict.ERROR if error else StepResult.Verdict.PASS,
        error=error,
    )


def test_step_errors_are_gathered_on_their_job_once_each_and_bounded(employee):
    job = JobFactory(user=employee, machine=MachineFactory(), article=ArticleFactory())
    _step(job, 1, "Access is denied.\r\n    (0x80070005)")
    _step(Job.objects.get(pk=job.pk), 2, "Access is denied. (0x80070005)")  # another instance
    _step(job, 3, "")
    _step(job, 4, "The RPC server is unavailable")
    job.refresh_from_db()
    assert job.step_errors == "Access is denied. (0x80070005)\nThe RPC server is unavailable"

    for n in range(5, 40):
        _step(job, n, f"step {n:03d} " + "x" * 500)
    job.refresh_from_db()
    assert len(job.step_errors) <= Job.STEP_ERRORS_MAX
    assert "step 005 " in job.step_errors and "step 039 " not in job.step_errors
    assert StepResult.objects.get(job=job, step_id="c39").error.startswith("step 039")


def test_the_migration_gathers_the_errors_of_steps_recorded_before_it(monkeypatch, employee):
    from django.apps import apps

    migration = importlib.import_module("diagnostics.migrations.0007_job_step_errors")
    monkeypatch.setattr(migration, "BATCH", 2)  # several rounds, a job never cut in two
    machine, article = MachineFactory(), ArticleFactory()
    jobs = [JobFactory(user=employee, machine=machine, article=article) for _ in range(5)]
    for i, job in enumerate(jobs):
        for n in range(3):
            _step(job, n, f"error {n % 2} of job {i}" if i != 2 else "")
    Job.objects.update(step_errors="")

    migration.backfill(apps, None)
    found = dict(Job.objects.values_list("pk", "step_errors"))
    expected = {job.pk: f"error 0 of job {i}\nerror 1 of job {i}" for i, job in enumerate(jobs)}
    expected[jobs[2].pk] = ""
    assert found == expected


# --- live rows -----------------------------------------------------------------------------


def test_running_rows_poll_for_updates_and_stop_once_finished(helpdesk_client, dataset):
    running = dataset["running"]
    page = helpdesk_client.get(reverse("diagnostics:history")).content.decode()
    row_url = reverse("diagnostics:helpdesk-job", args=[running.pk]) + "?row=1"
    assert page.count('hx-trigger="every') == 1 and row_url in page
    url = reverse("diagnostics:helpdesk-job", args=[running.pk])
    fragment = helpdesk_client.get(url, {"row": "1"}, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith(f'<tr id="history-job-{running.pk}"')
    assert 'hx-trigger="every' in fragment
    running.finish(Job.Status.DONE, Job.Outcome.PROBLEMS)
    fragment = helpdesk_client.get(url, {"row": "1"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="done"' in fragment and "hx-trigger" not in fragment


# --- detail and re-run ---------------------------------------------------------------------


def test_detail_shows_masked_plan_diff_output_and_audit_but_never_a_secret(
    helpdesk_client, helpdesk, dataset
):
    secret = Secret(name="company-psk", description="L2TP PSK")
    secret.set_value("Top-Secret-PSK-Value-9")
    secret.save()
    job = dataset["psk_fix"]
    job.plan = {
        "version": 1,
        "job": str(job.pk),
        "steps": [
            {"id": "f1", "kind": "set_l2tp_psk", "args": {"psk": {"secret": "company-psk"}}},
            {"id": "f2", "kind": "set_value", "args": {"password": "********"}},
        ],
    }
    job.transcript = '{"step": "f1", "ok": true} <b>raw</b>'
    job.save()
    StepResult.objects.create(
        job=job,
        step_id="f1",
        position=0,
        phase=StepResult.Phase.FIX,
        kind="set_registry_value",
        before={"AssumeUDPEncapsulationContextOnSendRule": 0},
        after={"AssumeUDPEncapsulationContextOnSendRule": 2},
        changed=True,
        verdict=StepResult.Verdict.DONE,
        duration_ms=321,
    )
    AuditEntry.objects.create(
        actor=helpdesk,
        action=AuditEntry.Action.FIX_APPROVED,
        job=job,
        machine=job.machine,
        detail="approved on the phone",
    )
    body = helpdesk_client.get(reverse("diagnostics:helpdesk-job", args=[job.pk])).content.decode()
    assert "company-psk" in body and "********" in body
    assert "Top-Secret-PSK-Value-9" not in body and "Host-Pw-Never-Shown-1" not in body
    assert "AssumeUDPEncapsulationContextOnSendRule" in body and "321" in body
    assert "&lt;b&gt;raw&lt;/b&gt;" in body and "<b>raw</b>" not in body
    assert "approved on the phone" in body


def test_detail_bounds_a_huge_transcript(helpdesk_client, dataset):
    job = dataset["psk_ja"]
    job.transcript = "HEAD" + "x" * 500_000 + "TAIL"
    job.save()
    response = helpdesk_client.get(reverse("diagnostics:helpdesk-job", args=[job.pk]))
    body = response.content.decode()
    assert "HEAD" in body and "TAIL" in body and len(body) < 100_000


@pytest.fixture
def checked_article(db):
    article = ArticleFactory(slug="with-checks")
    Check.objects.create(
        article=article,
        key="svc",
        title_ja="サービス",
        title_en="Service",
        kind="service_status",
        args={"name": "RasMan"},
        expect=[{"fact": "status", "op": "eq", "value": "Running"}],
    )
    return article


def test_rerun_creates_a_diagnosis_of_the_same_machine_and_article(
    helpdesk_client, helpdesk, employee, checked_article
):
    old = JobFactory(user=employee, article=checked_article, pasted_text=PSK_JA)
    response = helpdesk_client.post(reverse("diagnostics:helpdesk-job-rerun", args=[old.pk]))
    new = Job.objects.exclude(pk=old.pk).get()
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnostics:job-detail", args=[new.pk])
    assert (new.machine, new.article, new.kind, new.status) == (
        old.machine,
        old.article,
        Job.Kind.DIAGNOSE,
        Job.Status.QUEUED,
    )
    assert new.user == helpdesk and new.pasted_text == PSK_JA


def test_rerun_on_a_busy_machine_says_why_and_creates_nothing(
    helpdesk_client, employee, checked_article
):
    old = JobFactory(user=employee, article=checked_article)
    JobFactory(user=employee, machine=old.machine, article=checked_article, status="running")
    url = reverse("diagnostics:helpdesk-job-rerun", args=[old.pk])
    response = helpdesk_client.post(url, follow=True, HTTP_ACCEPT_LANGUAGE="en")
    assert Job.objects.count() == 2
    assert f"{old.machine.name} is busy" in response.content.decode()


def test_rerun_needs_post(helpdesk_client, dataset):
    url = reverse("diagnostics:helpdesk-job-rerun", args=[dataset["psk_ja"].pk])
    assert helpdesk_client.get(url).status_code == 405


# --- CSV export ----------------------------------------------------------------------------


def _csv(response) -> list[list[str]]:
    data = b"".join(response.streaming_content).decode("utf-8")
    assert data.startswith("\ufeff")
    return list(csv.reader(io.StringIO(data[1:])))


def test_export_has_the_columns_the_filters_and_japanese_text(helpdesk_client, dataset, employee):
    formula = JobFactory(
        user=employee,
        machine=dataset["psk_ja"].machine,
        article=dataset["psk_ja"].article,
        status=Job.Status.ERROR,
        error='=HYPERLINK("http://x") 接続できません',
    )
    rows = _csv(
        helpdesk_client.get(reverse("diagnostics:history-export"), {"machine": "pc-tokyo-01"})
    )
    assert rows[0] == [
        "id",
        "created_at",
        "user",
        "machine",
        "article",
        "kind",
        "status",
        "outcome",
        "failed_checks",
        "error",
    ]
    assert len(rows) == 4 and {r[3] for r in rows[1:]} == {"pc-tokyo-01"}
    by_id = {int(r[0]): r for r in rows[1:]}
    assert by_id[dataset["psk_ja"].pk][8] == "1"  # its one failed check
    assert by_id[formula.pk][9] == '\'=HYPERLINK("http://x") 接続できません'  # never a live formula


def _insert_jobs(n: int, user, machine: Machine, article: Article) -> None:
    """n finished jobs, one second apart, in one INSERT ... SELECT (bulk_create takes 15 s)."""
    if connection.vendor == "postgresql":
        created = "%s::timestamptz + s.i * interval '1 second'"
    else:
        created = "datetime(%s, '+' || s.i || ' seconds')"
    sql = f"""
        WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < %s)
        INSERT INTO diagnostics_job (user_id, machine_id, article_id, kind, status, outcome,
            pasted_text, fix_keys, restart, plan, note, error, language, step_errors, transcript,
            stderr, step_count, turn, stage, created_at)
        SELECT %s, %s, %s, 'diagnose', 'done', 'problems', '', '[]', '', '{{}}', '',
            CASE WHEN s.i %% 10 = 0 THEN '設定が違います' ELSE '' END, 'ja', '', '', '', 0, 1, '',
            {created}
        FROM s"""
    start = T0.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    with connection.cursor() as cursor:
        cursor.execute(sql, [n - 1, user.pk, machine.pk, article.pk, start])
    assert Job.objects.filter(machine=machine).count() == n


def test_export_of_100000_jobs_streams_in_bounded_memory(helpdesk_client, employee):
    machine, article = MachineFactory(), ArticleFactory()
    n = 100_000
    _insert_jobs(n, employee, machine, article)
    response = helpdesk_client.get(reverse("diagnostics:history-export"))
    assert response.streaming
    rows = 0
    size = 0
    tracemalloc.start()
    try:
        for chunk in response.streaming_content:
            rows += chunk.count(b"\n")
            size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n + 1  # the header and every job, once
    assert size > 3_000_000
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
