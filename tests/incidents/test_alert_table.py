"""The alerts table keeps room in its pages for repeat notifications' updates (migration 0009)."""

from __future__ import annotations

import pytest
from django.db import connection

from incidents.models import Alert


@pytest.mark.django_db
def test_the_alerts_table_leaves_room_for_heap_only_updates_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage parameter; SQLite has none")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [Alert._meta.db_table])
        (options,) = cursor.fetchone()
    assert "fillfactor=70" in (options or [])


@pytest.mark.django_db
def test_stored_webhook_bodies_are_compressed_with_lz4_where_postgresql_has_it(integration_token):
    if connection.vendor != "postgresql":
        pytest.skip("column compression is PostgreSQL's; SQLite has none")
    from incidents.models import WebhookDelivery

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY (enumvals) FROM pg_settings"
            " WHERE name = 'default_toast_compression'"
        )
        (available,) = cursor.fetchone()
        cursor.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = 'body'",
            [WebhookDelivery._meta.db_table],
        )
        (method,) = cursor.fetchone()
    assert method == ("l" if available else "")

    # A body large enough to be compressed is stored compressed and read back whole.
    body = b'{"alerts": [' + b",".join(b'{"labels": {"n": "%d"}}' % i for i in range(2000)) + b"]}"
    integration, _token = integration_token("lz4")
    delivery = WebhookDelivery.objects.create(integration=integration, body=body)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(body), pg_column_size(body) FROM "
            f"{WebhookDelivery._meta.db_table} WHERE id = %s",
            [delivery.pk],
        )
        stored_with, stored_size = cursor.fetchone()
    assert stored_with == ("lz4" if available else "pglz")
    assert stored_size < len(body) // 4
    assert bytes(WebhookDelivery.objects.get(pk=delivery.pk).body) == body
