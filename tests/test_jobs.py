"""Diagnosis jobs end to end: a real Celery worker, real Redis, stock pywinrm against winsim."""

import os

import pytest
import redis
from django.conf import settings
from django.utils import timezone, translation

from diagnostics import jobs, live
from diagnostics.models import Job
from diagnostics.tasks import run_job_task
from diagnostics.workflows.diagnosis import start_diagnosis
from tests.conftest import diagnose, start_job, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SEED = "l2tp-ipsec-psk-negotiation"
# The failing check keys each demo host must show with the seed article, and nothing else.
EXPECTED_FAILURES = {
    "demo-healthy": set(),
    "demo-psk-mismatch": {"no-recent-vpn-errors"},
    "demo-policyagent-stopped": {"policyagent-running", "no-recent-vpn-errors"},
    "demo-ikeext-disabled": {"ikeext-running", "no-recent-vpn-errors"},
    "demo-ipsec-proposal": {"vpn-ipsec-policy", "no-recent-vpn-errors"},
    "demo-udp-blocked": {"firewall-udp-ports", "no-recent-vpn-errors"},
    "demo-nat-t": {"nat-traversal-registry", "no-recent-vpn-errors"},
    "demo-prohibit-ipsec": {"prohibit-ipsec-off", "no-recent-vpn-errors"},
    "demo-dns": {"server-name-resolves", "server-reachable", "no-recent-vpn-errors"},
    "demo-bad-password": {"no-recent-vpn-errors"},
}


@pytest.mark.parametrize("host", sorted(EXPECTED_FAILURES))
def test_diagnosis_of_each_demo_host_finds_its_fault(
    host, demo_machines, seed_article, employee, use_worker_queue
):
    job = diagnose(demo_machines[host], seed_article, employee)

    assert job.status == Job.Status.DONE, job.error
    failed = {s.kb_check.key for s in job.steps.select_related("kb_check") if s.verdict != "pass"}
    assert failed == EXPECTED_FAILURES[host]
    assert job.outcome == (Job.Outcome.PROBLEMS if failed else Job.Outcome.HEALTHY)
    assert job.step_count == seed_article.checks.count()
    assert job.finished_at >= job.started_at


@pytest.mark.parametrize(
    ("host", "words"),
    [("demo-unreachable", "could not connect"), ("demo-hang", "stopped answering")],
)
def test_unreachable_and_hanging_hosts_end_with_a_clear_error_in_time(
    host, words, demo_machines, seed_article, employee, use_worker_queue
):
    job = diagnose(demo_machines[host], seed_article, employee)

    assert job.status == Job.Status.ERROR
    assert host in job.error and words in job.error
    assert (job.finished_at - job.created_at).total_seconds() < int(
        settings.KAIKETSU_JOB_TIME_LIMIT
    ) + 30


@pytest.mark.parametrize(
    ("language", "words"),
    [("en", "could not be reached"), ("ja", "に接続できませんでした")],
)
def test_a_job_stores_its_error_in_the_language_of_who_started_it(
    language, words, idle_machine, seed_article, employee, use_worker_queue
):
    with translation.override(language):  # as the request's LocaleMiddleware does
        job = start_diagnosis(employee, idle_machine, seed_article, pasted_text="test")
    jobs.enqueue(job.pk)
    job = wait_for_job(job)

    assert job.language == language
    assert job.status == Job.Status.ERROR and words in job.error, job.error


def test_wrong_credentials_name_the_machine_and_never_the_password(
    demo_machines, seed_article, employee, use_worker_queue
):
    machine = demo_machines["demo-healthy"]
    machine.credential.set_password("not-the-password-7")
    machine.credential.save()

    job = diagnose(machine, seed_article, employee)

    assert job.status == Job.Status.ERROR
    assert "demo-healthy" in job.error
    assert "not-the-password-7" not in job.error + job.transcript + job.stderr


def test_each_step_is_in_the_live_stream_in_order(
    demo_machines, seed_article, employee, use_worker_queue
):
    job = diagnose(demo_machines["demo-policyagent-stopped"], seed_article, employee)

    client = redis.Redis.from_url(settings.REDIS_URL)
    events = client.xrange(live.stream_key(job.pk))
    names = [fields[b"event"].decode() for _, fields in events]
    assert names[0] == "status" and names[-1] == "done"
    assert names.count("step") == seed_article.checks.count()


def test_a_job_is_never_run_twice(demo_machines, seed_article, employee, use_worker_queue):
    job = diagnose(demo_machines["demo-healthy"], seed_article, employee)
    steps_before = job.steps.count()

    run_job_task(job.pk, 0)  # a redelivered message: its turn was taken

    job.refresh_from_db()
    assert job.steps.count() == steps_before
    assert job.status == Job.Status.DONE


def test_a_host_flooding_stdout_leaves_a_bounded_transcript_and_a_clear_error(
    tmp_path, employee, seed_article, use_worker_queue
):
    """5 MB of junk output: the job keeps head and tail, says what was cut, and ends."""
    from diagnostics.jobs import MAX_TRANSCRIPT
    from tests.conftest import machines_for, start_fleet

    profile = tmp_path / "flood"
    profile.mkdir()
    flooding, fleet = start_fleet(profile, faults={"demo-healthy": {"flood_bytes": 5_000_000}})
    try:
        machine = machines_for({"demo-healthy": fleet["demo-healthy"]}, employee)["demo-healthy"]
        job = wait_for_job(start_job(machine, seed_article, employee), timeout=90)
    finally:
        flooding.stop()

    assert job.status == Job.Status.ERROR
    assert "demo-healthy" in job.error
    assert len(job.transcript) <= MAX_TRANSCRIPT
    assert "bytes cut" in job.transcript
    assert job.steps.count() == seed_article.checks.count()  # the real results all arrived


def test_a_new_job_never_replays_events_left_under_its_id(idle_machine, employee, seed_article):
    """After a database reset ids start again, while Redis keeps old streams for a day."""
    machine = idle_machine
    reused_id = 900_000_000 + os.getpid()
    live.publish(reused_id, "step", {"step": "c1"})  # from an earlier life of the database
    assert live.last_id(reused_id) != "0"

    job = jobs.create_job(pk=reused_id, user=employee, machine=machine, article=seed_article)

    assert live.last_id(job.pk) == "0"


def test_a_nul_in_host_output_is_stored_escaped_not_a_crash(idle_machine, employee, seed_article):
    machine = idle_machine
    job = jobs.create_job(user=employee, machine=machine, article=seed_article)
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now())  # its message was sent
    assert jobs.claim(job.pk, 0)

    assert job.finish(Job.Status.ERROR, Job.Outcome.ERROR, "stderr: bad\x00byte")

    job.refresh_from_db()
    assert job.error == "stderr: bad\\0byte"


def test_a_workflow_that_fails_ends_its_job_at_once_not_at_the_reaper(
    idle_machine, employee, seed_article
):
    job = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now())  # its message was sent

    def broken_workflow(job):
        raise RuntimeError("a bug in a workflow")

    jobs.run_job(job.pk, 0, broken_workflow)

    job.refresh_from_db()
    assert (job.status, job.outcome) == (Job.Status.ERROR, Job.Outcome.ERROR)
    assert "a bug" not in job.error and job.error  # a plain sentence, not the traceback
    jobs.create_job(user=employee, machine=idle_machine, article=seed_article)  # lock free


def test_a_waiting_workflow_gets_its_next_turn_and_only_one(idle_machine, employee, seed_article):
    job = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now())
    turns = []

    def waits_once(job):
        turns.append(job.turn)
        return jobs.Wait(5) if len(turns) == 1 else None

    from portal.celery import app

    app.conf.task_default_queue = f"kaiketsu-nobody-{os.getpid()}"  # no worker takes it
    try:
        jobs.run_job(job.pk, 0, waits_once)  # sends turn 1 to the broker, due in 5 s
    finally:
        app.conf.task_default_queue = "kaiketsu"
        redis.Redis.from_url(settings.REDIS_URL).delete(f"kaiketsu-nobody-{os.getpid()}")
    job.refresh_from_db()
    assert job.turn == 1 and job.wake_at is not None and job.status == Job.Status.RUNNING

    jobs.run_job(job.pk, 0, waits_once)  # the old message again: its turn is taken
    jobs.run_job(job.pk, 1, waits_once)  # the next turn, as the broker delivers it
    jobs.run_job(job.pk, 1, waits_once)  # and a duplicate of it
    assert turns == [1, 2]


def test_a_long_turn_keeps_beating_so_only_a_dead_worker_is_reaped(
    idle_machine, employee, seed_article, monkeypatch, settings
):
    monkeypatch.setattr(jobs, "HEARTBEAT_S", 0.2)
    settings.KAIKETSU_REAP_AFTER = 1
    job = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now())
    seen = []

    def slow_step(job):  # a step that takes longer than the reaper's patience (a real dial)
        import time

        time.sleep(2)
        seen.append(jobs.reap_stale_jobs())
        jobs.finish(job, Job.Status.DONE, Job.Outcome.HEALTHY)

    jobs.run_job(job.pk, 0, slow_step)

    assert seen == [0]  # the reaper found the job alive after 2 s of silence from its step
    job.refresh_from_db()
    assert job.outcome == Job.Outcome.HEALTHY
