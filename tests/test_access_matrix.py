"""Every URL of the project, as every persona: the answer each must get.

The URL list comes from the resolver, walked recursively. A URL added without a row in
EXPECTED fails test_every_url_has_an_expectation, naming the route, so no page ships
without someone deciding who may see it. Path parameters are real objects owned by
`employee`. The `auditor` holds every helpdesk permission but approve_fix: seeing every
job is not deciding on fixes. Answers: 200, LOGIN (302 to the site's login), ADMIN_LOGIN (302 to the admin's),
302 (another redirect), 404 (no hint the object or page exists), 405 (GET on POST-only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from diagnostics import connectivity
from diagnostics.models import Article, Credential, HandOver, HandOverMessage, Job, Machine, Scan
from diagnostics.roles import HELPDESK, ensure_groups

pytestmark = pytest.mark.django_db

LOGIN = "login"
ADMIN_LOGIN = "admin-login"
PERSONAS = ("anonymous", "employee", "other_employee", "kb_admin", "helpdesk", "auditor", "admin")
TOKEN = "matrix-token"


def _all(answer) -> dict[str, object]:
    return dict.fromkeys(PERSONAS, answer)


def _login_then(**answers) -> dict[str, object]:
    return {"anonymous": LOGIN, **answers}


OWNER_ONLY = _login_then(
    employee=200, other_employee=404, kb_admin=404, helpdesk=200, auditor=200, admin=200
)  # the employee's own job: its owner and the helpdesk
HELPDESK_ONLY = _login_then(
    employee=404, other_employee=404, kb_admin=404, helpdesk=200, auditor=200, admin=200
)
APPROVERS_ONLY = {**HELPDESK_ONLY, "auditor": 404}
# The employee's own hand-over: the helpdesk answers it in its inbox, not on these pages.
CREATOR_ONLY = _login_then(
    employee=200, other_employee=404, kb_admin=404, helpdesk=404, auditor=404, admin=404
)
NOT_THE_CREATOR = {k: v for k, v in CREATOR_ONLY.items() if k != "employee"}
# The texts nothing matched: the helpdesk, and KB admins who write the missing articles.
BLIND_SPOTS = {**HELPDESK_ONLY, "kb_admin": 200}
NOT_THE_OWNERS = {"anonymous": LOGIN, "other_employee": 404, "kb_admin": 404}
NOT_HELPDESK = {"anonymous": LOGIN, "employee": 404, "other_employee": 404, "kb_admin": 404}
NOT_APPROVERS = {**NOT_HELPDESK, "auditor": 404}
EVERY_USER = _login_then(
    employee=200, other_employee=200, kb_admin=200, helpdesk=200, auditor=200, admin=200
)
# The fixture's helpdesk user is not staff; the KB admin is.
ADMIN_SITE = {
    "anonymous": ADMIN_LOGIN,
    "employee": ADMIN_LOGIN,
    "other_employee": ADMIN_LOGIN,
    "kb_admin": 200,
    "helpdesk": ADMIN_LOGIN,
    "auditor": ADMIN_LOGIN,
    "admin": 200,
}


@dataclass(frozen=True)
class Row:
    name: str
    kwargs: Callable[[dict], dict] = lambda objs: {}
    get: dict[str, object] = field(default_factory=dict)
    # For POST-only URLs: what a POST gets from those who must be refused (never the
    # permitted ones: their POST would really start work).
    post: dict[str, object] = field(default_factory=dict)


def _job(objs: dict) -> dict:
    return {"pk": objs["job"].pk}


def _machine(objs: dict) -> dict:
    return {"pk": objs["machine"].pk}


def _handover(objs: dict) -> dict:
    return {"pk": objs["handover"].pk}


def _scan(objs: dict) -> dict:
    return {"pk": objs["scan"].pk}


EXPECTED: dict[str, Row] = {
    "login/": Row("login", get=_all(200)),
    "logout/": Row("logout", get=_all(405)),
    "i18n/setlang/": Row("set_language", get=_all(302)),
    "favicon.ico": Row("favicon", get=_all(301)),  # to the static icon, for everyone
    "": Row("diagnostics:home", get=EVERY_USER),
    "articles/<slug:slug>/": Row(
        "diagnostics:article", lambda o: {"slug": o["article"].slug}, get=EVERY_USER
    ),
    "jobs/": Row(
        "diagnostics:job-create",
        get=_all(405),
        post={"anonymous": LOGIN, "other_employee": 404},  # with the employee's machine
    ),
    "jobs/<int:pk>/": Row("diagnostics:job-detail", _job, get=OWNER_ONLY),
    "jobs/<int:pk>/events/": Row(
        "diagnostics:job-events", _job, get={**OWNER_ONLY, "anonymous": 404}
    ),
    # A diagnosis with nothing to fix sends its viewers back to the job page.
    "jobs/<int:pk>/fix/": Row(
        "diagnostics:fix-confirm",
        _job,
        get={**OWNER_ONLY, "employee": 302, "helpdesk": 302, "auditor": 302, "admin": 302},
        post=NOT_THE_OWNERS,
    ),
    # GET asks first (what goes back, what cannot); a diagnosis has nothing to roll back.
    "jobs/<int:pk>/rollback/": Row(
        "diagnostics:job-rollback",
        _job,
        get={**NOT_THE_OWNERS, "employee": 302, "helpdesk": 302, "auditor": 302, "admin": 302},
        post=NOT_THE_OWNERS,
    ),
    "jobs/<int:pk>/retry/": Row("diagnostics:job-retry", _job, get=_all(405), post=NOT_THE_OWNERS),
    "jobs/<int:pk>/resume/": Row(
        "diagnostics:job-resume", _job, get=_all(405), post=NOT_THE_OWNERS
    ),
    "jobs/<int:pk>/handover/": Row(
        "diagnostics:job-handover", _job, get=_all(405), post=NOT_THE_CREATOR
    ),
    "mine/": Row("diagnostics:my-jobs", get=EVERY_USER),
    "handovers/": Row(
        "diagnostics:handover-create",
        get=_all(405),
        post={"anonymous": LOGIN, "other_employee": 404},  # with the employee's machine
    ),
    "handovers/<int:pk>/": Row("diagnostics:handover", _handover, get=CREATOR_ONLY),
    "handovers/<int:pk>/reply/": Row(
        "diagnostics:handover-reply", _handover, get=_all(405), post=NOT_THE_CREATOR
    ),
    "helpdesk/handovers/": Row("diagnostics:inbox", get=HELPDESK_ONLY),
    "helpdesk/handovers/<int:pk>/": Row("diagnostics:inbox-detail", _handover, get=HELPDESK_ONLY),
    "helpdesk/handovers/<int:pk>/reply/": Row(
        "diagnostics:inbox-reply", _handover, get=_all(405), post=NOT_HELPDESK
    ),
    "helpdesk/handovers/<int:pk>/take/": Row(
        "diagnostics:inbox-take", _handover, get=_all(405), post=NOT_HELPDESK
    ),
    "helpdesk/handovers/<int:pk>/close/": Row(
        "diagnostics:inbox-close", _handover, get=_all(405), post=NOT_HELPDESK
    ),
    # A KB admin tries a draft's checks on a machine of their own (#17).
    "kb/articles/<int:pk>/try/": Row(
        "diagnostics:kb-try-machine",
        lambda o: {"pk": o["article"].pk},
        get=_all(405),
        post=_login_then(employee=404, other_employee=404, helpdesk=404, auditor=404),
    ),
    "approvals/": Row("diagnostics:approvals", get=APPROVERS_ONLY),
    "approvals/<int:pk>/": Row(
        "diagnostics:approval-decide", _job, get=_all(405), post=NOT_APPROVERS
    ),
    "helpdesk/jobs/": Row("diagnostics:history", get=HELPDESK_ONLY),
    "helpdesk/jobs/export.csv": Row("diagnostics:history-export", get=HELPDESK_ONLY),
    "helpdesk/jobs/<int:pk>/": Row("diagnostics:helpdesk-job", _job, get=HELPDESK_ONLY),
    "helpdesk/jobs/<int:pk>/rerun/": Row(
        "diagnostics:helpdesk-job-rerun",
        _job,
        get=_all(405),
        post=NOT_HELPDESK,
    ),
    "helpdesk/jobs/<int:pk>/cancel/": Row(
        "diagnostics:helpdesk-job-cancel", _job, get=_all(405), post=NOT_HELPDESK
    ),
    "console/": Row("diagnostics:dashboard", get=HELPDESK_ONLY),
    "console/machines/": Row("diagnostics:machines", get=HELPDESK_ONLY),
    "console/unmatched/": Row("diagnostics:unmatched", get=BLIND_SPOTS),
    "console/scans/": Row("diagnostics:scans", get=HELPDESK_ONLY, post=NOT_HELPDESK),
    "console/scans/<int:pk>/": Row("diagnostics:scan", _scan, get=HELPDESK_ONLY),
    "console/scans/<int:pk>/export.csv": Row("diagnostics:scan-export", _scan, get=HELPDESK_ONLY),
    "console/machines/import/": Row(
        "diagnostics:machines-import",
        get=HELPDESK_ONLY,
        post=NOT_HELPDESK,
    ),
    "console/machines/<int:pk>/test/": Row(
        "diagnostics:machine-test",
        _machine,
        get=_all(405),
        post=NOT_HELPDESK,
    ),
    "console/machines/<int:pk>/test/<str:token>/": Row(
        "diagnostics:machine-test-result",
        lambda o: {"pk": o["machine"].pk, "token": TOKEN},
        get=HELPDESK_ONLY,
    ),
    "console/machines/<int:pk>/agent/": Row(
        "diagnostics:machine-agent", _machine, get=_all(405), post=NOT_HELPDESK
    ),
    # The agent's endpoints (#14) answer machines, not people: a signed-in browser holds no
    # machine credential, so it is refused like any caller without one.
    "agent/v1/enrol": Row("diagnostics:agent-enrol", get=_all(405), post=_all(400)),
    # An async long poll: the test client would run it on another thread, away from this
    # test's database; tests/test_agent.py refuses a call without a credential over HTTP.
    "agent/v1/work": Row("diagnostics:agent-work"),
    "agent/v1/tasks/<int:task>/lines": Row(
        "diagnostics:agent-lines", lambda o: {"task": 1}, get=_all(405), post=_all(401)
    ),
    "admin/": Row("admin:index", get=ADMIN_SITE),
    "admin/diagnostics/article/": Row("admin:diagnostics_article_changelist", get=ADMIN_SITE),
}
# The rest of the admin site is Django's, guarded by the same staff check as its index.
EXCLUDED_PREFIX = "admin/"


def _routes(patterns=None, prefix: str = "") -> Iterator[str]:
    """Every route of the project, as the resolver sees it (nested includes joined)."""
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def test_every_url_has_an_expectation():
    routes = set(_routes())
    checked = {r for r in routes if not r.startswith(EXCLUDED_PREFIX) or r in EXPECTED}
    missing = sorted(checked - set(EXPECTED))
    assert not missing, f"URLs without an access expectation in {__file__}: {missing}"
    stale = sorted(set(EXPECTED) - routes)
    assert not stale, f"expectations for URLs that no longer exist: {stale}"
    assert len(checked) >= 15  # the walk really found the project's URLs


@pytest.fixture
def objects(employee, other_employee):
    cred = Credential(name="matrix-cred", username="kaiketsu")
    cred.set_password("pw")
    cred.save()
    machine = Machine.objects.create(
        name="PC-MATRIX", address="127.0.0.1", port=1, scheme="http", credential=cred
    )
    machine.owners.add(employee)
    article = Article.objects.create(
        slug="matrix", title_ja="記事", title_en="Article", status=Article.Status.PUBLISHED
    )
    # Finished, so its event stream ends at once instead of following a live job.
    job = Job.objects.create(
        user=employee,
        machine=machine,
        article=article,
        status=Job.Status.DONE,
        outcome=Job.Outcome.HEALTHY,
    )
    scan = Scan.objects.create(
        article=article,
        created_by=employee,
        selection="all",
        machine_ids=[machine.pk],
        next_index=1,
        finished_at=job.created_at,
    )
    handover = HandOver.objects.create(user=employee, job=job, machine=machine)
    cache.set(connectivity.key(machine.pk, TOKEN), {"status": "pending"}, 60)
    yield {"machine": machine, "article": article, "job": job, "scan": scan, "handover": handover}
    cache.delete(connectivity.key(machine.pk, TOKEN))


@pytest.fixture
def login_as(client, request, django_user_model):
    def login(persona: str):
        if persona == "anonymous":
            return client
        if persona == "admin":
            user = django_user_model.objects.create_superuser("root", password="pw-root-1")
        elif persona == "auditor":
            user = django_user_model.objects.create_user("auditor", password="pw-auditor-1")
            perms = ensure_groups()[HELPDESK].permissions.exclude(codename="approve_fix")
            assert perms.exists()
            user.user_permissions.set(perms)
        else:
            user = request.getfixturevalue(persona)
        client.force_login(user)
        return client

    return login


def _matches(response, expected) -> bool:
    location = response.get("Location", "")
    if expected == LOGIN:
        return response.status_code == 302 and location.startswith(reverse("login"))
    if expected == ADMIN_LOGIN:
        return response.status_code == 302 and location.startswith(reverse("admin:login"))
    return response.status_code == expected


def _answer(response) -> str:
    location = response.get("Location")
    return f"{response.status_code}" + (f" -> {location}" if location else "")


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_persona_gets_the_expected_answer_from_every_url(persona, login_as, objects):
    client = login_as(persona)
    wrong = []
    for route, row in EXPECTED.items():
        url = reverse(row.name, kwargs=row.kwargs(objects))
        if persona in row.get:
            response = client.get(url)
            if hasattr(response, "streaming_content"):
                b"".join(response)  # let a stream (sync or async) finish before the next one
            if not _matches(response, row.get[persona]):
                wrong.append(f"GET {url} ({route}): {_answer(response)}, want {row.get[persona]}")
        if persona in row.post:
            data = {"machine": objects["machine"].pk, "article": objects["article"].slug}
            response = client.post(url, data)
            if not _matches(response, row.post[persona]):
                wrong.append(f"POST {url}: {_answer(response)}, want {row.post[persona]}")
    assert not wrong, "\n".join(wrong)
    # Refused POSTs must not have started anything.
    assert Job.objects.count() == 1
    assert Scan.objects.count() == 1
    assert HandOver.objects.count() == 1 and not HandOverMessage.objects.exists()
    assert HandOver.objects.get().status == HandOver.Status.OPEN
