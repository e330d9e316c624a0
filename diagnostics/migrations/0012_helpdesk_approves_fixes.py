"""Give the helpdesk group the new approve_fix permission (roles.py says who holds what)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from diagnostics.roles import ensure_groups


def update_groups(apps, schema_editor):
    # The permission is normally created after all migrations (post_migrate): create it now
    # so the group can hold it in this same run.
    app_config = apps.get_app_config("diagnostics")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    ensure_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("diagnostics", "0011_job_approve_fix_permission"),
    ]

    operations = [migrations.RunPython(update_groups, migrations.RunPython.noop)]
