"""Create the role groups (employee, helpdesk, kb_admin) with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from diagnostics.roles import ensure_groups


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations (post_migrate); a fresh
    # database has none yet, so create them now for the apps whose models we grant.
    for label in ("auth", "contenttypes", "diagnostics"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("diagnostics", "0003_history_indexes"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
