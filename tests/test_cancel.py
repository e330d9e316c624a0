"""Issue #16, finding 3: nothing stays stuck. The helpdesk cancels a queued or waiting job,
a job whose first message was never sent is sent by the reaper, and a dead worker's job
ends within a minute (Celery's signal at once when only a pool child died)."""

from __future__ import annotations

import io
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from diagnostics import jobs
from diagnostics.models import AuditEntry, Job
from portal.celery import app
from scripts import services
from tests.conftest import _child_env, child_database_url, start_job

pytestmark = pytest.mark.usefixtures("english")  # tests/conftest.py


def _queued(machine, user, article) -> Job:
    """A queued job whose first turn was sent (to a queue nobody reads) and not yet taken."""
    job = jobs.create_job(user=user, machine=machine, article=article)
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now())
    return job


@pytest.mark.django_db
def test_helpdesk_cancels_a_queued_job_and_the_machine_is_free(
    client, helpdesk, idle_machine, employee, seed_article
):
    job = _queued(idle_machine, employee, seed_article)
    client.force_login(helpdesk)
    page = client.get(reverse("diagnostics:helpdesk-job", args=[job.pk])).content.decode()
    assert 'id="job-cancel"' in page

    answer = client.post(reverse("diagnostics:helpdesk-job-cancel", args=[job.pk]), follow=True)

    assert f"Job #{job.pk} was cancelled; pc-idle is free." in answer.content.decode()
    job.refresh_from_db()
    assert (job.status, job.outcome) == (Job.Status.CANCELLED, Job.Outcome.NONE)
    assert job.error == "Cancelled by helpdesk before its next step." and job.finished_at
    entry = AuditEntry.objects.get(job=job)
    assert (entry.action, entry.actor) == ("cancelled", helpdesk)
    jobs.create_job(user=employee, machine=idle_machine, article=seed_article)  # lock free


@pytest.mark.django_db
def test_a_late_turn_of_a_cancelled_job_does_nothing(
    helpdesk, idle_machine, employee, seed_article
):
    job = _queued(idle_machine, employee, seed_article)
    jobs.cancel(job, helpdesk)
    ran = []

    jobs.run_job(job.pk, 0, ran.append)  # the message arrives after all

    assert ran == []
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.turn == 0


@pytest.mark.django_db
def test_a_running_job_is_not_cancelled_and_the_helpdesk_is_told_why(
    client, helpdesk, idle_machine, employee, seed_article
):
    job = _queued(idle_machine, employee, seed_article)
    assert jobs.claim(job.pk, 0)  # a worker has it: a fix may be half applied
    client.force_login(helpdesk)
    assert (
        'id="job-cancel"'
        not in client.get(reverse("diagnostics:helpdesk-job", args=[job.pk])).content.decode()
    )

    answer = client.post(reverse("diagnostics:helpdesk-job-cancel", args=[job.pk]), follow=True)

    body = answer.content.decode()
    assert f"Job #{job.pk} is Running: only a queued or waiting job can be cancelled." in body
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_cancel_is_post_only_and_for_the_helpdesk_only(
    client, employee, idle_machine, seed_article
):
    job = _queued(idle_machine, employee, seed_article)
    url = reverse("diagnostics:helpdesk-job-cancel", args=[job.pk])
    client.force_login(employee)  # the job's own user: the helpdesk decides, not them
    assert client.post(url).status_code == 404
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


@pytest.mark.django_db
def test_a_queued_job_whose_message_was_never_sent_is_sent_by_the_reaper(
    idle_machine, employee, seed_article, settings
):
    # The web process died between the commit and the send: no message, no wake_at.
    job = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    queue = f"kaiketsu-nobody-{os.getpid()}"
    app.conf.task_default_queue = queue  # no worker takes it: the message stays to be seen
    try:
        assert jobs.reap_stale_jobs() == 1
        assert jobs.reap_stale_jobs() == 0  # sent once
        key = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + queue
        waiting = redis.Redis.from_url(django_settings.CELERY_BROKER_URL).llen(key)
    finally:
        app.conf.task_default_queue = "kaiketsu"
        redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(
            django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + queue
        )
    assert waiting == 1
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.wake_at is not None


@pytest.mark.django_db
def test_a_dead_workers_job_ends_within_a_minute_with_the_default_settings(
    idle_machine, employee, seed_article
):
    job = _queued(idle_machine, employee, seed_article)
    assert jobs.claim(job.pk, 0)
    last_beat = Job.objects.get(pk=job.pk).heartbeat_at  # the worker dies right after it
    reap_every = django_settings.CELERY_BEAT_SCHEDULE["reap-dead-jobs"]["schedule"]
    # The reaper runs every reap_every seconds; its latest run after the death is then:
    latest_reap = last_beat + timedelta(
        seconds=django_settings.KAIKETSU_REAP_AFTER + reap_every + 0.001
    )

    assert jobs.reap_stale_jobs(now=latest_reap) == 1
    assert latest_reap - last_beat < timedelta(minutes=1)
    # ...and a live turn, which beats every HEARTBEAT_S, is never taken for dead.
    assert django_settings.KAIKETSU_REAP_AFTER >= 2 * jobs.HEARTBEAT_S + 5


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the field after the state is the parent's pid
            found.append(int(stat.parent.name))
    return found


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_killed_pool_child_ends_its_job_at_once_without_the_reaper(
    demo_machines, seed_article, employee, tmp_path
):
    queue = f"kaiketsu-prefork-{os.getpid()}"
    argv = services.worker_argv(queue=queue, concurrency=1)
    argv[argv.index("threads")] = "prefork"  # a pool of child processes, as Celery's default
    env = _child_env(DATABASE_URL=child_database_url(), KAIKETSU_QUEUE=queue)
    worker = services.Service("prefork", argv, env=env, log_path=tmp_path / "worker.log")
    services.wait_for_worker(worker.start(), timeout=60)
    try:
        app.conf.task_default_queue = queue
        job = start_job(demo_machines["demo-healthy"], seed_article, employee)
        deadline = time.monotonic() + 30
        while job.steps.count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        [child] = _children(worker.pid)
        os.kill(child, signal.SIGKILL)  # the pool child dies mid-turn; its parent lives

        deadline = time.monotonic() + 15  # no reaper runs here: only Celery's signal
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.is_finished:
                break
            time.sleep(0.1)
    finally:
        app.conf.task_default_queue = "kaiketsu"
        worker.stop()
    assert (job.status, job.outcome) == (Job.Status.INTERRUPTED, Job.Outcome.ERROR)
    assert job.steps.exists()  # what arrived is kept
    jobs.create_job(user=employee, machine=job.machine, article=seed_article)  # lock free


@pytest.mark.django_db
def test_the_cancel_job_command_cancels_as_a_helpdesk_user_and_refuses_others(
    helpdesk, employee, idle_machine, seed_article
):
    from django.core.management import CommandError, call_command

    job = _queued(idle_machine, employee, seed_article)
    with pytest.raises(CommandError, match="'employee' is not a helpdesk user"):
        call_command("cancel_job", job.pk, by="employee")
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED

    out = io.StringIO()
    call_command("cancel_job", job.pk, by="helpdesk", stdout=out)

    assert out.getvalue().strip() == f"job #{job.pk} cancelled; pc-idle is free"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert AuditEntry.objects.get(job=job).actor == helpdesk
    with pytest.raises(CommandError, match="only a queued or waiting job can be cancelled"):
        call_command("cancel_job", job.pk, by="helpdesk")
