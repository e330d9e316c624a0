"""Issue #16, finding 1: where a credential (and a fix's secret) may be sent.

The helpdesk manages owners; an administrator decides where secrets go. A listener of the
helpdesk's own (a real TLS socket here) must never receive the WinRM password, whichever
path changed the machine, and a secret goes only to a machine whose identity is verified.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
from django.urls import reverse

from diagnostics import jobs, machine_import
from diagnostics.models import AuditEntry, Credential, Job, Machine, Secret, StepResult
from diagnostics.workflows import connection
from winsim import tls
from winsim.hosts import hosts_from_profile
from winsim.server import FleetThread, requests_received

pytestmark = pytest.mark.usefixtures("english")  # tests/conftest.py

PASSWORD = "Winrm-Secret-Pw-9"
HEADER = "name,address,port,scheme,owner,credential\n"


class Listener:
    """A TLS listener "of one's own": it records every byte a client sends, answers 401."""

    def __init__(self, directory) -> None:
        cert, key = tls.make_self_signed(directory)
        self.context = tls.server_context(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(2)
                    self.received += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass

    def got_password(self) -> bool:
        return base64.b64encode(f"kaiketsu:{PASSWORD}".encode()) in self.received

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path) -> Iterator[Listener]:
    server = Listener(tmp_path)
    yield server
    server.close()


@pytest.fixture
def staff_helpdesk(helpdesk):
    helpdesk.is_staff = True  # as load_demo makes it: the admin's machine pages
    helpdesk.save()
    return helpdesk


@pytest.fixture
def pc(db, employee):
    """A real machine, bound by an administrator, reached over verified HTTPS."""
    cred = Credential(name="fleet", username="kaiketsu")
    cred.set_password(PASSWORD)
    cred.save()
    machine = Machine.objects.create(
        name="pc1", address="pc1.corp.example", port=5986, scheme="https", credential=cred
    )
    machine.bind(None)
    machine.save()
    machine.owners.add(employee)
    return machine


def _test_connection(machine: Machine) -> dict:
    """The worker half of "test connection", in this process: real pywinrm, real sockets."""
    return connection.run(machine.pk, "t")


def _point_at(listener: Listener) -> dict:
    return {"address": "127.0.0.1", "port": listener.port, "verify_tls": False}


@pytest.mark.django_db
def test_the_listener_would_catch_the_password_of_an_approved_lab_machine(pc, listener):
    # The control: a target an administrator approved, with the lab switch, does get the
    # password, so the refusals below are the portal's and not a deaf listener.
    Machine.objects.filter(pk=pc.pk).update(**_point_at(listener))
    pc.refresh_from_db()
    pc.bind(None)
    pc.save()
    Credential.objects.filter(pk=pc.credential_id).update(allow_unverified=True)

    _test_connection(pc)

    assert listener.got_password()


@pytest.mark.django_db
def test_helpdesk_cannot_move_a_machine_in_the_admin_and_its_password_goes_nowhere(
    client, staff_helpdesk, pc, listener, employee
):
    client.force_login(staff_helpdesk)
    url = reverse("admin:diagnostics_machine_change", args=[pc.pk])
    form = client.get(url)
    assert form.status_code == 200
    assert 'name="address"' not in form.content.decode()  # shown read-only, not a field

    answer = client.post(
        url,
        {
            "name": "pc1",
            "owners": [employee.pk],
            "scheme": "https",
            "channel": "winrm",
            **_point_at(listener),
        },
    )

    assert answer.status_code == 302
    pc.refresh_from_db()
    assert (pc.address, pc.port, pc.verify_tls) == ("pc1.corp.example", 5986, True)
    _test_connection(pc)
    assert listener.received == b""


@pytest.mark.django_db
def test_helpdesk_cannot_add_a_machine_in_the_admin(client, staff_helpdesk):
    client.force_login(staff_helpdesk)
    assert client.get(reverse("admin:diagnostics_machine_add")).status_code == 403


@pytest.mark.django_db
def test_helpdesk_import_that_moves_a_machine_is_refused_and_changes_nothing(
    client, helpdesk, pc, listener
):
    text = HEADER + f"pc1,127.0.0.1,{listener.port},https,employee,fleet\n"
    client.force_login(helpdesk)

    answer = client.post(
        reverse("diagnostics:machines-import"), {"csv": text, "update": "1", "action": "import"}
    )

    body = answer.content.decode()
    assert answer.status_code == 400
    assert "is an administrator&#x27;s act" in body and "https://pc1.corp.example:5986" in body
    pc.refresh_from_db()
    assert (pc.address, pc.port) == ("pc1.corp.example", 5986)
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_helpdesk_cannot_import_a_new_machine_outside_the_credentials_pattern(helpdesk, pc):
    text = HEADER + "evil,attacker.example,5986,https,employee,fleet\n"

    report = machine_import.check(text, user=helpdesk)

    assert [e.reason for e in report.errors] == [
        "the credential fleet may not be sent to attacker.example: an administrator adds "
        "this machine or sets an address pattern on the credential that covers it"
    ]
    with pytest.raises(machine_import.ImportRefused):
        machine_import.import_machines(text, user=helpdesk)
    assert not Machine.objects.filter(name="evil").exists()


@pytest.mark.django_db
def test_a_target_changed_behind_the_portals_back_is_never_sent_the_password(pc, listener):
    # Whatever path changed the row (a shell, a future form), the one place that decrypts
    # the password refuses a target nobody approved.
    Machine.objects.filter(pk=pc.pk).update(**_point_at(listener))
    pc.refresh_from_db()

    outcome = _test_connection(pc)

    assert outcome["status"] == "error" and outcome["kind"] == "untrusted"
    assert "not approved by an administrator" in outcome["message"]
    assert PASSWORD not in outcome["message"]
    assert listener.received == b""


@pytest.mark.django_db
def test_an_administrators_change_is_bound_and_audited(client, admin_user, pc, employee):
    client.force_login(admin_user)
    url = reverse("admin:diagnostics_machine_change", args=[pc.pk])
    data = {
        "name": "pc1",
        "address": "pc1-new.corp.example",
        "port": 5986,
        "scheme": "https",
        "channel": "winrm",
        "verify_tls": "on",
        "credential": pc.credential_id,
        "owners": [employee.pk],
    }

    assert client.post(url, data).status_code == 302

    pc.refresh_from_db()
    assert pc.address == "pc1-new.corp.example" and pc.bound_by == admin_user
    assert pc.credential_refusal() == ""
    entry = AuditEntry.objects.get(machine=pc)
    assert (entry.action, entry.actor, entry.job) == ("target_changed", admin_user, None)
    assert entry.changes == [
        {"setting": "address", "from": "pc1.corp.example", "to": "pc1-new.corp.example"}
    ]
    assert PASSWORD not in str(entry.changes) + entry.detail


@pytest.mark.parametrize(
    "address",
    ["<b>pc</b>", "pc\x00x", "user:pass@pc1", "pc1#frag", "pc1/wsman", "http://pc1"],
)
@pytest.mark.django_db
def test_an_address_that_is_not_a_host_is_refused_in_the_admin(client, admin_user, pc, address):
    client.force_login(admin_user)
    url = reverse("admin:diagnostics_machine_change", args=[pc.pk])
    data = {"name": "pc1", "address": address, "port": 5986, "scheme": "https", "channel": "winrm"}
    data |= {"credential": pc.credential_id}

    answer = client.post(url, data)

    assert answer.status_code == 200
    expected = "Null characters are not allowed" if "\x00" in address else "Give a host name"
    assert expected in answer.content.decode()
    pc.refresh_from_db()
    assert pc.address == "pc1.corp.example"


@pytest.fixture
def lab_host() -> Iterator[dict]:
    """One winsim host in this process, over plain HTTP (NTLM): identity not verified."""
    hosts = hosts_from_profile({"hosts": {"plain": {}}})
    with FleetThread(hosts):
        host = hosts[0]
        yield {"port": host.port, "username": host.username, "password": host.password}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_psk_is_sent_only_to_a_machine_whose_identity_is_verified(
    lab_host, employee, seed_article
):
    cred = Credential(name="plain", username=lab_host["username"])
    cred.set_password(lab_host["password"])
    cred.save()
    machine = Machine.objects.create(
        name="plain", address="127.0.0.1", port=lab_host["port"], scheme="http", credential=cred
    )
    machine.bind(None)  # approved by an administrator, but plain HTTP proves no identity
    machine.save()
    psk = Secret(name="company-l2tp-psk")
    psk.set_value("Company-Psk-1")
    psk.save()
    job = jobs.create_job(user=employee, machine=machine, article=seed_article, kind="fix")
    steps = [jobs.Step("f1", "set_vpn_psk", {"psk": {"secret": psk.name}}, "fix", "PSK")]
    url = f"http://127.0.0.1:{lab_host['port']}/wsman"

    error = jobs.execute(job, steps)

    assert "its identity is not verified" in error
    assert requests_received(url) == 0  # nothing, not even a handshake, reached the host
    assert not StepResult.objects.filter(job=job).exists()
    assert "Company-Psk-1" not in str(Job.objects.get(pk=job.pk).plan)

    # The control: the same plan with the lab switch on reaches the host.
    Credential.objects.filter(pk=cred.pk).update(allow_unverified=True)
    job.machine.credential.refresh_from_db()
    jobs.execute(job, [jobs.Step("f2", "set_vpn_psk", steps[0].args, "fix", "PSK")])
    assert requests_received(url) > 0
    assert StepResult.objects.filter(job=job, step_id="f2").exists()


@pytest.mark.django_db
def test_the_machines_list_shows_the_helpdesk_which_targets_wait_for_an_administrator(
    client, helpdesk, pc
):
    client.force_login(helpdesk)
    url = reverse("diagnostics:machines")
    assert "data-refusal" not in client.get(url).content.decode()

    Machine.objects.filter(pk=pc.pk).update(address="elsewhere.example")

    body = client.get(url).content.decode()
    assert "not sent: needs an administrator" in body
    assert "not approved by an administrator" in body  # the reason, on hover


@pytest.mark.django_db
def test_an_administrator_approves_an_imported_machine_and_it_is_audited(client, admin_user, pc):
    Machine.objects.filter(pk=pc.pk).update(address="pc1b.corp.example")  # unapproved now
    pc.refresh_from_db()
    assert "not approved" in pc.credential_refusal()
    client.force_login(admin_user)

    answer = client.post(
        reverse("admin:diagnostics_machine_changelist"),
        {"action": "approve_targets", "_selected_action": [pc.pk]},
        follow=True,
    )

    assert "Approved the connection settings of 1 machine." in answer.content.decode()
    pc.refresh_from_db()
    assert pc.credential_refusal() == "" and pc.bound_by == admin_user
    assert AuditEntry.objects.get(machine=pc).actor == admin_user


@pytest.mark.django_db(transaction=True)
def test_machines_registered_before_the_upgrade_keep_working_after_it():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before = [("diagnostics", "0015_job_waits_for_the_employees_attempt")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    cred = old.get_model("diagnostics", "Credential").objects.create(
        name="old", username="kaiketsu", password_encrypted="x"
    )
    old.get_model("diagnostics", "Machine").objects.create(
        name="pc-old", address="pc-old.corp.example", port=5986, scheme="https", credential=cred
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    machine = Machine.objects.get(name="pc-old")
    assert machine.credential_refusal() == ""  # bound at upgrade; HTTPS verified
    Machine.objects.filter(pk=machine.pk).update(port=5985)
    machine.refresh_from_db()
    assert "not approved by an administrator" in machine.credential_refusal()
