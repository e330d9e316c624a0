"""The agent channel end to end (issue #14): winsim PCs in agent mode enrol with and long-poll
the portal's real HTTP endpoints (uvicorn), a real worker runs the jobs, real Redis wakes them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from diagnostics import agents, jobs
from diagnostics.models import AgentTask, Job, Machine
from diagnostics.workflows import fixes
from scripts import services
from tests.conftest import (
    AT_HOME,
    OFFLINE,
    OTHER,
    _child_env,
    _sim_post,
    agent_machines,
    agent_state,
    child_database_url,
    install_agent,
    start_job,
    wait_for_job,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def portal(django_db_setup, celery_queue, tmp_path_factory):
    """uvicorn serving the portal (the agent's endpoints) against the test database."""
    env = _child_env(DATABASE_URL=child_database_url(), KAIKETSU_QUEUE=celery_queue)
    log_path = tmp_path_factory.mktemp("agent-web") / "web.log"
    web, url = services.start_web(env, log_path=log_path, access_log=False, timeout=30)
    yield url
    web.stop()


def _call(url: str, credential: str = "", data: bytes | None = None, method: str = "GET"):
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_laptop_at_home_is_diagnosed_fixed_with_a_restart_and_verified_over_its_agent(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[AT_HOME]
    install_agent(machine, portal)

    diagnosis = wait_for_job(start_job(machine, seed_article, employee), timeout=60)

    assert (diagnosis.status, diagnosis.outcome) == ("done", "problems"), diagnosis.error
    assert diagnosis.steps.filter(verdict="fail").exists()
    assert AgentTask.objects.filter(job=diagnosis, status="taken").count() == 1
    assert "set-nat-traversal-2" in [o.fix.key for o in fixes.offered_fixes(diagnosis)]

    fix = fixes.request_fix(employee, diagnosis, ["set-nat-traversal-2"], Job.Restart.NOW)
    jobs.enqueue(fix.pk)
    fix = wait_for_job(fix, timeout=120, connect=True)

    assert (fix.status, fix.outcome) == ("done", "fixed"), (fix.error, fix.note)
    assert fix.steps.filter(kind="schedule_reboot").exists()
    assert fix.steps.filter(phase="verify", verdict="pass").exists()
    machine.refresh_from_db()
    assert machine.agent_boot.endswith("-boot-1")  # it really restarted and came back
    # Nothing of the plan (the masked copy aside) stays in the database once sent.
    assert not AgentTask.objects.exclude(plan_encrypted="").exists()


def test_a_job_for_a_switched_off_pc_says_so_and_frees_the_machine(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[OFFLINE]
    agents.create_token(machine=machine)  # enrolled long ago, switched off since

    job = wait_for_job(start_job(machine, seed_article, employee), timeout=40)

    assert job.status == Job.Status.ERROR
    assert "問い合わせてきませんでした" in job.error  # did not check in
    assert not job.steps.exists()
    assert not Job.objects.filter(machine=machine, status__in=Job.ACTIVE).exists()
    # The machine is free again: a new job may start.
    again = start_job(machine, seed_article, employee)
    assert again.status == Job.Status.QUEUED


def test_one_machines_credential_cannot_fetch_or_post_for_another(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machines = agent_machines(home_fleet, employee)
    home, other = machines[AT_HOME], machines[OTHER]
    _token, code = agents.create_token(machine=other)
    body = {"token": code, "computer_name": "X", "version": "t", "boot": "b"}
    status, data = _call(portal + "/agent/v1/enrol", data=json.dumps(body).encode(), method="POST")
    assert status == 200
    other_credential = json.loads(data)["credential"]
    # The same token again: single use.
    status, _ = _call(portal + "/agent/v1/enrol", data=json.dumps(body).encode(), method="POST")
    assert status == 403

    home.agent_key_hash = ""  # the home laptop has no agent yet: its job waits for pick-up
    home.save()
    job = start_job(home, seed_article, employee)
    deadline = time.monotonic() + 20
    while not AgentTask.objects.filter(job=job).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    task = AgentTask.objects.get(job=job)

    status, _ = _call(portal + "/agent/v1/work", other_credential)
    assert status == 204  # the other machine sees no work: the task is not its own
    line = json.dumps({"step": "c1", "ok": True, "facts": {}}).encode()
    status, data = _call(
        portal + f"/agent/v1/tasks/{task.pk}/lines", other_credential, line, "POST"
    )
    assert status == 404, data
    task.refresh_from_db()
    assert (task.status, task.lines) == ("waiting", 0)
    assert not job.steps.exists()


def test_a_revoked_agent_is_refused_at_its_next_call_and_stops(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[OTHER]
    install_agent(machine, portal)
    assert agent_state(machine)["running"]

    agents.revoke(machine)

    deadline = time.monotonic() + 15
    while agent_state(machine)["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_state(machine) | {"polls": 0} == {
        "installed": True,
        "running": False,
        "revoked": True,
        "polls": 0,
        "refused": [],
    }
    # Nothing picks a job up any more: it ends as "did not check in", nothing ran.
    job = wait_for_job(start_job(machine, seed_article, employee), timeout=40)
    assert (
        job.status == Job.Status.ERROR and "問い合わせてきませんでした" in job.error
    )  # did not check in
    assert not job.steps.exists()


def _enrol_by_hand(portal: str, machine: Machine) -> tuple[str, Any]:
    from winsim.agent import Identity

    _token, code = agents.create_token(machine=machine)
    body = {"token": code, "computer_name": machine.name, "version": "t", "boot": "b0"}
    status, data = _call(portal + "/agent/v1/enrol", data=json.dumps(body).encode(), method="POST")
    assert status == 200, data
    answer = json.loads(data)
    key = answer["public_key"]
    return answer["credential"], Identity(
        answer["machine"], answer["credential"], key["modulus"], key["exponent"]
    )


def test_the_agent_refuses_a_tampered_replayed_expired_or_foreign_plan(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    from winsim.agent import PlanRefused, check_envelope

    machines = agent_machines(home_fleet, employee)
    home = machines[AT_HOME]
    credential, identity = _enrol_by_hand(portal, home)
    start_job(home, seed_article, employee)
    status, data = _call(portal + "/agent/v1/work", credential)
    assert status == 200, data
    answer = json.loads(data)
    now = time.time()

    task, plan_json = check_envelope(identity, answer, now)  # the genuine plan runs
    assert task == answer["task"] and json.loads(plan_json)["steps"]
    identity.done_tasks.add(task)

    def refused(changed: dict, at: float = now, who=identity) -> str:
        with pytest.raises(PlanRefused) as caught:
            check_envelope(who, changed, at)
        return str(caught.value)

    assert "replay" in refused(answer)
    identity.done_tasks.clear()
    # One changed character of the plan (e.g. another registry value) breaks the signature.
    tampered = answer["payload"].replace("PolicyAgent", "PolicyAgenT", 1)
    assert tampered != answer["payload"]
    assert "signature" in refused({**answer, "payload": tampered})
    assert "expired" in refused(answer, at=now + 3600)
    other = type(identity)(OTHER, credential, identity.modulus, identity.exponent)
    assert "not this machine" in refused(answer, who=other)
    # Signed by another key (a portal impostor): refused.
    forged_key = agents.rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forged_key.sign(
        answer["payload"].encode(), agents.padding.PKCS1v15(), agents.hashes.SHA256()
    )
    forged_answer = {**answer, "signature": agents.base64.b64encode(forged).decode()}
    assert "signature" in refused(forged_answer)


def test_bad_agent_input_is_refused_clearly_and_changes_nothing(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    home = agent_machines(home_fleet, employee)[AT_HOME]
    credential, _identity = _enrol_by_hand(portal, home)
    job = start_job(home, seed_article, employee)
    status, data = _call(portal + "/agent/v1/work", credential)
    task = json.loads(data)["task"]
    lines_url = portal + f"/agent/v1/tasks/{task}/lines"

    cases = [
        (b"not json\n", 400, "not JSON"),
        (b'{"step": "zz", "ok": true, "facts": {}}\n', 400, "unknown step"),
        (b"[1, 2]\n", 400, "not a JSON object"),
        (b'{"step": "c1", "ok": true, "facts": {}}\n' * 40, 413, "more lines"),
        (b"x" * (1024 * 1024 + 10), 413, "larger"),
    ]
    for body, expected, words in cases:
        status, data = _call(lines_url, credential, body, "POST")
        assert status == expected, (body[:40], data)
        assert words in json.loads(data)["error"]
    status, data = _call(portal + "/agent/v1/tasks/999999/lines", credential, b"{}\n", "POST")
    assert status == 404
    status, data = _call(lines_url, "", b"{}\n", "POST")
    assert status == 401
    status, _ = _call(portal + "/agent/v1/work", credential.split(".")[0] + ".wrong")
    assert status == 401
    assert not job.steps.exists()
    assert AgentTask.objects.get(pk=task).lines == 0

    # A flood of polls is slowed down, not served: 40 at once, at most 30 per 10 s held.
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: _call(portal + "/agent/v1/work", credential), range(40)))
    statuses = sorted(status for status, _ in answers)
    assert 429 in statuses and statuses.count(429) >= 10, statuses


def test_a_machine_with_both_channels_falls_back_to_its_agent_when_winrm_cannot_connect(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[AT_HOME]
    machine.channel = Machine.Channel.BOTH
    machine.save()
    install_agent(machine, portal)

    job = wait_for_job(start_job(machine, seed_article, employee), timeout=60)

    assert (job.status, job.outcome) == ("done", "problems"), job.error
    assert AgentTask.objects.filter(job=job).count() == 1  # WinRM refused: nothing ran there
    steps = [s["id"] for s in job.plan["steps"]]
    assert len(steps) == len(set(steps)) == job.steps.count()  # the plan recorded once


def test_an_agent_that_dies_mid_plan_ends_the_job_clearly_with_what_arrived(
    home_fleet, portal, employee, seed_article, use_worker_queue
):
    machine = agent_machines(home_fleet, employee)[AT_HOME]
    install_agent(machine, portal)
    _sim_post(machine, "/sim/fault?drop_after_lines=2")

    job = wait_for_job(start_job(machine, seed_article, employee), timeout=60)

    assert job.status == Job.Status.ERROR
    assert (
        "接続が途中で切れました" in job.error
    )  # broke off: it came back, polled, and the portal closed that plan
    assert job.steps.count() == 2
    assert not Job.objects.filter(machine=machine, status__in=Job.ACTIVE).exists()
