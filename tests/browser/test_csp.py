"""Every main page, for each role, loads in Chromium under the Content-Security-Policy with no
violation and no console error (issue #16, finding 6): htmx, the charts and the admin
included."""

import pytest

from diagnostics import handovers, jobs
from diagnostics.models import Job, Scan
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every violation the page reports, kept on the window (set before any script of the page).
LISTEN = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ""}`);
});
"""


@pytest.fixture
def world(employee, helpdesk, kb_admin, idle_machine, seed_article):
    """A running job (its page follows the stream), a finished one (the dashboard's charts
    have data) handed over to the helpdesk, and a scan: what the pages below show."""
    done = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    jobs.finish(done, Job.Status.DONE, Job.Outcome.PROBLEMS)
    running = jobs.create_job(user=employee, machine=idle_machine, article=seed_article)
    scan = Scan.objects.create(
        article=seed_article, created_by=helpdesk, selection="all", machine_ids=[idle_machine.pk]
    )
    case = handovers.hand_over_job(employee, done, "still broken", "http://testserver")
    return {"done": done, "running": running, "scan": scan, "case": case}


def _pages_for(role: str, world: dict) -> list[str]:
    running, done = world["running"].pk, world["done"].pk
    employee_pages = [
        "/",
        "/?q=エラー+789&go=1",
        f"/articles/{world['running'].article.slug}/",
        f"/jobs/{running}/",
        f"/jobs/{done}/",
        "/mine/",
        f"/handovers/{world['case'].pk}/",
    ]
    return {
        "employee": employee_pages,
        "helpdesk": [
            "/helpdesk/jobs/",
            f"/helpdesk/jobs/{done}/",
            "/approvals/",
            "/helpdesk/handovers/",
            f"/helpdesk/handovers/{world['case'].pk}/",
            "/console/unmatched/",
            "/console/",
            "/console/machines/",
            "/console/machines/import/",
            "/console/scans/",
            f"/console/scans/{world['scan'].pk}/",
        ],
        "kbadmin": [
            "/admin/",
            "/admin/diagnostics/article/",
            f"/admin/diagnostics/article/{world['running'].article.pk}/change/",
            "/admin/diagnostics/article/try/",
        ],
    }[role]


PASSWORDS = {"employee": "pw-employee-1", "helpdesk": "pw-helpdesk-1", "kbadmin": "pw-kbadmin-1"}


@pytest.mark.parametrize("role", ["employee", "helpdesk", "kbadmin"])
def test_every_main_page_of_a_role_passes_the_content_security_policy(
    browser, web_server, world, role
):
    context = browser.new_context(locale="ja-JP")
    context.add_init_script(LISTEN)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(web_server + "/login/")
        assert "script-src 'self'" in response.headers.get("content-security-policy", "")
        log_in(page, web_server, role, PASSWORDS[role])
        for path in _pages_for(role, world):
            response = page.goto(web_server + path)
            assert response.status == 200, path
            policy = response.headers.get("content-security-policy", "")
            assert "default-src 'self'" in policy, path
            page.wait_for_load_state("load")
            page.wait_for_timeout(300)  # htmx has processed the page, SSE has connected
            violations = page.evaluate("window.__violations")
            assert violations == [], f"{path}: {violations}"
            assert errors == [], f"{path}: {errors}"
    finally:
        context.close()
