"""Shared fixtures: personas, the shipped KB, and the real services the integration tests need.

The Celery worker, the winsim fleet and the web server run as real processes against the
test database (file-based for SQLite, the test database on PostgreSQL), talking over real
sockets to the real Redis named by REDIS_URL.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.utils import translation

from scripts import services
from scripts.services import Service

ROOT = Path(__file__).resolve().parent.parent
DEMO_PROFILE = ROOT / "winsim" / "profiles" / "demo.yaml"
TEST_JOB_TIME_LIMIT = "25"


# What an administrator sets on a credential for the winsim lab on this host: any machine at
# 127.0.0.1 may use it, over plain HTTP or a self-signed certificate (issue #16).
LAB = {"address_pattern": "127.0.0.1", "allow_unverified": True}


# --- personas ------------------------------------------------------------------------------


@pytest.fixture
def english(settings) -> Iterator[None]:
    """Pages and messages in English, for tests that quote the English wording (the Japanese
    catalogue is test_i18n's business); modules opt in with usefixtures("english")."""
    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def default_language() -> Iterator[None]:
    """Each test starts in the site's default language. A request through the test client
    leaves its language active in this thread (LocaleMiddleware), and a job made afterwards
    takes the active one: without this, a test's language depended on the tests before it."""
    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture
def employee(django_user_model):
    return django_user_model.objects.create_user("employee", password="pw-employee-1")


@pytest.fixture
def other_employee(django_user_model):
    return django_user_model.objects.create_user("other", password="pw-other-1")


@pytest.fixture
def helpdesk(django_user_model):
    from diagnostics.roles import HELPDESK, ensure_groups

    user = django_user_model.objects.create_user("helpdesk", password="pw-helpdesk-1")
    user.groups.add(ensure_groups()[HELPDESK])
    return user


@pytest.fixture
def kb_admin(django_user_model):
    from diagnostics.roles import KB_ADMIN, ensure_groups

    user = django_user_model.objects.create_user("kbadmin", password="pw-kbadmin-1", is_staff=True)
    user.groups.add(ensure_groups()[KB_ADMIN])
    return user


@pytest.fixture
def idle_machine(db, employee):
    """A machine of `employee` where nothing answers: for tests that never reach a host."""
    from diagnostics.models import Credential, Machine

    cred = Credential(name="idle-cred", username="kaiketsu", **LAB)
    cred.set_password("idle-password-1")
    cred.save()
    machine = Machine.objects.create(name="pc-idle", address="127.0.0.1", port=1, credential=cred)
    machine.owners.add(employee)
    return machine


@pytest.fixture
def kb(db):
    """The shipped knowledge base, imported into the test database."""
    from diagnostics.kbstore import import_dir

    return {a.slug: a for a in import_dir(ROOT / "kb")}


@pytest.fixture
def seed_article(kb):
    return kb["l2tp-ipsec-psk-negotiation"]


# --- processes: started the one way run, tests and bench share (scripts/services.py) ---------


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        KAIKETSU_JOB_TIME_LIMIT=TEST_JOB_TIME_LIMIT,
        KAIKETSU_RESTART_NOW_SECONDS="1",
        KAIKETSU_RESTART_TIMEOUT="60",
        KAIKETSU_ATTEMPT_TIMEOUT="30",
        KAIKETSU_ATTEMPT_POLL_S="1",
        KAIKETSU_AGENT_PICKUP_TIMEOUT="6",
        KAIKETSU_AGENT_POLL_SECONDS="3",
        **extra,
    )
    return env


def child_database_url() -> str:
    """A DATABASE_URL for child processes that points at the test database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_fleet(
    directory: Path, faults: dict[str, dict] | None = None
) -> tuple[Service, dict[str, dict]]:
    """The demo fleet on free ports: (service, {host name: its --print-json line}).

    ``faults`` switches on winsim faults per host name, e.g. {"demo-healthy": {...}}.
    """
    profile = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    for name, host in (profile.get("hosts") or {}).items():
        if isinstance(host, dict):
            host["port"] = 0
            if faults and name in faults:
                host["faults"] = {**(host.get("faults") or {}), **faults[name]}
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    return start_winsim(path)


def start_winsim(profile: Path, timeout: float = 30) -> tuple[Service, dict[str, dict]]:
    """``python -m winsim --profile FILE --print-json``: (service, {host: its JSON line}).

    Fails the test, with winsim's last lines, unless every host of the profile is listening
    within ``timeout`` seconds.
    """
    try:
        return services.start_winsim(profile, _child_env(), timeout=timeout)
    except services.ServiceError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def winsim_fleet(tmp_path_factory) -> Iterator[dict[str, dict]]:
    """The demo fleet, shared by tests that only read it (diagnoses)."""
    fleet, hosts = start_fleet(tmp_path_factory.mktemp("winsim"))
    yield hosts
    fleet.stop()


@pytest.fixture
def fresh_fleet(tmp_path) -> Iterator[dict[str, dict]]:
    """A demo fleet of its own, for a test that changes hosts (fixes, restarts)."""
    fleet, hosts = start_fleet(tmp_path)
    yield hosts
    fleet.stop()


@pytest.fixture(scope="session")
def celery_queue() -> str:
    return f"kaiketsu-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, celery_queue, tmp_path_factory) -> Iterator[Service]:
    """A real Celery worker process on its own queue, against the test database.

    Its output goes to ``worker.log_path`` (tests read what the worker logged).
    """
    service = start_worker(celery_queue, tmp_path_factory.mktemp("worker") / "worker.log")
    yield service
    service.stop(timeout=20)


def start_worker(queue: str, log_path: Path) -> Service:
    """A worker consuming ``queue``, ready, logging to ``log_path``.

    It runs in its own process group: ``worker.kill()`` ends it and all its threads at once.
    """
    env = _child_env(DATABASE_URL=child_database_url(), KAIKETSU_QUEUE=queue)
    return services.start_worker(env, log_path=log_path, queue=queue, timeout=30)


@pytest.fixture
def use_worker_queue(settings, celery_queue, worker):
    """Send tasks from this test process to the test worker's queue."""
    from portal.celery import app

    settings.CELERY_TASK_DEFAULT_QUEUE = celery_queue
    app.conf.task_default_queue = celery_queue
    yield worker
    app.conf.task_default_queue = "kaiketsu"


def machines_for(fleet: dict[str, dict], owner) -> dict:
    """One Machine per winsim host of ``fleet``, owned by ``owner``."""
    from diagnostics.models import Credential, Machine

    machines = {}
    for name, info in fleet.items():
        cred = Credential(name=f"{name}-cred", username=info["username"], **LAB)
        cred.set_password(info["password"])
        cred.save()
        scheme, rest = info["url"].split("://", 1)
        port = int(rest.split("/", 1)[0].rsplit(":", 1)[1])
        machine = Machine.objects.create(
            name=name,
            address="127.0.0.1",
            port=port,
            scheme=scheme,
            verify_tls=False,
            credential=cred,
        )
        machine.owners.add(owner)
        machines[name] = machine
    return machines


@pytest.fixture
def demo_machines(db, employee, winsim_fleet) -> dict:
    """One Machine per host of the shared demo fleet, owned by `employee`."""
    return machines_for(winsim_fleet, employee)


@pytest.fixture
def fresh_machines(db, employee, fresh_fleet) -> dict:
    """One Machine per host of a fleet of the test's own, owned by `employee`."""
    return machines_for(fresh_fleet, employee)


COMPANY_PSK = "Kaiketsu2024Psk"  # the demo VPN server's key (winsim/profiles/demo.yaml)


@pytest.fixture
def company_psk(db):
    """The company L2TP PSK in the encrypted secret store, as `load_demo` puts it."""
    from diagnostics.models import Secret

    secret = Secret(name="company-l2tp-psk")
    secret.set_value(COMPANY_PSK)
    secret.save()
    return secret


def start_job(machine, article, user):
    """A diagnosis handed to the test worker (transaction=True tests: on_commit never fires)."""
    from diagnostics import jobs
    from diagnostics.workflows.diagnosis import start_diagnosis

    job = start_diagnosis(user, machine, article, pasted_text="test")
    jobs.enqueue(job.pk)
    return job


def diagnose(machine, article, user):
    """A diagnosis run to its end by the test worker; returns it refreshed."""
    return wait_for_job(start_job(machine, article, user))


def wait_for_job(job, timeout: float = 60, connect: bool = False):
    """Poll until the job is finished; returns it refreshed.

    ``connect``: when the fix asks the employee to connect, the employee does (once).
    """
    deadline = time.monotonic() + timeout
    connected = False
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        if connect and not connected and job.status == "connect":
            employee_connects(job.machine)
            connected = True
        time.sleep(0.1)
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout} s")


def _sim_post(machine, path: str) -> tuple[int, bytes]:
    url = f"{machine.scheme}://{machine.address}:{machine.port}{path}"
    context = ssl._create_unverified_context() if machine.scheme == "https" else None  # noqa: S323
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
        return answer.status, answer.read()


def employee_connects(machine, name: str | None = None) -> dict:
    """The employee at ``machine`` connects the VPN themselves, with their own credentials
    and phone book (winsim's /sim/connect control); returns what the dial gave."""
    query = f"?{urllib.parse.urlencode({'name': name})}" if name else ""
    return json.loads(_sim_post(machine, f"/sim/connect{query}")[1])


def arm_fault(machine, **faults: int) -> None:
    """Switch on winsim faults of ``machine`` at run time (``/sim/fault``), e.g. a one-shot
    ``drop_after_lines=1``."""
    status, _ = _sim_post(machine, f"/sim/fault?{urllib.parse.urlencode(faults)}")
    assert status == 204


class EmployeeAt(threading.Thread):
    """While a blocking call runs (``manage.py diagnose --fix``), the employee connects
    whenever a job of ``machine`` asks them to."""

    def __init__(self, machine):
        super().__init__(daemon=True)
        self.machine, self.done, self.answered = machine, threading.Event(), {}

    def run(self) -> None:
        from django.db import connection

        from diagnostics.models import Job

        try:
            while not self.done.is_set():
                asking = Job.objects.filter(machine=self.machine, status=Job.Status.CONNECT)
                for job_id in asking.values_list("pk", flat=True):
                    if job_id not in self.answered:
                        self.answered[job_id] = employee_connects(self.machine)
                time.sleep(0.2)
        finally:
            connection.close()

    def __enter__(self) -> EmployeeAt:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)


# --- a whole demo, as `make run` starts it -------------------------------------------------


def demo_env(directory: Path) -> dict[str, str]:
    """The environment of a `make run` of its own: free ports (web and every demo host), its
    own SQLite file, queue and settings file, and a REDIS_URL where nothing answers, so the
    demo starts a private Redis (job streams and cache keys are per database, and the demo's
    job numbers would meet the test run's). Nothing else of the test run leaks in (a
    person's terminal does not have DJANGO_SETTINGS_MODULE set)."""
    profile = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    taken: set[int] = set()

    def fresh_port() -> int:  # the kernel may hand out a just-closed port twice
        port = services.free_port()
        while port in taken:
            port = services.free_port()
        taken.add(port)
        return port

    for host in (profile.get("hosts") or {}).values():
        host["port"] = fresh_port()  # load_demo registers the machines at these ports
    path = directory / "demo.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(directory)),
        "LANG": "C.UTF-8",
        "PORT": str(fresh_port()),
        "REDIS_URL": f"redis://127.0.0.1:{fresh_port()}/0",
        "DATABASE_URL": f"sqlite:///{directory / 'demo.sqlite3'}",
        "KAIKETSU_QUEUE": f"kaiketsu-demo-{uuid.uuid4().hex[:8]}",
        "KAIKETSU_PROFILE": str(path),
        "KAIKETSU_DEMO_ENV": str(directory / "demo.env"),
    }


def wait_for_demo(demo: Service, timeout: float = 120) -> None:
    """Fail the test, with the demo's last lines, unless it prints its banner in time."""
    if not demo.wait_for_line(r"^Kaiketsu is running: ", timeout):
        tail = "\n".join(demo.tail(30))
        demo.stop()
        pytest.fail(f"the demo did not start within {timeout:.0f} s:\n{tail}")


# --- the agent channel (issue #14) ---------------------------------------------------------

AT_HOME = "demo-nat-t"  # 809 until AssumeUDP... = 2 and a restart: a fix with a restart
OFFLINE = "demo-healthy"
OTHER = "demo-policyagent-stopped"


@pytest.fixture
def home_fleet(tmp_path):
    """Three demo hosts, all with the agent: one at home (WinRM cannot reach it), one
    switched off, one in the office."""
    profile = yaml.safe_load(DEMO_PROFILE.read_text(encoding="utf-8"))
    hosts = {n: profile["hosts"][n] for n in (AT_HOME, OFFLINE, OTHER)}
    for host in hosts.values():
        host["port"] = 0
    hosts[AT_HOME]["agent"] = {"at_home": True}
    hosts[OFFLINE]["agent"] = {"offline": True}
    hosts[OTHER]["agent"] = {}
    profile["hosts"] = hosts
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    fleet, info = start_winsim(path)
    yield info
    fleet.stop()


def agent_machines(fleet, owner) -> dict:
    """One Machine per host of ``fleet``, reached only through its agent, owned by ``owner``."""
    from diagnostics.models import Credential, Machine

    cred = Credential(name="agent-test-cred", username="kaiketsu")
    cred.set_password("unused-1")
    cred.save()
    machines = {}
    for name, info in fleet.items():
        port = int(info["url"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        machine = Machine.objects.create(
            name=name,
            address="127.0.0.1",
            port=port,
            scheme="http",
            credential=cred,
            channel=Machine.Channel.AGENT,
        )
        machine.owners.add(owner)
        machines[name] = machine
    return machines


def install_agent(machine, portal: str) -> None:
    """What an administrator does: a one-time token from the portal, given to the installer."""
    from diagnostics import agents

    _token, code = agents.create_token(machine=machine)
    query = urllib.parse.urlencode({"portal": portal, "token": code})
    status, _body = _sim_post(machine, f"/sim/agent?{query}")
    assert status == 204
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        machine.refresh_from_db()
        if machine.agent_enrolled:
            return
        time.sleep(0.1)
    raise AssertionError(f"{machine.name}'s agent did not enrol")


def agent_state(machine) -> dict:
    """What winsim's agent on ``machine`` did: running, revoked, plans it refused and why."""
    url = f"http://{machine.address}:{machine.port}/sim/agent"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())
