"""From diagnosis to verified fix, with a real worker, Redis and winsim hosts of the test's own."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from diagnostics import jobs
from diagnostics.models import (
    Article,
    AuditEntry,
    Check,
    Fix,
    Job,
    StepResult,
)
from diagnostics.workflows import fixes
from tests.conftest import COMPANY_PSK, diagnose, wait_for_job

RASMAN = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters"

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Each demo host whose fault has an automated fix, and the article fix that mends it.
FIXABLE = {
    "demo-policyagent-stopped": "start-policyagent",
    "demo-ikeext-disabled": "start-ikeext",
    "demo-ipsec-proposal": "revert-ipsec-default",
    "demo-nat-t": "set-nat-traversal-2",
    "demo-prohibit-ipsec": "remove-prohibit-ipsec",
    "demo-psk-mismatch": "reset-company-psk",
}


def _queued(job):
    if job.status == Job.Status.QUEUED:
        jobs.enqueue(job.pk)
    return job


def _fix(diagnosis, user, keys, restart=Job.Restart.NOW, approver=None):
    job = fixes.request_fix(user, diagnosis, keys, restart)
    if job.status == Job.Status.APPROVAL:
        fixes.decide(job, approver, approve=True)
        job.refresh_from_db()
    return wait_for_job(_queued(job), timeout=120, connect=True)


@pytest.mark.parametrize("host", sorted(FIXABLE))
def test_each_fixable_demo_host_ends_fixed_and_really_dials(
    host, fresh_machines, seed_article, employee, helpdesk, company_psk, use_worker_queue
):
    diagnosis = diagnose(fresh_machines[host], seed_article, employee)
    offered = [o.fix.key for o in fixes.offered_fixes(diagnosis)]
    assert FIXABLE[host] in offered

    job = _fix(diagnosis, employee, [FIXABLE[host]], approver=helpdesk)

    assert (job.status, job.outcome) == (Job.Status.DONE, Job.Outcome.FIXED), job.error
    # Verified by the employee's own attempt, read back from the event log; no portal dial.
    assert not job.steps.filter(kind="vpn_dial").exists()
    last_poll = job.steps.filter(step_id__startswith="w").order_by("-position").first()
    assert last_poll.facts["events"][0]["id"] == 20225
    assert job.steps.filter(phase="fix", changed=True).exists()
    assert AuditEntry.objects.filter(job=job, action="fix_applied").exists()


def test_rolling_back_a_fix_restores_the_fault(
    fresh_machines, seed_article, employee, use_worker_queue
):
    machine = fresh_machines["demo-nat-t"]
    fix_job = _fix(diagnose(machine, seed_article, employee), employee, ["set-nat-traversal-2"])
    assert fix_job.outcome == Job.Outcome.FIXED

    rollback = wait_for_job(_queued(fixes.request_rollback(employee, fix_job)), timeout=120)

    assert (rollback.status, rollback.outcome) == (Job.Status.DONE, Job.Outcome.ROLLED_BACK)
    restored = rollback.steps.get(phase="rollback", kind="set_registry_value")
    assert restored.after == {"exists": False, "value": None, "type": None}
    again = diagnose(machine, seed_article, employee)
    failing = {
        s.kb_check.key for s in again.steps.select_related("kb_check") if s.verdict == "fail"
    }
    assert "nat-traversal-registry" in failing
    assert AuditEntry.objects.filter(job=rollback, action="rollback", actor=employee).exists()


def test_a_fix_run_twice_changes_nothing_the_second_time(
    fresh_machines, seed_article, employee, use_worker_queue
):
    diagnosis = diagnose(fresh_machines["demo-policyagent-stopped"], seed_article, employee)
    first = _fix(diagnosis, employee, ["start-policyagent"])
    second = _fix(diagnosis, employee, ["start-policyagent"])

    assert first.steps.get(phase="fix").changed is True
    repeat = second.steps.get(phase="fix")
    assert repeat.changed is False and repeat.before == repeat.after
    assert second.outcome == Job.Outcome.FIXED


def test_fix_needing_approval_waits_and_can_be_declined_then_approved(
    fresh_machines, seed_article, employee, helpdesk, company_psk, use_worker_queue
):
    diagnosis = diagnose(fresh_machines["demo-psk-mismatch"], seed_article, employee)

    declined = fixes.request_fix(employee, diagnosis, ["reset-company-psk"])
    assert declined.status == Job.Status.APPROVAL
    fixes.decide(declined, helpdesk, approve=False, note="Call me first")
    declined.refresh_from_db()
    assert (declined.status, declined.error, declined.decided_by) == (
        Job.Status.DECLINED,
        "Call me first",
        helpdesk,
    )
    assert not declined.steps.exists()

    approved = _fix(diagnosis, employee, ["reset-company-psk"], approver=helpdesk)
    assert approved.outcome == Job.Outcome.FIXED
    actions = list(AuditEntry.objects.filter(job=approved).values_list("action", flat=True))
    assert {"fix_requested", "fix_approved", "fix_applied"} <= set(actions)


def test_the_company_psk_never_appears_in_anything_stored_or_logged(
    fresh_machines, seed_article, employee, helpdesk, company_psk, worker, use_worker_queue
):
    diagnosis = diagnose(fresh_machines["demo-psk-mismatch"], seed_article, employee)
    job = _fix(diagnosis, employee, ["reset-company-psk"], approver=helpdesk)
    assert job.outcome == Job.Outcome.FIXED

    stored = [str(job.plan), job.transcript, job.stderr, job.error, job.note]
    for step in StepResult.objects.all():
        stored += [str(step.facts), str(step.before), str(step.after), step.error]
    for entry in AuditEntry.objects.all():
        stored += [str(entry.changes), entry.detail]
    with open(worker.log_path, encoding="utf-8", errors="replace") as log:
        stored.append(log.read())
    assert all(COMPANY_PSK not in text for text in stored)
    assert company_psk.value_encrypted and COMPANY_PSK not in company_psk.value_encrypted
    assert {"secret": "company-l2tp-psk"} in [s["args"].get("psk") for s in job.plan["steps"]]


def test_restart_later_waits_until_the_employee_asks_to_verify(
    fresh_machines, seed_article, employee, use_worker_queue
):
    diagnosis = diagnose(fresh_machines["demo-nat-t"], seed_article, employee)
    job = fixes.request_fix(employee, diagnosis, ["set-nat-traversal-2"], Job.Restart.LATER)
    jobs.enqueue(job.pk)
    _wait_status(job, Job.Status.WAITING)
    assert not job.steps.filter(phase="verify").exists()

    fixes.resume(job, employee, restart_now=True)
    job = wait_for_job(job, timeout=120, connect=True)

    assert job.outcome == Job.Outcome.FIXED
    assert job.steps.filter(phase="fix", kind="set_registry_value").count() == 1  # not re-applied


def test_a_check_broken_by_a_fix_is_rolled_back_automatically(
    fresh_machines, employee, use_worker_queue
):
    # A fix is offered only for a current failure whose code fits (issue #9): the host's
    # last attempt failed with 789 minutes ago, and this article answers 789.
    article = Article.objects.create(
        slug="test-regression", status="published", title_ja="t", title_en="t", error_codes=[789]
    )
    bad_fix = Fix.objects.create(
        article=article,
        key="set-and-break",
        title_ja="x",
        title_en="x",
        steps=[
            {"kind": "set_registry_value", "args": {
                "path": RASMAN, "name": "ProhibitIpSec", "type": "DWord", "value": 1}},
            {"kind": "set_service", "args": {"name": "PolicyAgent", "action": "stop"}},
        ],
    )  # fmt: skip
    Check.objects.create(
        article=article, key="agent", position=0, title_ja="agent runs", title_en="agent runs",
        kind="service", args={"name": "PolicyAgent"},
        expect=[{"fact": "status", "op": "eq", "value": "Running"}],
    )  # fmt: skip
    Check.objects.create(
        article=article, key="flag", position=1, title_ja="f", title_en="flag set",
        kind="registry_value", args={"path": RASMAN, "name": "ProhibitIpSec"},
        expect=[{"fact": "value", "op": "eq", "value": 1}], fix=bad_fix,
    )  # fmt: skip
    diagnosis = diagnose(fresh_machines["demo-psk-mismatch"], article, employee)

    job = _fix(diagnosis, employee, ["set-and-break"])

    assert (job.status, job.outcome) == (Job.Status.DONE, Job.Outcome.NOT_FIXED)
    assert "agent runs" in job.note
    undone = {s.kind: s.after for s in job.steps.filter(phase="rollback")}
    assert undone["set_service"]["status"] == "Running"
    assert undone["set_registry_value"]["exists"] is False
    assert AuditEntry.objects.filter(job=job, action="auto_rollback", actor=None).exists()


def test_two_concurrent_requests_for_one_machine_run_one_job(idle_machine, employee, seed_article):
    machine = idle_machine
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def request() -> None:
        barrier.wait()
        try:
            jobs.create_job(user=employee, machine=machine, article=seed_article)
            outcomes.append("started")
        except jobs.JobRefused as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert outcomes.count("started") == 1
    refusal = next(o for o in outcomes if o != "started")
    running = Job.objects.get(machine=machine)  # exactly one
    assert "pc-idle" in refusal and f"#{running.pk}" in refusal


def test_the_lock_never_outlives_a_dead_worker(idle_machine, employee, seed_article, settings):
    machine = idle_machine
    stuck = jobs.create_job(user=employee, machine=machine, article=seed_article)
    Job.objects.filter(pk=stuck.pk).update(wake_at=timezone.now())  # its message was sent
    assert jobs.claim(stuck.pk, 0)
    settings.KAIKETSU_REAP_AFTER = 0

    assert jobs.reap_stale_jobs() == 1

    stuck.refresh_from_db()
    assert stuck.status == Job.Status.INTERRUPTED
    jobs.create_job(user=employee, machine=machine, article=seed_article)  # the lock is free


def _wait_status(job, status, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job.pk} is {job.status}, not {status}")


def test_a_refused_resume_leaves_the_restart_choice_as_it_was(idle_machine, employee, seed_article):
    waiting = Job.objects.create(
        user=employee,
        machine=idle_machine,
        article=seed_article,
        kind=Job.Kind.FIX,
        status=Job.Status.WAITING,
        restart=Job.Restart.LATER,
    )
    Job.objects.create(  # the machine is busy with another job
        user=employee, machine=idle_machine, article=seed_article, status=Job.Status.RUNNING
    )
    with pytest.raises(jobs.JobRefused):
        fixes.resume(waiting, employee, restart_now=True)
    waiting.refresh_from_db()
    assert (waiting.status, waiting.restart) == (Job.Status.WAITING, Job.Restart.LATER)


RESTART_JA = "Kaiketsu がこのコンピューターを再起動"
RESTART_EN = "Kaiketsu will restart this computer"


def _restart_message(machine, article, user, language: str) -> str:
    fix = Job.objects.create(
        user=user, machine=machine, article=article, kind=Job.Kind.FIX, language=language,
        status=Job.Status.DONE,  # one active job per machine: these are only read
    )  # fmt: skip
    return fixes.reboot_step(fix).args["message"]


def test_the_restart_warning_is_in_the_owners_language_not_the_helpdesks(
    idle_machine, seed_article, employee, helpdesk
):
    Job.objects.create(
        user=employee, machine=idle_machine, article=seed_article, language="ja",
        status=Job.Status.DONE,
    )  # fmt: skip
    assert RESTART_JA in _restart_message(idle_machine, seed_article, helpdesk, "en")
    Job.objects.filter(user=employee).update(language="en")
    assert RESTART_EN in _restart_message(idle_machine, seed_article, helpdesk, "ja")


def test_without_an_owners_language_the_restart_warning_follows_the_pcs_locale(
    idle_machine, seed_article, helpdesk
):
    idle_machine.owners.clear()
    idle_machine.preflight = {"account": "kaiketsu", "kinds": [], "locale": "en-US"}
    idle_machine.save()
    assert RESTART_EN in _restart_message(idle_machine, seed_article, helpdesk, "ja")
    idle_machine.preflight["locale"] = "ja-JP"
    idle_machine.save()
    assert RESTART_JA in _restart_message(idle_machine, seed_article, helpdesk, "en")
