"""Shared fixtures: personas, the shipped KB, and the real services the integration tests need.

The Celery worker, the winsim fleet and the web server run as real processes against the
test database (file-based for SQLite, the test database on PostgreSQL), talking over real
sockets to the real Redis named by REDIS_URL.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from scripts.services import worker_argv
from winsim.hosts import load_profile

ROOT = Path(__file__).resolve().parent.parent
DEMO_PROFILE = ROOT / "winsim" / "profiles" / "demo.yaml"
TEST_JOB_TIME_LIMIT = "25"


# --- personas ------------------------------------------------------------------------------


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

    cred = Credential(name="idle-cred", username="kaiketsu")
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


# --- processes -----------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        KAIKETSU_JOB_TIME_LIMIT=TEST_JOB_TIME_LIMIT,
        KAIKETSU_RESTART_NOW_SECONDS="1",
        KAIKETSU_RESTART_TIMEOUT="60",
        **extra,
    )
    return env


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child_database_url() -> str:
    """A DATABASE_URL for child processes that points at the test database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_fleet(
    directory: Path, faults: dict[str, dict] | None = None
) -> tuple[subprocess.Popen, dict[str, dict]]:
    """The demo fleet on free ports: (process, {host name: its --print-json line}).

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


def start_winsim(profile: Path, timeout: float = 30) -> tuple[subprocess.Popen, dict[str, dict]]:
    """``python -m winsim --profile FILE --print-json``: (process, {host: its JSON line}).

    Fails the test, with winsim's stderr, unless every host of the profile is listening
    within ``timeout`` seconds (a hung winsim included: a thread reads its output).
    """
    expected = len(load_profile(profile))
    errors = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (winsim's life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "winsim", "--profile", str(profile), "--print-json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=_child_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    # A thread reads stdout: select() cannot see lines already in the file's buffer.
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    hosts: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(hosts) < expected and time.monotonic() < deadline:
        try:
            info = json.loads(lines.get(timeout=0.5))
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        hosts[info["host"]] = info
    if len(hosts) < expected:
        _stop(proc)
        errors.seek(0)
        pytest.fail(f"winsim started {len(hosts)} of {expected} hosts: {errors.read()[-2000:]}")
    return proc, hosts


@pytest.fixture(scope="session")
def winsim_fleet(tmp_path_factory) -> Iterator[dict[str, dict]]:
    """The demo fleet, shared by tests that only read it (diagnoses)."""
    proc, hosts = start_fleet(tmp_path_factory.mktemp("winsim"))
    yield hosts
    _stop(proc)


@pytest.fixture
def fresh_fleet(tmp_path) -> Iterator[dict[str, dict]]:
    """A demo fleet of its own, for a test that changes hosts (fixes, restarts)."""
    proc, hosts = start_fleet(tmp_path)
    yield hosts
    _stop(proc)


@pytest.fixture(scope="session")
def celery_queue() -> str:
    return f"kaiketsu-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, celery_queue) -> Iterator[subprocess.Popen]:
    """A real Celery worker process on its own queue, against the test database."""
    with tempfile.NamedTemporaryFile(prefix="kaiketsu-worker-", suffix=".log") as log:
        proc = _start_worker(celery_queue, log)
        proc.log_path = log.name  # tests read what the worker logged
        yield proc
        _stop(proc, timeout=20)


def _start_worker(queue: str, log) -> subprocess.Popen:
    proc = subprocess.Popen(
        worker_argv(sys.executable, queue),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_child_env(DATABASE_URL=child_database_url(), KAIKETSU_QUEUE=queue),
        start_new_session=True,  # its own process group, so a test can kill the whole worker
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited: {Path(log.name).read_text()[-2000:]}")
        if "ready." in Path(log.name).read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"celery worker not ready: {Path(log.name).read_text()[-2000:]}")


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
        cred = Credential(name=f"{name}-cred", username=info["username"])
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


def wait_for_job(job, timeout: float = 60):
    """Poll until the job is finished; returns it refreshed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout} s")
