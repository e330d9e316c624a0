"""Sign-in with the company's identity provider (OpenID Connect, mozilla-django-oidc).

The provider says who someone is and, in its group claim, which company groups they are in;
settings map company groups to Kaiketsu's roles (roles.py). Roles follow the provider at
every sign-in, so removing someone from the helpdesk group there removes the role here the
next time they sign in. Decisions (README, "Sign in with the company account"):
- someone in none of the mapped groups is refused, with a message: an identity provider
  also holds service accounts, contractors and leavers, none of whom should become an
  employee here by default;
- a sign-in never takes over a local account that has a password (the demo's accounts, a
  break-glass administrator): a name clash is refused, not merged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.utils.translation import gettext as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from diagnostics.roles import KB_ADMIN, ensure_groups

log = logging.getLogger(__name__)


def company_groups(claims: dict[str, Any]) -> set[str]:
    """The groups the provider's claim lists (a list, or one name as a string)."""
    value = claims.get(settings.KAIKETSU_OIDC_GROUPS_CLAIM) or []
    return {value} if isinstance(value, str) else {str(g) for g in value}


def roles_for(claims: dict[str, Any]) -> set[str]:
    """Kaiketsu roles whose mapped company groups the claims contain."""
    groups = company_groups(claims)
    return {role for role, mapped in settings.KAIKETSU_OIDC_ROLE_GROUPS.items() if groups & mapped}


def sync_roles(user: Any, roles: set[str]) -> None:
    """Give ``user`` exactly the role groups in ``roles``; KB admins reach the admin."""
    role_groups = ensure_groups()
    user.groups.remove(*(g for name, g in role_groups.items() if name not in roles))
    user.groups.add(*(role_groups[name] for name in roles))
    if user.is_staff != (KB_ADMIN in roles):
        user.is_staff = KB_ADMIN in roles
        user.save(update_fields=["is_staff"])


class CompanyBackend(OIDCAuthenticationBackend):
    """Users from the company's OpenID provider, their roles from its group claim."""

    def get_username(self, claims: dict[str, Any]) -> str:
        return str(claims.get(settings.KAIKETSU_OIDC_USERNAME_CLAIM) or claims.get("sub") or "")

    def filter_users_by_claims(self, claims: dict[str, Any]):
        return self.UserModel.objects.filter(username=self.get_username(claims))

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        username = self.get_username(claims)
        if not roles_for(claims):
            log.warning("SSO sign-in of %r refused: in no mapped group", username)
            messages.error(
                self.request,
                _(
                    "Your company account is in none of the groups that may use Kaiketsu. "
                    "Ask the helpdesk to add you."
                ),
            )
            return False
        local = self.filter_users_by_claims(claims).first()
        if local is not None and local.has_usable_password():
            log.warning("SSO sign-in of %r refused: a local account has that name", username)
            messages.error(
                self.request,
                _(
                    "A local account already uses the name %(name)s, so the company sign-in "
                    "cannot use it. Ask the helpdesk."
                )
                % {"name": username},
            )
            return False
        return bool(username)

    def create_user(self, claims: dict[str, Any]):
        user = self.UserModel.objects.create_user(
            self.get_username(claims), email=claims.get("email", "")
        )  # no password: this account signs in through the provider only
        sync_roles(user, roles_for(claims))
        return user

    def update_user(self, user: Any, claims: dict[str, Any]):
        sync_roles(user, roles_for(claims))
        return user
