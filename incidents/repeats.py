"""Exact repeats of firing alerts: counted with one statement instead of the general path's four.

Alertmanager re-sends every firing group each `repeat_interval`, and during a storm the same
alerts arrive many times a minute, so most notifications change nothing but each instance's
notification count and last-seen time. The general path (ingest.ingest_notification) locks the
group's incident, reads the instances, bumps them and updates the incident. When every alert of a
notification is a stored instance that is still firing, with the same annotations and link, this
lane does all of it in one UPDATE that counts every instance or none: the conditions are checked
in the database, on the rows as they are when locked, so a concurrent resolution or edit sends
the notification down the general path instead. Nothing else changes for such a notification:
no timeline line, no counter, no re-collection, and the incident's `updated_at` stays (it marks
changes to the incident, which the list's poll watches).

Rows are locked in id order, as every other writer of these rows does through ingest, so two
deliveries of overlapping alerts wait for each other rather than deadlock.

PostgreSQL only (SQLite has neither arrays nor row locks): elsewhere the general path does it.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection

from .alertmanager import AlertmanagerAlert
from .models import Alert

# Instances this process has ingested, by (cluster, fingerprint, startsAt): a notification is
# tried here only when all of its alerts are among them, so a notification of new alerts costs
# no failed attempt. A stale entry costs one statement that matches nothing; the set is cleared
# when full, which only sends repeats down the general path until they are seen again.
_SEEN: dict[tuple[int, tuple[str, datetime]], None] = {}
_SEEN_MAX = 50_000


def remember(cluster_id: int, alerts: list[AlertmanagerAlert]) -> None:
    """Note instances just ingested, so their next repeats take this lane."""
    if connection.vendor != "postgresql":
        return
    if len(_SEEN) + len(alerts) > _SEEN_MAX:
        _SEEN.clear()
    for alert in alerts:
        if alert.status == Alert.Status.FIRING:
            _SEEN[(cluster_id, alert.key)] = None


def forget_all() -> None:
    """For tests: start from an empty set."""
    _SEEN.clear()


# incidents_alert is Alert's table (Meta has no db_table): its columns by their Django names.
REPEAT_STATEMENT = """
WITH incoming AS (
    SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::jsonb[], %s::text[])
        AS i(fingerprint, starts_at, annotations, generator_url)
), matched AS (
    SELECT a.id FROM incidents_alert a
    JOIN incoming i ON a.fingerprint = i.fingerprint AND a.starts_at = i.starts_at
    WHERE a.cluster_id = %s AND a.status = %s
      AND a.annotations = i.annotations AND a.generator_url = i.generator_url
    ORDER BY a.id
    FOR UPDATE OF a
)
UPDATE incidents_alert SET notification_count = notification_count + 1, last_seen_at = %s
WHERE id IN (SELECT id FROM matched) AND (SELECT count(*) FROM matched) = %s
RETURNING incident_id
"""


def count_exact_repeats(
    cluster_id: int, incoming: list[AlertmanagerAlert], now: datetime
) -> set[int] | None:
    """The incidents of `incoming` when all of it was exact repeats of firing instances, now
    counted; None (and nothing written) otherwise. Call inside the ingest's transaction."""
    if connection.vendor != "postgresql" or not incoming:
        return None
    if any(alert.status != Alert.Status.FIRING for alert in incoming):
        return None
    if any((cluster_id, a.key) not in _SEEN for a in incoming):
        return None
    params = [
        [a.fingerprint for a in incoming],
        [a.startsAt for a in incoming],
        [json.dumps(a.annotations) for a in incoming],
        [a.generatorURL for a in incoming],
        cluster_id,
        Alert.Status.FIRING.value,
        now,
        len(incoming),
    ]
    with connection.cursor() as cursor:
        cursor.execute(REPEAT_STATEMENT, params)
        incident_ids = {row[0] for row in cursor.fetchall()}
    return incident_ids or None
