"""Who may do what (diagnostics/access.py): approving is its own permission, and four eyes.

The URL-by-persona answers live in test_access_matrix.py; here the rules that need more than
one request to show: a fix requested by a helpdesk member waits for a colleague, and seeing
every job does not let anyone approve.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import translation

from diagnostics import access, jobs
from diagnostics.models import Article, AuditEntry, Fix, Job
from diagnostics.roles import HELPDESK, ensure_groups
from diagnostics.workflows import fixes

pytestmark = pytest.mark.django_db

SELF_APPROVAL = "You requested this fix: another member of the helpdesk must approve it."


@pytest.fixture
def colleague(django_user_model):
    """A second helpdesk member."""
    user = django_user_model.objects.create_user("colleague", password="pw-colleague-1")
    user.groups.add(ensure_groups()[HELPDESK])
    return user


@pytest.fixture
def article(db):
    return Article.objects.create(
        slug="access", title_ja="記事", title_en="Article", status=Article.Status.PUBLISHED
    )


def _waiting_fix(user, machine, article) -> Job:
    """A fix job as request_fix leaves one that needs approval (no host is ever reached)."""
    diagnosis = Job.objects.create(
        user=user,
        machine=machine,
        article=article,
        status=Job.Status.DONE,
        outcome=Job.Outcome.PROBLEMS,
    )
    return Job.objects.create(
        user=user,
        machine=machine,
        article=article,
        parent=diagnosis,
        kind=Job.Kind.FIX,
        status=Job.Status.APPROVAL,
        fix_keys=["reset-company-psk"],
    )


def test_the_migrations_give_the_helpdesk_group_the_approve_fix_permission():
    # No ensure_groups() here: the group is as the data migration left it.
    group = Group.objects.get(name=HELPDESK)
    assert group.permissions.filter(codename="approve_fix").exists()
    assert not Group.objects.get(name="kb_admin").permissions.filter(codename="approve_fix")


def test_helpdesk_member_cannot_approve_a_fix_they_requested(
    client, helpdesk, idle_machine, article
):
    idle_machine.owners.add(helpdesk)  # their own laptop
    job = _waiting_fix(helpdesk, idle_machine, article)
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:approval-decide", args=[job.pk]),
        {"decision": "approve"},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    assert SELF_APPROVAL in response.text
    job.refresh_from_db()
    assert job.status == Job.Status.APPROVAL
    assert job.decided_by is None
    assert not AuditEntry.objects.filter(job=job, action=AuditEntry.Action.FIX_APPROVED).exists()


def test_self_approval_is_refused_in_japanese_for_a_japanese_reader(
    client, helpdesk, idle_machine, article
):
    job = _waiting_fix(helpdesk, idle_machine, article)
    client.force_login(helpdesk)
    response = client.post(
        reverse("diagnostics:approval-decide", args=[job.pk]),
        {"decision": "approve"},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="ja",
    )
    assert "この修正を依頼したのはあなたです" in response.text
    assert SELF_APPROVAL not in response.text


def test_a_colleague_may_approve_the_helpdesk_members_fix(
    client, helpdesk, colleague, idle_machine, article, django_capture_on_commit_callbacks
):
    job = _waiting_fix(helpdesk, idle_machine, article)
    assert access.may_approve(colleague, job)
    client.force_login(colleague)
    # The approval enqueues after commit; capture it without running it (no host answers).
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("diagnostics:approval-decide", args=[job.pk]), {"decision": "approve"}
        )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert job.decided_by == colleague
    assert len(callbacks) == 1


def test_the_requester_may_still_withdraw_their_own_fix(client, helpdesk, idle_machine, article):
    job = _waiting_fix(helpdesk, idle_machine, article)
    client.force_login(helpdesk)
    client.post(
        reverse("diagnostics:approval-decide", args=[job.pk]),
        {"decision": "decline", "note": "not needed after all"},
    )
    job.refresh_from_db()
    assert job.status == Job.Status.DECLINED


def test_the_workflow_itself_refuses_self_approval_for_any_caller(helpdesk, idle_machine, article):
    # The command line and any future caller go through fixes.decide, not the view.
    job = _waiting_fix(helpdesk, idle_machine, article)
    with translation.override("en"), pytest.raises(jobs.JobRefused, match=SELF_APPROVAL):
        fixes.decide(job, helpdesk, approve=True)
    job.refresh_from_db()
    assert job.status == Job.Status.APPROVAL


def test_an_employee_is_told_only_the_helpdesk_approves(employee, idle_machine, article):
    job = _waiting_fix(employee, idle_machine, article)
    with translation.override("en"):
        decision = access.may_approve(employee, job)
    assert not decision
    assert decision.reason == "Only the helpdesk approves fixes."


def test_seeing_every_job_does_not_let_a_user_approve(
    client, django_user_model, employee, idle_machine, article
):
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-1")
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    job = _waiting_fix(employee, idle_machine, article)
    client.force_login(viewer)
    assert client.get(reverse("diagnostics:history")).status_code == 200
    assert client.get(reverse("diagnostics:approvals")).status_code == 404
    response = client.post(
        reverse("diagnostics:approval-decide", args=[job.pk]), {"decision": "approve"}
    )
    assert response.status_code == 404
    job.refresh_from_db()
    assert job.status == Job.Status.APPROVAL
    assert reverse("diagnostics:approvals") not in client.get(reverse("diagnostics:home")).text


def test_the_approve_fix_permission_alone_opens_the_queue_but_not_the_history(
    client, django_user_model, employee, idle_machine, article
):
    approver = django_user_model.objects.create_user("approver", password="pw-approver-1")
    approver.user_permissions.add(Permission.objects.get(codename="approve_fix"))
    job = _waiting_fix(employee, idle_machine, article)
    client.force_login(approver)
    response = client.get(reverse("diagnostics:approvals"))
    assert response.status_code == 200
    assert f'id="approval-{job.pk}"' in response.text
    assert client.get(reverse("diagnostics:history")).status_code == 404


def test_an_employee_who_no_longer_owns_the_machine_cannot_act_on_their_old_job(
    employee, idle_machine, article
):
    job = _waiting_fix(employee, idle_machine, article)
    assert access.can_act_on_job(employee, job)
    idle_machine.owners.remove(employee)
    assert not access.can_act_on_job(employee, job)
    assert access.job_for(employee, job.pk) == job  # still theirs to read


def test_the_employee_follows_and_answers_what_the_helpdesk_started_from_their_job(
    client, employee, other_employee, helpdesk, idle_machine, article
):
    """The helpdesk's fix of an employee's diagnosis, and its roll back, run on the
    employee's PC: the employee sees them on their pages and in My jobs and may act on them
    as on their own (roll back, verify); nobody else does."""
    diagnosis = _waiting_fix(employee, idle_machine, article).parent
    fix = Job.objects.create(
        user=helpdesk, machine=idle_machine, article=article, parent=diagnosis,
        kind=Job.Kind.FIX, status=Job.Status.DONE, outcome=Job.Outcome.NOT_FIXED,
    )  # fmt: skip
    rollback = Job.objects.create(
        user=helpdesk, machine=idle_machine, article=article, parent=fix,
        kind=Job.Kind.ROLLBACK, status=Job.Status.QUEUED,
    )  # fmt: skip
    for job in (fix, rollback):
        assert access.job_for(employee, job.pk) == job
        assert access.can_act_on_job(employee, job)
        assert not access.can_act_on_job(other_employee, job)
    client.force_login(employee)
    mine = client.get(reverse("diagnostics:my-jobs"), HTTP_ACCEPT_LANGUAGE="en").text
    assert f"/jobs/{fix.pk}/" in mine and f"/jobs/{rollback.pk}/" in mine
    assert client.get(reverse("diagnostics:job-detail", args=[rollback.pk])).status_code == 200
    client.force_login(other_employee)
    assert client.get(reverse("diagnostics:job-detail", args=[fix.pk])).status_code == 404
    assert f"/jobs/{fix.pk}/" not in client.get(reverse("diagnostics:my-jobs")).text
    idle_machine.owners.remove(employee)  # handed the PC back: reads the past, acts no more
    assert access.job_for(employee, fix.pk) == fix
    assert not access.can_act_on_job(employee, fix)


def test_the_queue_shows_the_requester_why_instead_of_an_approve_button(
    client, helpdesk, colleague, idle_machine, article
):
    job = _waiting_fix(helpdesk, idle_machine, article)
    approve = 'name="decision" value="approve"'
    client.force_login(helpdesk)
    own = client.get(reverse("diagnostics:approvals"), HTTP_ACCEPT_LANGUAGE="en").text
    assert f'id="approval-{job.pk}"' in own
    assert approve not in own and SELF_APPROVAL in own
    assert 'value="decline"' in own  # withdrawing stays possible
    client.force_login(colleague)
    theirs = client.get(reverse("diagnostics:approvals"), HTTP_ACCEPT_LANGUAGE="en").text
    assert approve in theirs and SELF_APPROVAL not in theirs


def test_the_diagnose_command_refuses_a_user_who_may_not_act_on_the_machine(
    other_employee, idle_machine, article
):
    with pytest.raises(CommandError, match="other neither owns pc-idle nor is helpdesk"):
        call_command(
            "diagnose", "--machine", "pc-idle", "--article", article.slug, "--user", "other"
        )
    assert not Job.objects.exists()


def test_the_author_of_a_fixs_steps_cannot_approve_that_fix_for_anyone(
    helpdesk, colleague, idle_machine, article
):
    # A helpdesk member who also writes the KB: four eyes means the steps' author is not the
    # second pair (#16), however the job was requested.
    Fix.objects.create(
        article=article,
        key="reset-company-psk",
        title_ja="PSK",
        title_en="PSK",
        steps=[{"kind": "set_vpn_psk", "args": {"psk": {"secret": "company-l2tp-psk"}}}],
        needs_approval=True,
        steps_author=colleague,
    )
    job = _waiting_fix(helpdesk, idle_machine, article)
    with translation.override("en"):
        decision = access.may_approve(colleague, job)
        with pytest.raises(jobs.JobRefused, match="You wrote this fix's steps"):
            fixes.decide(job, colleague, approve=True)
    assert not decision
    job.refresh_from_db()
    assert job.status == Job.Status.APPROVAL
