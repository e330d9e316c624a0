"""The console's machines: list with last diagnosis, CSV import (all or nothing), test connection."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from diagnostics import machine_import
from diagnostics.models import Article, Credential, Job, Machine

pytestmark = pytest.mark.usefixtures("english")  # tests/conftest.py

HEADER = "name,address,port,scheme,owner,credential\n"


@pytest.fixture
def fleet_cred(db):
    # An administrator let this credential go to any machine of 10.0.*, so the helpdesk may
    # import machines there (issue #16).
    cred = Credential(name="fleet-winrm", username="kaiketsu", address_pattern="10.0.*")
    cred.set_password("Sekret-1")
    cred.save()
    return cred


@pytest.fixture
def sato(django_user_model):
    return django_user_model.objects.create_user("sato", email="Sato@Example.co.jp")


@pytest.fixture
def existing(fleet_cred, employee):
    machine = Machine.objects.create(
        name="PC-OLD01", address="10.0.0.1", port=5986, scheme="https", credential=fleet_cred
    )
    machine.owners.add(employee)
    return machine


BAD_FILE = (
    HEADER
    + "PC-GOOD01,10.0.0.2,5986,https,employee,fleet-winrm\n"  # line 2: good
    + ",10.0.0.3,5986,https,employee,fleet-winrm\n"  # 3: missing name
    + "PC-PORT,10.0.0.4,70000,https,employee,fleet-winrm\n"  # 4: bad port
    + "PC-SCHEME,10.0.0.5,5985,ftp,employee,fleet-winrm\n"  # 5: unknown scheme
    + "PC-OWNER,10.0.0.6,5985,http,employee;nobody@example.co.jp,fleet-winrm\n"  # 6
    + "PC-CRED,10.0.0.7,5985,http,employee,no-such-cred\n"  # 7: unknown credential
    + "PC-GOOD01,10.0.0.8,5986,https,employee,fleet-winrm\n"  # 8: duplicate in the file
    + "PC-OLD01,10.0.0.9,5986,https,employee,fleet-winrm\n"  # 9: already exists
)
EXPECTED_ERRORS = {
    3: "missing name",
    4: "bad port 70000",
    5: "unknown scheme ftp",
    6: "unknown owner nobody@example.co.jp",
    7: "unknown credential no-such-cred",
    8: "duplicate name PC-GOOD01 (also on line 2)",
    9: "machine PC-OLD01 already exists",
}


@pytest.mark.django_db
def test_check_reports_every_bad_row_with_its_line_and_reason(existing, helpdesk):
    report = machine_import.check(BAD_FILE, user=helpdesk)
    assert not report.ok
    got: dict[int, list[str]] = {}
    for error in report.errors:
        got.setdefault(error.line, []).append(error.reason)
    assert set(got) == set(EXPECTED_ERRORS)
    for line, reason in EXPECTED_ERRORS.items():
        assert any(r.startswith(reason) for r in got[line]), (line, got[line])


@pytest.mark.django_db
def test_import_of_a_file_with_one_bad_row_imports_nothing(client, helpdesk, existing):
    text = HEADER + "PC-A01,10.0.0.2,5986,https,employee,fleet-winrm\n"
    text += "PC-A02,10.0.0.3,99999,https,employee,fleet-winrm\n"
    client.force_login(helpdesk)
    url = reverse("diagnostics:machines-import")
    dry = client.post(url, {"csv": text, "action": "check"})
    body = dry.content.decode()
    assert dry.status_code == 200 and 'data-line="3"' in body and "bad port 99999" in body
    assert 'name="action" value="import"' not in body  # no Import button while a row is bad
    # Even a forged "import" POST of the same content writes nothing.
    forced = client.post(url, {"csv": text, "action": "import"})
    assert forced.status_code == 400 and "Nothing was imported" in forced.content.decode()
    assert sorted(Machine.objects.values_list("name", flat=True)) == ["PC-OLD01"]


@pytest.mark.django_db
def test_good_file_is_previewed_then_imported_with_owners_by_name_or_email(
    client, helpdesk, fleet_cred, employee, sato
):
    text = HEADER + "PC-A01,10.0.0.2,5986,HTTPS,employee;sato@example.co.jp,fleet-winrm\n\n"
    text += "PC-A02,10.0.1.2,5985,http,sato,fleet-winrm\n"
    client.force_login(helpdesk)
    url = reverse("diagnostics:machines-import")
    dry = client.post(url, {"csv": text, "action": "check"})
    assert dry.status_code == 200 and 'id="import-ready"' in dry.content.decode()
    assert not Machine.objects.exists()  # the dry run wrote nothing
    done = client.post(url, {"csv": text, "action": "import"})
    assert done.status_code == 302 and done["Location"] == reverse("diagnostics:machines")
    a01 = Machine.objects.get(name="PC-A01")
    assert (a01.scheme, a01.port, a01.credential) == ("https", 5986, fleet_cred)
    assert set(a01.owners.values_list("username", flat=True)) == {"employee", "sato"}
    assert list(Machine.objects.get(name="PC-A02").owners.all()) == [sato]


@pytest.mark.django_db
def test_existing_machine_is_updated_only_when_asked(admin_user, existing, sato):
    text = HEADER + "PC-OLD01,10.9.9.9,5985,http,sato,fleet-winrm\n"
    assert not machine_import.check(text, user=admin_user).ok
    result = machine_import.import_machines(text, user=admin_user, update=True)
    assert (result.created, result.updated) == (0, 1)
    existing.refresh_from_db()
    assert (existing.address, existing.port, existing.scheme) == ("10.9.9.9", 5985, "http")
    assert list(existing.owners.all()) == [sato]


@pytest.mark.django_db
def test_shift_jis_upload_from_japanese_excel_is_read(
    client, helpdesk, fleet_cred, django_user_model
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    owner = django_user_model.objects.create_user("佐藤")
    data = (HEADER + "PC-JP01,10.0.0.2,5986,https,佐藤,fleet-winrm\n").encode("cp932")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    client.force_login(helpdesk)
    upload = SimpleUploadedFile("machines.csv", data)
    response = client.post(
        reverse("diagnostics:machines-import"), {"file": upload, "action": "check"}
    )
    body = response.content.decode()
    assert response.status_code == 200 and 'id="import-ready"' in body and "佐藤" in body
    machine_import.import_machines(machine_import.decode(data), user=helpdesk)
    assert list(Machine.objects.get(name="PC-JP01").owners.all()) == [owner]


@pytest.mark.django_db
def test_missing_columns_are_reported_on_line_one(helpdesk):
    report = machine_import.check("name,address\nPC-A,10.0.0.1\n", user=helpdesk)
    assert [(e.line, e.reason) for e in report.errors] == [
        (1, "Missing column(s): port, scheme, owner, credential")
    ]


def _machines(n: int, cred: Credential, owner, article: Article) -> None:
    for i in range(n):
        m = Machine.objects.create(
            name=f"PC-{n}-{i:03}", address="10.0.0.1", port=5986, credential=cred
        )
        m.owners.add(owner)
        Job.objects.create(
            user=owner,
            machine=m,
            article=article,
            status=Job.Status.DONE,
            outcome=Job.Outcome.PROBLEMS if i % 2 else Job.Outcome.HEALTHY,
        )


@pytest.mark.django_db
def test_machine_list_shows_last_diagnosis_in_a_constant_number_of_queries(
    client, helpdesk, fleet_cred, employee, django_assert_num_queries
):
    article = Article.objects.create(slug="a", title_ja="記事", title_en="Article")
    _machines(2, fleet_cred, employee, article)
    client.force_login(helpdesk)
    url = reverse("diagnostics:machines")
    # session, user, 2 permission lookups, count, machines with annotations, owners
    with django_assert_num_queries(7):
        small = client.get(url)
    _machines(12, fleet_cred, employee, article)
    with django_assert_num_queries(7):
        big = client.get(url)
    body = big.content.decode()
    assert small.status_code == big.status_code == 200
    assert body.count('data-last-outcome="problems"') == 1 + 6
    older = Machine.objects.get(name="PC-2-000")
    newer = Job.objects.create(
        user=employee,
        machine=older,
        article=article,
        status=Job.Status.DONE,
        outcome=Job.Outcome.NOT_FIXED,
    )
    body = client.get(url, {"q": "PC-2-000"}).content.decode()
    assert 'data-last-outcome="not_fixed"' in body and f"/jobs/{newer.pk}/" in body


def _poll(client, url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, HTTP_HX_REQUEST="true").content.decode()
        if 'data-status="pending"' not in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"connection test still pending after {timeout} s")


@pytest.mark.django_db(transaction=True)
def test_connection_test_says_ok_with_the_hostname_or_why_not(
    client, helpdesk, demo_machines, use_worker_queue
):
    client.force_login(helpdesk)
    bodies = {}
    for name in ("demo-healthy", "demo-unreachable"):
        machine = demo_machines[name]
        response = client.post(
            reverse("diagnostics:machine-test", args=[machine.pk]), HTTP_HX_REQUEST="true"
        )
        body = response.content.decode()
        assert response.status_code == 200 and 'hx-trigger="every 1s"' in body
        poll = body.split('hx-get="', 1)[1].split('"', 1)[0]
        bodies[name] = _poll(client, poll)
    assert 'data-status="ok"' in bodies["demo-healthy"]
    assert "OK: hostname PC-HEALTHY01" in bodies["demo-healthy"]
    assert "hx-trigger" not in bodies["demo-healthy"]  # polling stops once answered
    assert 'data-status="error"' in bodies["demo-unreachable"]
    assert "could not connect to demo-unreachable" in bodies["demo-unreachable"]
    assert "connection refused" in bodies["demo-unreachable"]


@pytest.mark.django_db
def test_employee_cannot_test_or_import_machines(client, employee, existing):
    client.force_login(employee)
    assert client.post(reverse("diagnostics:machine-test", args=[existing.pk])).status_code == 404
    response = client.post(
        reverse("diagnostics:machines-import"), {"csv": HEADER, "action": "check"}
    )
    assert response.status_code == 404
