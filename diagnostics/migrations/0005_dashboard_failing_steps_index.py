"""A partial index for the dashboard's "most failing checks", PostgreSQL only.

Only failing results with a check are indexed, with the columns the query reads, so the
30-day window is an index-only scan instead of a pass over every step result.
"""

from django.db import migrations

INDEX = (
    "CREATE INDEX IF NOT EXISTS stepresult_failing_checks ON diagnostics_stepresult "
    "(created_at, kb_check_id, verdict) "
    "WHERE verdict IN ('fail', 'error') AND kb_check_id IS NOT NULL"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INDEX)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS stepresult_failing_checks")


class Migration(migrations.Migration):
    dependencies = [("diagnostics", "0004_roles")]

    operations = [migrations.RunPython(create, drop)]
