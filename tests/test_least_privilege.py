"""The README's least-privilege account (Remote Management Users, not an administrator) gets
no false fact and no "healthy" (issue #10), and "test connection" tells the helpdesk which
rights are missing, with the command that grants each.

Each machine exists twice in one winsim fleet: once seen by an administrator, once by the
least-privilege account. Whatever the administrator's diagnosis says of a check, the
least-privilege one says the same or "unknown", never something else.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest
import yaml
from django.core.management import call_command
from django.urls import reverse

from diagnostics.models import Job, Machine
from tests.conftest import DEMO_PROFILE, LAB, diagnose, machines_for, start_winsim

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LEAST = {"admin": False}
CASES = {
    "healthy": {},
    "psk": {"vpn_connections": {"社内VPN": {"psk": "Kaiketsu2023Psk"}}},  # 789 in the log
    "stopped": {"services": {"PolicyAgent": {"status": "Stopped", "start_type": "Disabled"}}},
}


@pytest.fixture
def twin_fleet(tmp_path) -> Iterator[dict[str, dict]]:
    profile = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    profile["defaults"]["step_latency_ms"] = 0
    profile["hosts"] = {}
    for case, spec in CASES.items():
        profile["hosts"][f"admin-{case}"] = {**spec, "port": 0}
        profile["hosts"][f"least-{case}"] = {**spec, "port": 0, "account": LEAST}
    path = tmp_path / "twins.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    fleet, hosts = start_winsim(path)
    yield hosts
    fleet.stop()


@pytest.fixture
def twins(db, employee, twin_fleet) -> dict[str, Machine]:
    return machines_for(twin_fleet, employee)


@pytest.mark.parametrize("case", sorted(CASES))
def test_least_privilege_diagnosis_says_the_truth_or_unknown_and_never_healthy(
    case, twins, seed_article, employee, use_worker_queue
):
    admin = diagnose(twins[f"admin-{case}"], seed_article, employee)
    least = diagnose(twins[f"least-{case}"], seed_article, employee)
    truth = dict(admin.steps.values_list("step_id", "verdict"))
    seen = dict(least.steps.values_list("step_id", "verdict"))
    assert set(seen) == set(truth)
    false_facts = {s: (v, truth[s]) for s, v in seen.items() if v not in (truth[s], "unknown")}
    assert false_facts == {}
    assert "unknown" in seen.values()
    assert least.status == Job.Status.DONE and least.outcome == Job.Outcome.PROBLEMS


def test_the_cli_json_reports_unknown_verdicts(twins, seed_article, use_worker_queue):
    out = io.StringIO()
    call_command(
        "diagnose", "--machine", "least-healthy", "--article", seed_article.slug, "--json",
        stdout=out,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert result["outcome"] == "problems"
    events = [s for s in result["steps"] if s["kind"] == "vpn_events"]
    assert events and {s["verdict"] for s in events} == {"unknown"}


def _poll(client, url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, HTTP_HX_REQUEST="true").content.decode()
        if 'data-status="pending"' not in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"connection test still pending after {timeout} s")


def test_connection_test_lists_the_missing_rights_and_keeps_them_for_diagnoses(
    client, helpdesk, twins, seed_article, employee, use_worker_queue
):
    machine = twins["least-healthy"]
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:machine-test", args=[machine.pk]), HTTP_HX_REQUEST="true"
    )
    body = _poll(client, response.content.decode().split('hx-get="', 1)[1].split('"', 1)[0])
    assert 'data-status="ok"' in body
    assert 'data-kind="vpn_events" data-status="cannot"' in body
    assert "Event Log Readers" in body
    assert "Add-LocalGroupMember -SID &#x27;S-1-5-32-573&#x27; -Member &#x27;kaiketsu&#x27;" in body
    assert 'data-kind="service" data-status="cannot"' in body
    assert 'data-kind="registry_value" data-status="works"' in body
    machine.refresh_from_db()
    table = {row["kind"]: row for row in machine.preflight["kinds"]}
    assert table["vpn_events"]["need"] == "event_log_readers"
    assert table["service"]["need"] == "service_query"
    assert table["vpn_dial"]["status"] == "untested"
    # The machine page keeps it; a diagnosis of the machine shows it.
    page = client.get(reverse("diagnostics:machines")).content.decode()
    assert 'data-kind="vpn_events" data-status="cannot"' in page
    job = diagnose(machine, seed_article, employee)
    client.force_login(employee)
    job_page = client.get(reverse("diagnostics:job-detail", args=[job.pk])).content.decode()
    assert 'id="known-limits"' in job_page and "<code>vpn_events</code>" in job_page
    # Could-not-tell rows look like neither a pass nor a problem, and say what is missing.
    assert 'data-verdict="unknown"' in job_page
    assert "確認できませんでした: ポータルのアカウントに Event Log Readers" in job_page
    assert 'id="not-all-checked"' in job_page  # nothing failed: not "N problems found"
    assert 'id="fix-button"' not in job_page  # nothing proven, nothing to fix


def test_an_administrator_account_gets_a_preflight_where_every_kind_works(
    client, helpdesk, twins, use_worker_queue
):
    machine = twins["admin-healthy"]
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:machine-test", args=[machine.pk]), HTTP_HX_REQUEST="true"
    )
    _poll(client, response.content.decode().split('hx-get="', 1)[1].split('"', 1)[0])
    machine.refresh_from_db()
    statuses = {row["kind"]: row["status"] for row in machine.preflight["kinds"]}
    assert statuses.pop("vpn_dial") == "untested"
    assert set(statuses.values()) == {"works"}


@pytest.mark.django_db
def test_preflight_kinds_left_unanswered_at_the_deadline_say_cannot_timeout(monkeypatch):
    from diagnostics.models import Credential
    from diagnostics.workflows import connection
    from winsim.hosts import hosts_from_profile
    from winsim.server import FleetThread

    hosts = hosts_from_profile({"hosts": {"slow": {"faults": {"slow_step_ms": 1000}}}})
    monkeypatch.setattr(connection, "PREFLIGHT_DEADLINE_S", 3)
    with FleetThread(hosts):
        cred = Credential(name="slow", username=hosts[0].username, **LAB)
        cred.set_password(hosts[0].password)
        cred.save()
        machine = Machine.objects.create(
            name="slow", address="127.0.0.1", port=hosts[0].port, scheme="http",
            verify_tls=False, credential=cred,
        )  # fmt: skip
        table = {row["kind"]: row for row in connection.preflight(machine)}
    # Nine steps of 1 s cannot finish in 3 s: the last kinds time out, whatever answered first
    # (under load even the first may not); none is a bare error.
    states = {(r["status"], r["reason"]) for k, r in table.items() if k != "vpn_dial"}
    assert states <= {("works", ""), ("cannot", "timeout")}
    assert (table["vpn_events"]["status"], table["vpn_events"]["reason"]) == ("cannot", "timeout")
    machine.refresh_from_db()
    assert machine.preflight["kinds"][-2]["reason"] == "timeout"
