"""The webhook's one-statement lane, for the notifications a busy Alertmanager sends most.

1. Exact repeats of firing instances (its repeat_interval, a storm's tail): counted as
   incidents.repeats describes.
2. New firing instances of a group whose incident is open, alone (a group's alerts trickling
   in) or with the group's stored ones (Alertmanager sends all of a group's firing alerts each
   time, so a growing group's every notification is of this kind): the incident locked, the
   stored instances counted, the new ones and their timeline lines inserted, the incident's
   counters, severity and collection request updated.

Either way the same statement stores the delivery, processed, so in autocommit the whole
webhook is one round trip and one commit. Anything else (a resolution, changed annotations, a
stored instance in another incident, a group with no open incident, a race with a concurrent
delivery) writes nothing here and goes down the general path (ingest.ingest_notification), which
does the same things with the ORM in seven round trips or more: the lane's statement, BEGIN,
the delivery, the group's incident, the stored instances, their count, the alerts and their
lines, the incident, COMMIT. On `make bench` ingest (a), a new alert in a group's open incident,
that was 1.8 ms of Python and 0.8 ms of PostgreSQL's CPU per webhook in-process;
docs/performance.md has what the lane makes of it.

What the statement writes is what the general path writes: the values come from the same
functions (ingest.alert_event, ingest.alertname, ingest.severest), and tests compare both
paths' rows column by column. The conditions are checked in the database on the rows as locked:
the group's incident must still be open when its lock is granted, and every stored instance
firing, unchanged and in it; an instance a concurrent delivery stores meanwhile makes the insert
fail on the unique index, the statement rolls back whole, and the general path takes the
delivery.

PostgreSQL only, as incidents.repeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.db import connection
from django.utils import timezone

from . import repeats
from .alertmanager import AlertmanagerAlert, AlertmanagerNotification
from .ingest import ACTOR, IngestResult, alert_event, alertname, dedupe, severest
from .models import Incident, TimelineEvent, WebhookDelivery, group_hash

logger = logging.getLogger(__name__)

# `grp` is the group's open incident, locked, and only looked for when an instance is new (a
# join, or a growing group's notification: its stored instances and new ones). Then it is locked
# before any stored alert, the order the general path keeps: `matched` reads it to check each
# stored row's incident, and a row is locked only after its conditions held. For an exact repeat
# it is never looked for, and the incident is neither locked nor touched (its `updated_at` marks
# changes the list polls for). `settled`: the incident, when every stored instance matched,
# firing and unchanged in it; only then are the new ones (`fresh`) inserted and the repeats
# counted, so the statement writes all of the notification or nothing (`verdict`).
# The incident's collection state is read under that lock, as ingest._roll_up reads it; the UPDATE
# sees the same row (the lock is held), so its counters add to the latest values. `tally`: the
# new alerts' number and highest severity, the first one with it, as ingest.severest picks it.
# The status is in the text, as in ingest._GROUP_INCIDENT, for the partial unique index.
# `publish`: collectors.tasks.debounced_request's answer, in SQL: a request was noted (the first
# round has started and no later request is pending) and no round is running.
_GROUP = f""", fresh AS (
    SELECT * FROM incoming WHERE ord <> ALL (ARRAY(SELECT ord FROM wanted))
), grp AS (
    SELECT id, collection_requested_at, collection_started_at, collection_finished_at
    FROM incidents_incident
    WHERE cluster_id = %(cluster)s AND group_hash = %(group_hash)s
        AND NOT (status = '{Incident.Status.RESOLVED.value}') AND EXISTS (SELECT FROM fresh)
    FOR UPDATE
)"""  # noqa: S608 (a constant of the model in the text; the values are all parameters)
_IN_GROUP = repeats.lock(also=" AND incident_id = coalesce((SELECT id FROM grp), incident_id)")
# `whole`: every stored instance matched. The repeats are counted when some are stored, all
# matched, and either none is new or the group's incident is there for the new ones; the new ones
# are inserted when the incident is there and all stored ones matched. `counted` does not run
# for a join (none stored): a generic plan made while the alerts table was small would scan the
# table for the empty update (docs/performance.md, "Found and left"; test_lane_joins' plan test).
# The plan is kept, but every run starts each of its nodes anew, so each one costs every
# webhook: these tests are EXISTS and arrays rather than counts (an aggregate each). Paired runs
# on one connection (2026-12-07): this statement takes 0.15-0.17 ms more than the join-only one
# did for a new alert or an exact repeat (1.02-1.11 against 0.87-0.94 ms); with counts, 0.23 ms.
_VERDICT = """, verdict AS (
    SELECT NOT EXISTS (SELECT FROM wanted WHERE id <> ALL (ARRAY(SELECT id FROM matched))) AS whole
)"""
_COUNT = repeats.count(
    when="EXISTS (SELECT FROM matched) AND (SELECT whole FROM verdict)"
    " AND (NOT EXISTS (SELECT FROM fresh) OR EXISTS (SELECT FROM grp))"
)
_JOIN_AND_STORE = """, settled AS (
    SELECT * FROM grp WHERE (SELECT whole FROM verdict)
), tally AS (
    SELECT count(*) AS n, max(rank) AS rank,
        (array_agg(severity ORDER BY rank DESC, ord))[1] AS severity
    FROM fresh
), asked AS (
    SELECT id,
        collection_started_at IS NOT NULL
            AND NOT coalesce(collection_requested_at > collection_started_at, false) AS requests,
        coalesce(collection_finished_at >= collection_started_at, false) AS idle
    FROM settled
), added AS (
    INSERT INTO incidents_alert (cluster_id, incident_id, fingerprint, starts_at, ends_at, status,
        alertname, labels, annotations, generator_url, group_hash, first_seen_at, last_seen_at,
        notification_count)
    SELECT %(cluster)s, settled.id, i.fingerprint, i.starts_at, NULL, %(firing)s, i.alertname,
        i.payload -> 'labels', i.annotations, i.generator_url, %(group_hash)s, %(now)s, %(now)s, 1
    FROM settled CROSS JOIN fresh i
), lines AS (
    INSERT INTO incidents_timelineevent (incident_id, at, kind, actor, summary, payload)
    SELECT settled.id, i.starts_at, %(kind)s, %(actor)s, i.summary, i.payload
    FROM settled CROSS JOIN fresh i
), joined AS (
    UPDATE incidents_incident AS incident SET
        alert_count = incident.alert_count + tally.n,
        firing_count = incident.firing_count + tally.n,
        updated_at = %(now)s,
        severity = CASE WHEN tally.rank > incident.severity_rank
            THEN tally.severity ELSE incident.severity END,
        severity_rank = greatest(incident.severity_rank, tally.rank),
        collection_requested_at = CASE WHEN asked.requests
            THEN %(now)s ELSE incident.collection_requested_at END
    FROM asked, tally WHERE incident.id = asked.id
    RETURNING incident.id, asked.requests AND asked.idle AS publish
), delivery AS (
    INSERT INTO incidents_webhookdelivery (integration_id, received_at, body, content_type,
        remote_addr, status, error, attempts, processed_at, alert_count)
    SELECT %(integration)s::bigint, %(now)s::timestamptz, %(body)s::bytea, %(content_type)s::text,
        %(remote_addr)s::inet, %(processed)s::text, '', 1, %(now)s::timestamptz,
        %(alert_count)s::integer
    WHERE EXISTS (SELECT FROM counted) OR EXISTS (SELECT FROM joined)
    RETURNING id
)
SELECT (SELECT id FROM delivery), ARRAY(SELECT incident_id FROM counted),
    cardinality(ARRAY(SELECT id FROM wanted)), (SELECT id FROM joined),
    (SELECT publish FROM joined)
"""  # noqa: S608 (constants only; the values are all parameters)
# On one line: psycopg caches a statement's conversion from %(name)s placeholders only up to
# 4,096 bytes (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH), and with its indentation this one
# is 4,300, so every webhook split it again with a regular expression. No literal in it holds
# two spaces or a line break, and it has no `--` comment for a join to swallow.
STATEMENT = " ".join(
    (repeats.FIND_STORED + _GROUP + _IN_GROUP + _VERDICT + _COUNT + _JOIN_AND_STORE).split()
)
# (Casts in `delivery`: INSERT … SELECT takes untyped parameters as text, which PostgreSQL does
# not assign to inet.)


class Lane(NamedTuple):
    """What the webhook's statement did.

    `delivery_id`: set when it took the whole notification; then `counted` holds the incidents
    of the stored instances it counted (all of them, for an exact repeat), and `joined` the open
    incident the new ones joined, if any were new; `publish` says whether a debounced collection
    round is due. `known`: how many of the incoming instances were stored at all (any status)
    when it looked, so the general path knows when none was.
    """

    delivery_id: int | None
    counted: set[int]
    known: int
    joined: int | None = None
    publish: bool = False


def _new_alert_rows(incoming: list[AlertmanagerAlert], now: datetime) -> list[dict]:
    """The `incoming` document with what a new alert and its timeline line are stored with, and
    its severity, made by the functions the general path stores them with. The statement learns
    which alerts are new, so every one carries it."""
    rows = []
    for alert in incoming:
        event = alert_event(0, alert, TimelineEvent.Kind.ALERT_FIRING, now, ends_at=None)
        rank, severity = severest([alert])
        rows.append(
            {
                **repeats.incoming_row(alert),
                "alertname": alertname(alert),
                "summary": event["summary"],
                "payload": event["payload"],  # with the labels, which the alert's row takes
                "rank": rank,
                "severity": severity,
            }
        )
    return rows


def run(
    delivery: dict,
    alert_count: int,
    group_key: str,
    incoming: list[AlertmanagerAlert],
    now: datetime,
) -> Lane | None:
    """Run the lane's statement for a notification's `incoming` instances (deduplicated); None
    when it was not worth trying (not PostgreSQL, or not all firing) or its document could not
    be built. Call in autocommit: the statement is the transaction.

    `delivery`: the WebhookDelivery fields the hook stores (integration, body, content_type,
    remote_addr); `alert_count`: the notification's alerts, as the general path records it.
    """
    if not repeats.candidates(incoming):
        return None
    integration = delivery["integration"]
    try:
        rows = _new_alert_rows(incoming, now)
        document = repeats.count_params(integration.cluster_id, incoming, now, rows)
    except Exception:
        # Nothing is written yet: the general path takes the notification, and should it fail
        # the same way, the hook keeps the body for reprocess_deliveries instead of losing it.
        logger.exception("the lane could not build its document; the general path takes it")
        return None
    params = document | {
        "group_hash": group_hash(group_key),
        "kind": TimelineEvent.Kind.ALERT_FIRING.value,
        "actor": ACTOR,
        "integration": integration.pk,
        "body": delivery["body"],
        "content_type": delivery["content_type"],
        "remote_addr": delivery["remote_addr"],
        "processed": WebhookDelivery.Status.PROCESSED.value,
        "alert_count": alert_count,
    }
    with connection.cursor() as cursor:
        cursor.execute(STATEMENT, params)
        delivery_id, counted, known, joined, publish = cursor.fetchone()
    if delivery_id is None:
        return Lane(None, set(), known)
    return Lane(delivery_id, set(counted), known, joined, bool(publish))


@dataclass(frozen=True)
class Tried:
    """What the lane did with a notification: `stored` (delivery id, result) when it took all of
    it; otherwise `none_stored` says whether it found not one of the instances stored, which
    spares the general path its read of them."""

    stored: tuple[int, IngestResult] | None = None
    none_stored: bool = False


def store(delivery: dict, notification: AlertmanagerNotification) -> Tried:
    """The webhook's way in, in autocommit: the lane's statement, and for a joined incident the
    debounced collection round it asks for. Writes nothing when the lane does not apply.

    `delivery`: the WebhookDelivery fields the hook stores (integration, body, ...).
    """
    incoming = dedupe(notification.alerts)
    lane = run(delivery, len(notification.alerts), notification.groupKey, incoming, timezone.now())
    if lane is None:
        return Tried()
    if lane.delivery_id is None:
        return Tried(none_stored=lane.known == 0)
    result = IngestResult(incident_ids=set(lane.counted), alerts_updated=lane.known)
    if lane.joined is not None:
        if lane.publish:
            from collectors.tasks import publish_debounced_round  # collectors import incidents

            publish_debounced_round(lane.joined)
        result.incident_ids.add(lane.joined)
        result.joined.append(lane.joined)
        result.alerts_created = len(incoming) - lane.known
    return Tried(stored=(lane.delivery_id, result))
