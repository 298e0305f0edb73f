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
