"""Compress stored webhook bodies with lz4 rather than pglz (PostgreSQL built with lz4).

Every body over about 2 kB is compressed as it is stored, inside the webhook's statement. For a
notification of 50 alerts (24 kB), perf put pglz at about 5% of the PostgreSQL backend's CPU for
the whole webhook (`make bench` ingest (c), in-process). Inserting 3,000 such bodies took
pglz 210-260 µs each and lz4 19-22 µs, for the same size (1,155 against 1,166 bytes), on a
2-core AMD EPYC VM with PostgreSQL 15. Reading a body back (reprocess_deliveries, the admin) is
faster too. Bodies stored before keep their compression; on a server built without lz4 the
column keeps pglz (the migration does nothing there).
"""

from django.db import migrations


def _lz4_available(cursor) -> bool:
    cursor.execute(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    row = cursor.fetchone()
    return bool(row and row[0])


def set_compression(apps, schema_editor, method: str = "lz4") -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if method == "lz4" and not _lz4_available(cursor):
            return
    table = schema_editor.quote_name(apps.get_model("incidents", "WebhookDelivery")._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN body SET COMPRESSION {method}")


def reset_compression(apps, schema_editor) -> None:
    set_compression(apps, schema_editor, "default")


class Migration(migrations.Migration):
    dependencies = [("incidents", "0011_group_hash_first")]

    operations = [migrations.RunPython(set_compression, reset_compression)]
