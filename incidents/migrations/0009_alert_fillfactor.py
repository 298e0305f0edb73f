"""Leave room in each page of incidents_alert (PostgreSQL) for the repeat notifications' UPDATEs.

Alertmanager re-sends every alert of a group on each notification, and each re-send updates the
alert's row (notification_count, last_seen_at). With full pages every such update is written to a
new page and into all six of the table's indexes; with free space on the page and no indexed
column changed, PostgreSQL makes it a heap-only (HOT) update instead. Rows written before this
migration keep their pages until the table is rewritten (VACUUM FULL or pg_repack).
"""

from django.db import migrations

FILLFACTOR = 70


def set_fillfactor(apps, schema_editor, value: int | None = FILLFACTOR) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("incidents", "Alert")._meta.db_table)
    if value is None:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    else:
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")


def reset_fillfactor(apps, schema_editor) -> None:
    set_fillfactor(apps, schema_editor, None)


class Migration(migrations.Migration):
    dependencies = [("incidents", "0008_slack")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
