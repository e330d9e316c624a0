"""The helpdesk dashboard: its numbers equal counts made directly from a known dataset."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnostics import charts, dashboard
from diagnostics.matching import THRESHOLD
from diagnostics.models import Article, Check, Credential, Job, Machine, StepResult

pytestmark = pytest.mark.django_db

TEXTS = [
    "エラー 789: L2TP 接続に失敗しました",
    "VPN が突然切れる",
    "Error 720: no PPP control protocols configured",
    "プリンターが印刷できない",
]
FAILED = {Job.Outcome.PROBLEMS, Job.Outcome.NOT_FIXED, Job.Outcome.ERROR}


@pytest.fixture
def dataset(employee, other_employee):
    """~150 jobs over 45 days on 5 machines and 3 articles, with step results; seeded."""
    rnd = random.Random(6)
    now = timezone.now()
    cred = Credential(name="fleet", username="kaiketsu")
    cred.set_password("pw")
    cred.save()
    machines = [
        Machine.objects.create(
            name=f"pc{i}", address="127.0.0.1", port=1, scheme="http", credential=cred
        )
        for i in range(5)
    ]
    articles, checks = [], []
    for i in range(3):
        a = Article.objects.create(
            slug=f"art-{i}", title_ja=f"記事{i}", title_en=f"Article {i}", status="published"
        )
        articles.append(a)
        for k in range(2):
            checks.append(
                Check.objects.create(
                    article=a,
                    key=f"chk{k}",
                    title_ja=f"確認{i}-{k}",
                    title_en=f"Check {i}-{k}",
                    kind="service_status",
                    position=k,
                )
            )
    jobs, steps = [], []
    for _ in range(150):
        kind = rnd.choice([Job.Kind.DIAGNOSE] * 3 + [Job.Kind.FIX])
        if kind == Job.Kind.FIX:
            outcome = rnd.choice([Job.Outcome.FIXED, Job.Outcome.NOT_FIXED, Job.Outcome.ERROR])
        else:
            outcome = rnd.choice(
                [Job.Outcome.HEALTHY, Job.Outcome.PROBLEMS, Job.Outcome.ERROR, Job.Outcome.NONE]
            )
        created = now - dt.timedelta(days=rnd.randint(0, 45), minutes=rnd.randint(0, 1439))
        job = Job(
            user=rnd.choice([employee, other_employee]),
            machine=rnd.choice(machines),
            article=rnd.choice(articles),
            kind=kind,
            # unfinished jobs are "waiting": not covered by the one-active-job constraint
            status=Job.Status.WAITING if outcome == Job.Outcome.NONE else Job.Status.DONE,
            outcome=outcome,
            pasted_text=rnd.choice(TEXTS + [""]),
            match_score=rnd.choice([None, 0.1, 0.3, 0.44, 0.45, 0.8]),
            created_at=created,
        )
        jobs.append(job)
    Job.objects.bulk_create(jobs)
    for job in jobs:
        for pos in range(rnd.randint(0, 3)):
            steps.append(
                StepResult(
                    job=job,
                    step_id=f"c{pos + 1}",
                    position=pos,
                    kb_check=rnd.choice(checks + [None]),
                    kind="service_status",
                    verdict=rnd.choice(["pass", "fail", "error", "done"]),
                    created_at=job.created_at + dt.timedelta(seconds=pos),
                )
            )
    StepResult.objects.bulk_create(steps)
    return {"now": now, "jobs": jobs, "steps": steps}


def _in_window(when: dt.datetime, now: dt.datetime, days: int = dashboard.DAYS) -> bool:
    today = timezone.localtime(now).date()
    return timezone.localtime(when).date() >= today - dt.timedelta(days=days - 1) and when <= now


def test_jobs_per_day_equal_direct_counts_by_local_day_and_outcome(dataset):
    now = dataset["now"]
    expected = Counter(
        (timezone.localtime(j.created_at).date(), j.outcome)
        for j in dataset["jobs"]
        if _in_window(j.created_at, now)
    )
    result = dashboard.jobs_per_day(now)
    assert len(result.days) == 30 and result.days[-1] == timezone.localtime(now).date()
    assert {k: v for k, v in result.counts.items() if v} == dict(expected)
    assert result.total == sum(expected.values()) > 0


def test_top_articles_count_diagnoses_only(dataset):
    now = dataset["now"]
    expected = Counter(
        j.article.slug
        for j in dataset["jobs"]
        if j.kind == Job.Kind.DIAGNOSE and _in_window(j.created_at, now)
    )
    result = dashboard.top_articles(now)
    assert {r["article__slug"]: r["n"] for r in result} == dict(expected)
    assert [r["n"] for r in result] == sorted((r["n"] for r in result), reverse=True)


def test_failing_checks_count_fail_and_error_verdicts_per_check(dataset):
    now = dataset["now"]
    fail = Counter()
    error = Counter()
    for s in dataset["steps"]:
        if s.kb_check is not None and _in_window(s.created_at, now):
            if s.verdict == "fail":
                fail[s.kb_check.pk] += 1
            elif s.verdict == "error":
                error[s.kb_check.pk] += 1
    result = dashboard.failing_checks(now, limit=100)
    assert {r["kb_check_id"]: (r["fail"], r["error"]) for r in result} == {
        pk: (fail[pk], error[pk]) for pk in set(fail) | set(error)
    }
    assert all(r["n"] == r["fail"] + r["error"] for r in result)


def test_fix_success_rate_is_fixed_over_fixed_and_not_fixed_per_week(dataset):
    now = dataset["now"]
    today = timezone.localtime(now).date()
    first = today - dt.timedelta(days=today.weekday(), weeks=dashboard.WEEKS - 1)
    fixed, not_fixed = Counter(), Counter()
    for j in dataset["jobs"]:
        day = timezone.localtime(j.created_at).date()
        if j.kind != Job.Kind.FIX or day < first:
            continue
        monday = day - dt.timedelta(days=day.weekday())
        if j.outcome == Job.Outcome.FIXED:
            fixed[monday] += 1
        elif j.outcome == Job.Outcome.NOT_FIXED:
            not_fixed[monday] += 1
    result = dashboard.fix_success(now)
    assert [w["week"] for w in result][0] == first and len(result) == dashboard.WEEKS
    for w in result:
        assert (w["fixed"], w["not_fixed"]) == (fixed[w["week"]], not_fixed[w["week"]])
        total = fixed[w["week"]] + not_fixed[w["week"]]
        assert w["rate"] == (fixed[w["week"]] / total if total else None)
    assert sum(w["fixed"] for w in result) > 0


def test_repeated_failures_list_machines_with_two_or_more_failed_jobs(dataset):
    now = dataset["now"]
    counts = Counter(
        j.machine.name
        for j in dataset["jobs"]
        if j.outcome in FAILED and _in_window(j.created_at, now)
    )
    result = dashboard.repeated_failures(now)
    assert {r["machine__name"]: r["n"] for r in result} == {
        name: n for name, n in counts.items() if n >= 2
    }


def test_unmatched_texts_are_weak_or_unscored_diagnosis_pastes(dataset):
    now = dataset["now"]
    expected = Counter(
        j.pasted_text
        for j in dataset["jobs"]
        if j.kind == Job.Kind.DIAGNOSE
        and j.pasted_text
        and (j.match_score is None or j.match_score < THRESHOLD)
        and _in_window(j.created_at, now)
    )
    result = dashboard.unmatched_texts(now)
    assert {r["pasted_text"]: r["n"] for r in result} == dict(expected)
    assert all(r["draft_url"].startswith("/admin/diagnostics/article/add/?") for r in result)


def _section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.find("<section", start)
    return html[start : end if end > 0 else None]


def test_dashboard_page_shows_the_same_numbers_in_few_queries(
    client, helpdesk, dataset, django_assert_max_num_queries
):
    client.force_login(helpdesk)
    # session, user, 2 permission lookups, one aggregate per chart or table, and the
    # searches that matched nothing (the second source of the blind-spot table), and the
    # hand-overs: one aggregate of the open ones, one read of those closed in the window
    with django_assert_max_num_queries(13):
        response = client.get(reverse("diagnostics:dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    now = dataset["now"]
    window = [j for j in dataset["jobs"] if _in_window(j.created_at, now)]
    bars = re.findall(r'data-series="(\w+)" data-value="(\d+)"', _section(html, "jobs-per-day"))
    per_outcome = Counter()
    for series, value in bars:
        per_outcome[series] += int(value)
    assert dict(per_outcome) == dict(Counter(j.outcome or "none" for j in window))
    repeated = dict(
        re.findall(
            r'data-machine="([^"]+)" data-count="(\d+)"', _section(html, "repeated-failures")
        )
    )
    failed = Counter(j.machine.name for j in window if j.outcome in FAILED)
    assert repeated == {k: str(v) for k, v in failed.items() if v >= 2}
    assert "<svg" in html and "<script" not in _section(html, "jobs-per-day")


def test_draft_link_opens_the_admin_add_form_with_the_text_prefilled(admin_client):
    url = dashboard.draft_article_url("エラー 812: 接続は拒否されました\n詳しくは…")
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "エラー 812: 接続は拒否されました" in response.content.decode()


def test_employee_and_anonymous_do_not_see_the_dashboard(client, employee):
    response = client.get(reverse("diagnostics:dashboard"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    client.force_login(employee)
    assert client.get(reverse("diagnostics:dashboard")).status_code == 404


def test_charts_escape_labels_and_scale_to_a_round_maximum():
    svg = charts.horizontal_bars("t<", [("<script>x</script>", 3, "/a?b=1&c=2")])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&amp;c=2" in svg
    assert [charts.nice_ceiling(v) for v in (0, 1, 3, 7, 11, 49, 51)] == [1, 1, 5, 10, 20, 50, 100]
    stacked = charts.stacked_bars(
        "t",
        ["a", "b"],
        [charts.Series("x", "X", "#000", [1, 0]), charts.Series("y", "Y", "#111", [2, 5])],
    )
    assert re.findall(r'data-label="(\w)" data-series="(\w)" data-value="(\d)"', stacked) == [
        ("a", "x", "1"),
        ("a", "y", "2"),
        ("b", "y", "5"),
    ]
    assert "No data" in charts.stacked_bars(
        "t", ["a"], [charts.Series("x", "X", "#000", [0])], empty="No data"
    )


def test_only_staff_who_may_add_articles_get_the_draft_links(
    client, helpdesk, admin_client, dataset
):
    client.force_login(helpdesk)
    add_url = reverse("admin:diagnostics_article_add")
    assert add_url not in client.get(reverse("diagnostics:dashboard")).content.decode()
    assert add_url in admin_client.get(reverse("diagnostics:dashboard")).content.decode()
