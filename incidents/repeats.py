"""Exact repeats of firing alerts: counted with one statement instead of the general path's four.

Alertmanager re-sends every firing group each `repeat_interval`, and during a storm the same
alerts arrive many times a minute, so most notifications change nothing but each instance's
notification count and last-seen time. The general path (ingest.ingest_notification) locks the
group's incident, reads the instances, bumps them and updates the incident. When every alert of a
notification is a stored instance that is still firing, with the same annotations and link, this
lane does all of it in one statement that counts every instance or none (from the webhook,
incidents.lane's statement does it and stores the delivery): the conditions are checked in the
database, on the rows as they are when locked, so a concurrent resolution or edit sends
the notification down the general path instead. Nothing else changes for such a notification:
no timeline line, no counter, no re-collection, and the incident's `updated_at` stays (it marks
changes to the incident, which the list's poll watches).

Rows are locked in id order, as every other writer of these rows does through ingest, so two
deliveries of overlapping alerts wait for each other rather than deadlock.

Every notification of firing alerts is tried here first, whatever this process has seen: a
gunicorn worker cannot know which alerts another worker stored, and gating on its own memory
sent about half the repeats of `make bench` ingest (b) down the general path (505 req/s, against
866 with every one tried, at scale 0.5 on 2026-12-07). A notification with a new alert pays
one statement that finds nothing, on the unique index: (a) and (c) were unchanged. That
statement also says how many of the instances it found stored at all, and when none was, the
general path does not read them again (ingest_notification's `none_stored`).

PostgreSQL only (SQLite has neither jsonb_to_recordset nor row locks): elsewhere the general
path does it.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from . import bulk
from .alertmanager import AlertmanagerAlert
from .models import Alert

# incidents_alert is Alert's table (Meta has no db_table): its columns by their Django names.
# `wanted`: the incoming instances stored at all (any status, any incident); `counted`: the
# instances' incidents when every one of them matched, and empty otherwise. `incoming`'s columns
# from `alertname` on are what incidents.lane inserts of a new alert (NULL here); `ord` is the
# alert's place in the notification, which severity ties go by (ingest.severest).
#
# The plan is fixed by the query's shape, not left to statistics: during a storm the table
# grows faster than autovacuum analyzes it, and with no statistics PostgreSQL took the cluster's
# rows to be 0.5% of the table and joined every one of them to the incoming alerts (43 ms for
# 50 alerts over 3,456 rows, growing with the table). Each incoming alert is looked up on the
# unique index (the LATERAL … LIMIT 1 cannot be flattened into a join), the rows found are
# locked one by one in id order (the lock order every writer keeps), re-checked as locked, and
# updated by id: 1.7 ms for the same 50 (EXPLAIN ANALYZE, PostgreSQL 15). The update takes the
# ids as an array: `id IN (SELECT …)` let the planner, which guesses 100 rows for a function
# over a JSON document, hash-join a sequential scan of the table (2.6 ms for one alert over
# 3,306 rows, 0.5 ms by the primary key). One weakness is left: a generic plan (the statement is
# prepared) made while the table is small scans it for the UPDATE, until autovacuum analyzes the
# table or the connection is replaced (docs/performance.md: "Found and left").
FIND_STORED = """
WITH incoming AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(%(rows)s::jsonb)
        AS (fingerprint text, starts_at timestamptz, annotations jsonb, generator_url text,
            alertname text, summary text, payload jsonb, rank integer, severity text))
        WITH ORDINALITY AS i(fingerprint, starts_at, annotations, generator_url,
            alertname, summary, payload, rank, severity, ord)
), wanted AS (
    SELECT s.id, i.ord, i.annotations, i.generator_url FROM incoming i CROSS JOIN LATERAL (
        SELECT id FROM incidents_alert
        WHERE cluster_id = %(cluster)s AND fingerprint = i.fingerprint AND starts_at = i.starts_at
        LIMIT 1
    ) s
)"""

# `{also}`: a further condition on a stored row (incidents.lane's: in the group's incident).
_LOCK = """, matched AS (
    SELECT a.id FROM (SELECT * FROM wanted ORDER BY id) w CROSS JOIN LATERAL (
        SELECT id FROM incidents_alert
        WHERE id = w.id AND status = %(firing)s
          AND annotations = w.annotations AND generator_url = w.generator_url{also}
        FOR UPDATE
    ) a
)"""
# `{when}`: whether the rows matched are all that are to be counted.
_COUNT = """, counted AS (
    UPDATE incidents_alert SET notification_count = notification_count + 1, last_seen_at = %(now)s
    WHERE id = ANY (ARRAY(SELECT id FROM matched)) AND {when}
    RETURNING incident_id
)"""


def lock(also: str = "") -> str:
    """The statement's `matched`: the stored instances that are firing and unchanged, locked."""
    return _LOCK.format(also=also)


def count(when: str = "(SELECT count(*) FROM matched) = %(n)s") -> str:
    """The statement's `counted`: the matched instances counted when `when` holds (by default:
    every incoming alert matched, an exact repeat)."""
    return _COUNT.format(when=when)


# Constants joined, no input in the text (S608): the values are all parameters.
REPEAT_STATEMENT = FIND_STORED + lock() + count() + "SELECT incident_id FROM counted"  # noqa: S608


def candidates(incoming: list[AlertmanagerAlert]) -> bool:
    """Worth a try: PostgreSQL, and every alert firing (a resolution is never a mere repeat)."""
    if connection.vendor != "postgresql" or not incoming:
        return False
    return all(alert.status == Alert.Status.FIRING for alert in incoming)


def incoming_row(alert: AlertmanagerAlert) -> dict:
    """What the statement compares of an incoming alert, as a row of its `incoming` document."""
    return {
        "fingerprint": alert.fingerprint,
        "starts_at": alert.startsAt.isoformat(),
        "annotations": alert.annotations,
        "generator_url": alert.generatorURL,
    }


def count_params(
    cluster_id: int,
    incoming: list[AlertmanagerAlert],
    now: datetime,
    rows: list[dict] | None = None,
) -> dict:
    """The parameters of FIND_STORED, lock and count; `rows`: the `incoming` document when a
    caller needs more of each alert than incoming_row (incidents.lane)."""
    # One JSON document rather than four arrays: psycopg quotes a string in C, but escapes an
    # array's elements one by one in Python (1.8 ms of a 50-alert notification's 19 ms).
    return {
        "rows": bulk.json_text(rows if rows is not None else [incoming_row(a) for a in incoming]),
        "cluster": cluster_id,
        "firing": Alert.Status.FIRING.value,
        "now": now,
        "n": len(incoming),
    }


def count_exact_repeats(
    cluster_id: int, incoming: list[AlertmanagerAlert], now: datetime
) -> set[int] | None:
    """The incidents of `incoming` when all of it was exact repeats of firing instances, now
    counted; None (and nothing written) otherwise. Call inside the ingest's transaction."""
    if not candidates(incoming):
        return None
    with connection.cursor() as cursor:
        cursor.execute(REPEAT_STATEMENT, count_params(cluster_id, incoming, now))
        incident_ids = {row[0] for row in cursor.fetchall()}
    return incident_ids or None
