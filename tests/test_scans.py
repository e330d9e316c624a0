"""Fleet scans: bounded, counted right, every machine accounted for; real worker and winsim."""

import time

import pytest
from django.db.models import Count
from django.urls import reverse

from diagnostics.models import Job, Machine, Scan, StepResult
from diagnostics.workflows import scan as scans

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wait_for_scan(scan: Scan, timeout: float = 120) -> Scan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan.refresh_from_db()
        if scan.finished_at:
            return scan
        time.sleep(0.2)
    raise AssertionError(f"scan {scan.pk} unfinished: {scans.summary(scan)}")


def _most_at_once(jobs) -> int:
    """The most jobs whose lives (created .. finished) overlapped at one moment."""
    edges = sorted([(j.created_at, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_a_fleet_scan_covers_every_machine_a_few_at_a_time_and_counts_right(
    demo_machines, seed_article, helpdesk, use_worker_queue, settings
):
    settings.KAIKETSU_SCAN_CONCURRENCY = 3
    busy = demo_machines["demo-nat-t"]
    Job.objects.create(user=helpdesk, machine=busy, article=seed_article, status=Job.Status.RUNNING)

    scan = scans.start_scan(helpdesk, seed_article, scans.Selection())
    scans.send_tick(scan.pk)  # transaction=True tests: on_commit does not fire
    scan = _wait_for_scan(scan)

    jobs = list(scan.jobs.all())
    summary = scans.summary(scan)
    everyone = set(Machine.objects.values_list("pk", flat=True))
    assert {j.machine_id for j in jobs} | {s["machine"] for s in scan.skipped} == everyone
    assert [s["name"] for s in scan.skipped] == ["demo-nat-t"]  # busy: named, not run
    assert _most_at_once(jobs) <= 3
    assert summary.done == summary.total == len(everyone)
    by_outcome = dict(scan.jobs.values_list("outcome").annotate(n=Count("pk")))
    assert summary.healthy == by_outcome.get(Job.Outcome.HEALTHY, 0)
    assert summary.problems == by_outcome.get(Job.Outcome.PROBLEMS, 0) > 0
    assert summary.unreachable == by_outcome.get(Job.Outcome.ERROR, 0) >= 1  # demo-unreachable
    failing = StepResult.objects.filter(job__scan=scan).exclude(verdict="pass")
    assert sum(row["n"] for row in summary.failing_checks) == failing.count()
    assert all(
        j.kind == Job.Kind.DIAGNOSE and j.steps.filter(phase="fix").count() == 0 for j in jobs
    )


def test_the_helpdesk_starts_a_scan_and_reads_and_exports_its_results(
    client, demo_machines, seed_article, helpdesk, use_worker_queue
):
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:scans"),
        {"article": seed_article.pk, "name_pattern": "DEMO-P*"},  # case-insensitive
    )
    scan = Scan.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnostics:scan", args=[scan.pk])
    wanted = {"demo-psk-mismatch", "demo-policyagent-stopped", "demo-prohibit-ipsec"}
    assert (
        set(Machine.objects.filter(pk__in=scan.machine_ids).values_list("name", flat=True))
        == wanted
    )
    scans.send_tick(scan.pk)
    scan = _wait_for_scan(scan)

    page = client.get(reverse("diagnostics:scan", args=[scan.pk]), {"show": "problems"})
    text = page.content.decode()
    assert page.status_code == 200
    assert all(f'data-machine="{name}"' in text for name in wanted)
    for job in scan.jobs.filter(outcome=Job.Outcome.PROBLEMS):  # one click to its fixes
        assert reverse("diagnostics:fix-confirm", args=[job.pk]) in text
    export = b"".join(client.get(reverse("diagnostics:scan-export", args=[scan.pk]))).decode()
    assert export.startswith("\ufeffmachine,job,status,outcome")
    assert all(name in export for name in wanted)


def test_a_selection_that_matches_nothing_is_refused_with_a_message(
    client, demo_machines, seed_article, helpdesk
):
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:scans"),
        {"article": seed_article.pk, "owner": "nobody"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    assert Scan.objects.count() == 0
    assert "No machine matches this selection." in response.content.decode()
