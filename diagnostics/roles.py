"""Roles as Django groups: employee (default), helpdesk, KB admin.

Superusers are not a group: they pass every permission check. Employees need no permission:
they reach only what they own, which the views check per object. What each permission lets
a user do is decided in ``access.py``; this module only says who holds which.
"""

from django.contrib.auth.models import Group, Permission

HELPDESK = "helpdesk"
KB_ADMIN = "kb_admin"
EMPLOYEE = "employee"

PERMISSIONS = {
    EMPLOYEE: [],
    # The helpdesk sees every job and machine, imports machines and tests their connection,
    # and approves fixes (never one it requested itself: access.may_approve).
    HELPDESK: [
        "view_job",
        "approve_fix",
        "view_stepresult",
        "view_auditentry",
        "view_machine",
        "add_machine",
        "change_machine",
        "view_credential",
        "view_article",
    ],
    KB_ADMIN: [
        f"{action}_{model}"
        for model in ("article", "signature", "check", "fix")
        for action in ("add", "change", "delete", "view")
    ],
}


def ensure_groups(group_model=Group, permission_model=Permission) -> dict[str, Group]:
    """Create or update the role groups with exactly their permissions.

    A data migration passes its historical models; everyone else the defaults.
    """
    groups = {}
    for name, codenames in PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        perms = permission_model.objects.filter(
            content_type__app_label="diagnostics", codename__in=codenames
        )
        group.permissions.set(perms)
        groups[name] = group
    return groups
