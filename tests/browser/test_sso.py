"""Sign in with the company account (issue #16): a real OpenID provider (the certified npm
`oidc-provider`, tests/oidc/provider.js run by node), the portal under uvicorn configured
for it, and Chromium clicking through both."""

import json
import shutil

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from diagnostics.roles import EMPLOYEE, HELPDESK
from scripts import services
from scripts.services import Service
from tests.conftest import ROOT, _child_env, child_database_url

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROVIDER_DIR = ROOT / "tests" / "oidc"
CLIENT = {"client_id": "kaiketsu-test", "client_secret": "test-only-client-secret-1"}
ACCOUNTS = {
    "hana": {"password": "pw-hana-1", "claims": {"preferred_username": "hana",
             "email": "hana@example.com", "groups": ["All-Staff", "VPN-Helpdesk"]}},
    "guest": {"password": "pw-guest-1", "claims": {"preferred_username": "guest",
              "email": "guest@example.com", "groups": ["Visitors"]}},
    "employee": {"password": "pw-sso-employee-1", "claims": {"preferred_username": "employee",
                 "groups": ["All-Staff"]}},
}  # fmt: skip


@pytest.fixture(scope="module")
def sso_portal(django_db_setup, django_db_blocker, tmp_path_factory):
    """The OpenID provider and a portal configured for it: the portal's base URL."""
    if shutil.which("node") is None or not (PROVIDER_DIR / "node_modules").is_dir():
        pytest.fail("the SSO tests need node and `npm ci` in tests/oidc (scripts/test.py runs it)")
    directory = tmp_path_factory.mktemp("sso")
    web_port, provider_port = services.free_port(), services.free_port()
    portal = f"http://127.0.0.1:{web_port}"
    config = directory / "provider.json"
    config.write_text(
        json.dumps(
            {
                "port": provider_port,
                "client": {**CLIENT, "redirect_uri": f"{portal}/oidc/callback/"},
                "accounts": ACCOUNTS,
            }
        )
    )
    provider = Service(
        "oidc", ["node", "provider.js", str(config)], cwd=PROVIDER_DIR,
        log_path=directory / "provider.log",
    ).start()  # fmt: skip
    if not provider.wait_for_line('"issuer"', timeout=30):
        provider.stop()
        pytest.fail("the OpenID provider did not start:\n" + "\n".join(provider.tail()))
    issuer = f"http://127.0.0.1:{provider_port}"
    env = _child_env(
        DATABASE_URL=child_database_url(),
        OIDC_RP_CLIENT_ID=CLIENT["client_id"],
        OIDC_RP_CLIENT_SECRET=CLIENT["client_secret"],
        OIDC_OP_AUTHORIZATION_ENDPOINT=f"{issuer}/auth",
        OIDC_OP_TOKEN_ENDPOINT=f"{issuer}/token",
        OIDC_OP_USER_ENDPOINT=f"{issuer}/me",
        OIDC_OP_JWKS_ENDPOINT=f"{issuer}/jwks",
        KAIKETSU_OIDC_EMPLOYEE_GROUPS="All-Staff",
        KAIKETSU_OIDC_HELPDESK_GROUPS="VPN-Helpdesk",
        KAIKETSU_OIDC_KB_ADMIN_GROUPS="KB-Editors",
    )
    web, url = services.start_web(
        env, port=web_port, log_path=directory / "web.log", access_log=False, timeout=30
    )
    yield url
    web.stop()
    provider.stop()


def _sign_in_at_the_provider(page, portal: str, login: str, password: str) -> None:
    page.goto(portal + "/login/")
    page.get_by_role("link", name="会社のアカウントでサインイン").click()
    page.fill("input[name=username]", login)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_a_helpdesk_member_signs_in_with_the_company_account_and_lands_as_helpdesk(
    page, sso_portal
):
    _sign_in_at_the_provider(page, sso_portal, "hana", "pw-hana-1")
    page.wait_for_url(sso_portal + "/")
    expect(page.locator("header .who")).to_have_text("hana")
    expect(page.get_by_role("link", name="ジョブ履歴")).to_be_visible()  # a helpdesk page

    hana = get_user_model().objects.get(username="hana")
    assert set(hana.groups.values_list("name", flat=True)) == {EMPLOYEE, HELPDESK}
    assert not hana.has_usable_password()  # signs in through the provider only
    assert hana.email == "hana@example.com"


def test_someone_in_no_mapped_group_is_refused_with_a_message(page, sso_portal):
    _sign_in_at_the_provider(page, sso_portal, "guest", "pw-guest-1")
    page.wait_for_url(sso_portal + "/login/")
    expect(page.locator(".flash.error")).to_contain_text("どのグループにも属していません")
    assert not get_user_model().objects.filter(username="guest").exists()


def test_the_company_sign_in_never_takes_over_a_local_account_of_the_same_name(
    page, sso_portal, employee
):
    _sign_in_at_the_provider(page, sso_portal, "employee", "pw-sso-employee-1")
    page.wait_for_url(sso_portal + "/login/")
    expect(page.locator(".flash.error")).to_contain_text("ローカルアカウント")
    employee.refresh_from_db()
    assert employee.has_usable_password()
    assert not employee.groups.exists()


def test_local_accounts_still_sign_in_beside_the_company_account(page, sso_portal, employee):
    page.goto(sso_portal + "/login/")
    page.fill("input[name=username]", "employee")
    page.fill("input[name=password]", "pw-employee-1")
    page.click("main button[type=submit]")
    page.wait_for_url(sso_portal + "/")
    expect(page.locator("header .who")).to_have_text("employee")
