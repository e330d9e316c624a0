"""Roles as Django groups: employee (default), helpdesk, KB admin."""

from django.contrib.auth.models import Group, Permission

HELPDESK = "helpdesk"
KB_ADMIN = "kb_admin"
EMPLOYEE = "employee"

_PERMS = {
    EMPLOYEE: [],
    HELPDESK: ["view_job", "view_stepresult", "view_machine", "view_article"],
    KB_ADMIN: [
        f"{action}_{model}"
        for model in ("article", "signature", "check", "fix")
        for action in ("add", "change", "delete", "view")
    ],
}


def ensure_groups() -> dict[str, Group]:
    groups = {}
    for name, codenames in _PERMS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label="diagnostics", codename__in=codenames
        )
        group.permissions.set(perms)
        groups[name] = group
    return groups
