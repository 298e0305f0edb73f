"""Alertmanager notifications become alerts and incidents.

One notification is one transaction with a handful of queries whatever its size: existing
instances are read in one query (on the unique index), re-notified ones bumped by one UPDATE
(only resolutions and changed annotations are written besides), new ones bulk-inserted,
timeline events bulk-inserted, each incident touched by one UPDATE. Ingestion is idempotent per
alert instance `(fingerprint, startsAt)`, so Alertmanager's repeats, retries and reorderings
(resolved before firing) change nothing twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from vigil.celery import publish_on_commit

from . import bulk, repeats
from .alertmanager import (
    AlertmanagerAlert,
    AlertmanagerNotification,
    PayloadError,
    parse_notification,
)
from .models import (
    Alert,
    Cluster,
    Incident,
    TimelineEvent,
    WebhookDelivery,
    group_hash,
    severity_rank,
)
from .signals import announce_timeline_event

logger = logging.getLogger(__name__)
ACTOR = "alertmanager"
SERVICE_LABELS = ("service", "app_kubernetes_io_name", "app", "deployment", "statefulset", "job")
# TimelineEvent.summary's max_length: label values run to 64 KiB, and PostgreSQL refuses a longer
# value (the delivery would fail on every retry).
SUMMARY_LIMIT = 500


class Stored(NamedTuple):
    """What ingest needs of a stored instance (labels are the incoming ones: same fingerprint)."""

    pk: int
    incident_id: int
    status: str
    annotations: dict
    generator_url: str


@dataclass
class IngestResult:
    incident_ids: set[int] = field(default_factory=set)
    opened: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)  # open incidents that new alerts joined
    alerts_created: int = 0
    alerts_updated: int = 0


def process_delivery(delivery: WebhookDelivery, *, scrubbed: bool = False) -> IngestResult:
    """Ingest a stored delivery and record the outcome on it; the hook, sweep and replay all call this.

    A malformed body marks the delivery rejected and re-raises PayloadError. A database error
    propagates and leaves the delivery as it was, for the sweep to retry.
    """
    delivery.attempts += 1
    try:
        notification = parse_notification(bytes(delivery.body), scrubbed=scrubbed)
    except PayloadError as exc:
        _finish(delivery, WebhookDelivery.Status.REJECTED, error=str(exc))
        raise
    with transaction.atomic():
        result = ingest_notification(
            cluster=delivery.integration.cluster, notification=notification
        )
        delivery.alert_count = len(notification.alerts)
        _finish(delivery, WebhookDelivery.Status.PROCESSED, error="")
    return result


def _finish(delivery: WebhookDelivery, status: str, *, error: str) -> None:
    delivery.status = status
    delivery.error = error
    delivery.processed_at = timezone.now()
    delivery.save(update_fields=["status", "error", "processed_at", "attempts", "alert_count"])


def ingest_notification(
    *,
    cluster: Cluster,
    notification: AlertmanagerNotification,
    repeats_tried: bool = False,
    none_stored: bool = False,
) -> IngestResult:
    """Upsert the notification's alert instances into incidents; call inside a transaction.

    `repeats_tried`: the caller tried incidents.lane just now; the repeat lane is skipped.
    `none_stored`: that lane, a moment ago, found none of the instances stored, so they are not
    read again (one statement less for every notification of new alerts). One stored since, by
    a concurrent delivery, is caught by the unique index: the insert raises IntegrityError, the
    transaction rolls back, and the caller tries again without this.
    """
    now = timezone.now()
    result = IngestResult()
    incoming = dedupe(notification.alerts)
    if not incoming:
        return result
    # Most notifications in a storm, and every repeat_interval's, change nothing but counts.
    repeated = None if repeats_tried else repeats.count_exact_repeats(cluster.pk, incoming, now)
    if repeated is not None:
        result.incident_ids = repeated
        result.alerts_updated = len(incoming)
        return result
    # The group's open incident is locked before anything is read: deliveries of one group are
    # ingested one after the other, and the lookup below sees what the previous one stored.
    group_incident = _locked_group_incident(cluster.pk, group_hash(notification.groupKey))
    locked = {group_incident.pk: group_incident} if group_incident else {}
    added_firing: dict[int, int] = {}  # firing instances this delivery inserted, by incident
    existing = {} if none_stored else _existing_instances(cluster, incoming)
    new = [a for a in incoming if a.key not in existing]
    events: list[dict] = []  # the alerts' timeline lines, as bulk.insert_rows takes them
    announced: list[TimelineEvent] = []  # events a save would have announced (post_save)

    changed: set[int] = set()  # incidents whose stored alerts changed status here: recounted
    if existing:
        changed |= _update_existing(incoming, existing, now, events)
        result.alerts_updated = len(existing)
        result.incident_ids.update(row.incident_id for row in existing.values())

    bumps: dict[int, dict] = {}
    if new:
        if group_incident is not None:
            incident, how = group_incident, "joined"
        else:
            incident, how = _incident_for(cluster, notification, new, now, announced)
            if how in ("joined", "filed"):
                # Another incident than the group's, found after the lookup: a concurrent
                # delivery may have stored some of these while we waited for its lock.
                stored = _existing_instances(cluster, new)
                new = [a for a in new if a.key not in stored]
                if stored:
                    # What that delivery stored, this one updates as any repeat: its
                    # resolutions (a resolution racing the first firing) and its count.
                    changed |= _update_existing(incoming, stored, now, events)
                    result.alerts_updated += len(stored)
                    result.incident_ids.update(row.incident_id for row in stored.values())
            if how != "filed":  # every other way ends holding the incident's row lock
                locked[incident.pk] = incident
        if how in ("opened", "reopened"):
            result.opened.append(incident.pk)
        elif new and incident.status != Incident.Status.RESOLVED:
            result.joined.append(incident.pk)
        if new:
            bumps[incident.pk] = _create_instances(
                cluster, incident, notification, new, now, events
            )
            result.alerts_created = len(new)
            added_firing[incident.pk] = sum(a.status == "firing" for a in new)
        result.incident_ids.add(incident.pk)

    # The opening line is announced, which needs its id; the alerts' lines are not.
    TimelineEvent.objects.bulk_create(announced)
    for event in announced:  # bulk_create sends no post_save: announce as a save would
        announce_timeline_event(TimelineEvent, event, created=True)
    bulk.insert_rows(TimelineEvent, events)
    recollect = _roll_up(
        result.incident_ids,
        bumps,
        now,
        joined=set(result.joined),
        locked=locked,
        changed=changed,
        added_firing=added_firing,
    )
    for incident_id in result.opened:
        publish_on_commit(_collect_evidence_task(), incident_id)
    for incident_id in recollect:
        _publish_debounced_round(incident_id)
    return result


# The group's open incident, locked, with the columns ingest reads of it. At most one row, by the
# partial unique index one_open_incident_per_group, so no ORDER BY. Raw SQL: the ORM compiled
# this lookup again on every webhook and loaded every column (2.3 ms against 0.7 in-process on
# PostgreSQL; a quarter of a new alert's Python time under py-spy --gil). Incident.objects.raw
# still converts the values for the database (SQLite's datetimes) and defers the other columns.
# The status is written into the text, not sent: a prepared statement's generic plan can only
# use the partial index when its condition is the index's own (with a parameter, PostgreSQL
# scanned every incident of the cluster: ingest prepares this statement, vigil/settings.py).
_GROUP_INCIDENT = f"""
SELECT id, status, severity_rank, firing_count, collection_requested_at, collection_started_at,
    collection_finished_at
FROM incidents_incident
WHERE cluster_id = %s AND group_hash = %s AND NOT (status = '{Incident.Status.RESOLVED.value}')
"""  # noqa: S608 (a constant of the model; the values are all parameters)


def _locked_group_incident(cluster_id: int, key_hash: str) -> Incident | None:
    """The open incident of the group (locked where the database locks rows), or None."""
    sql = _GROUP_INCIDENT + ("FOR UPDATE" if connection.features.has_select_for_update else "")
    rows = Incident.objects.raw(sql, [cluster_id, key_hash])
    return next(iter(rows), None)


def dedupe(alerts: list[AlertmanagerAlert]) -> list[AlertmanagerAlert]:
    """The last occurrence of an instance within one notification wins."""
    return list({a.key: a for a in alerts}.values())


def _existing_instances(cluster: Cluster, incoming: list[AlertmanagerAlert]) -> dict[tuple, Stored]:
    """The stored instances among `incoming`, by key, locked, reading only the columns ingest
    compares.

    The rows are locked as they are read, in id order, as incidents.repeats locks them: two
    deliveries of overlapping alerts then wait for each other instead of deadlocking, and the
    status compared is the one the UPDATE below will see.
    """
    if connection.vendor == "postgresql":
        rows = _locked_instances_postgresql(cluster.pk, incoming)
    else:
        rows = _locked_instances(cluster, incoming)
    wanted = {a.key for a in incoming}
    return {
        (fingerprint, starts_at): Stored(*rest)
        for fingerprint, starts_at, *rest in rows
        if (fingerprint, starts_at) in wanted
    }


def _locked_instances(cluster: Cluster, incoming: list[AlertmanagerAlert]) -> list[tuple]:
    """Through the ORM, for SQLite: one query on the unique index (cluster, fingerprint,
    starts_at), with one startsAt for all of them when they share it."""
    starts = {a.startsAt for a in incoming}
    same_start = {"starts_at": next(iter(starts))} if len(starts) == 1 else {}
    return list(
        Alert.objects.select_for_update()
        .filter(cluster=cluster, fingerprint__in={a.fingerprint for a in incoming}, **same_start)
        .order_by("pk")
        .values_list(
            "fingerprint",
            "starts_at",
            "pk",
            "incident_id",
            "status",
            "annotations",
            "generator_url",
        )
    )


# Each incoming instance looked up on the unique index, then the rows found locked one by one in
# id order. The shape fixes the plan (incidents/repeats.py says why): the ORM's `fingerprint IN
# (…)` left it to statistics, and before autovacuum had analyzed a growing table PostgreSQL
# scanned the cluster's whole range of the index and filtered the fingerprints (0.7 ms for
# 3,456 alerts, growing with the table).
_LOCKED_INSTANCES = """
WITH wanted AS (
    SELECT s.id FROM jsonb_to_recordset(%s::jsonb) AS i(fingerprint text, starts_at timestamptz)
    CROSS JOIN LATERAL (
        SELECT id FROM incidents_alert
        WHERE cluster_id = %s AND fingerprint = i.fingerprint AND starts_at = i.starts_at
        LIMIT 1
    ) s
)
SELECT a.fingerprint, a.starts_at, a.id, a.incident_id, a.status, a.annotations, a.generator_url
FROM (SELECT id FROM wanted ORDER BY id) w CROSS JOIN LATERAL (
    SELECT * FROM incidents_alert WHERE id = w.id FOR UPDATE
) a
"""


def _locked_instances_postgresql(cluster_id: int, incoming: list[AlertmanagerAlert]) -> list:
    with connection.cursor() as cursor:
        # One JSON document, not arrays: incidents.repeats._count_params says why.
        keys = [
            {"fingerprint": a.fingerprint, "starts_at": a.startsAt.isoformat()} for a in incoming
        ]
        cursor.execute(_LOCKED_INSTANCES, [bulk.json_text(keys), cluster_id])
        rows = cursor.fetchall()
    # jsonb as psycopg loads it (a dict), or as text where a loader keeps it so.
    return [
        (*row[:5], json.loads(row[5]) if isinstance(row[5], str) else row[5], row[6])
        for row in rows
    ]


def _update_existing(
    incoming: list[AlertmanagerAlert], existing: dict[tuple, Stored], now: datetime, events: list
) -> set[int]:
    """Re-notified instances: one UPDATE counts the notification for all of them (in the
    database, so concurrent deliveries cannot lose a count); resolutions and changed
    annotations are written besides, only for the rows they concern. Returns the incidents
    with an instance resolved here.

    Resolution is final for an instance: a late or repeated "firing" never un-resolves it, and
    the writes are conditional on the status read, so a delivery cannot overwrite what a
    concurrent one resolved with what it read before.
    """
    resolved: list[tuple[int, dict]] = []
    resolved_in: set[int] = set()
    refreshed: dict[str, list[tuple[int, dict]]] = {}
    for alert in incoming:
        row = existing.get(alert.key)
        if row is None:
            continue
        content = {"annotations": alert.annotations, "generator_url": alert.generatorURL}
        if row.status == Alert.Status.FIRING and alert.status == Alert.Status.RESOLVED:
            ends_at = alert.endsAt or now
            resolved.append(
                (row.pk, {"status": Alert.Status.RESOLVED, "ends_at": ends_at, **content})
            )
            resolved_in.add(row.incident_id)
            events.append(
                alert_event(
                    row.incident_id, alert, TimelineEvent.Kind.ALERT_RESOLVED, now, ends_at=ends_at
                )
            )
        elif row.status == alert.status and (
            row.annotations != alert.annotations or row.generator_url != alert.generatorURL
        ):
            refreshed.setdefault(row.status, []).append((row.pk, content))
    Alert.objects.filter(pk__in=[row.pk for row in existing.values()]).update(
        last_seen_at=now, notification_count=F("notification_count") + 1
    )
    _write(Alert.objects.filter(status=Alert.Status.FIRING), resolved)
    for status, rows in refreshed.items():
        _write(Alert.objects.filter(status=status), rows)
    return resolved_in


def _write(queryset, rows: list[tuple[int, dict]]) -> None:
    """Per-row values: one UPDATE per distinct set of values, or one bulk_update when many differ."""
    if not rows:
        return
    groups: dict[str, tuple[dict, list[int]]] = {}
    for pk, values in rows:
        key = repr(sorted(values.items()))
        groups.setdefault(key, (values, []))[1].append(pk)
    if len(groups) <= 3:
        for values, pks in groups.values():
            queryset.filter(pk__in=pks).update(**values)
        return
    fields = list(rows[0][1])
    queryset.bulk_update([Alert(pk=pk, **values) for pk, values in rows], fields)


def _incident_for(
    cluster: Cluster,
    notification: AlertmanagerNotification,
    new: list[AlertmanagerAlert],
    now: datetime,
    announced: list[TimelineEvent],
) -> tuple[Incident, str]:
    """The incident new instances join: the group's open one, a correlated one, or a new one.

    How: "joined" (an open incident, locked), "filed" (late resolutions into the group's closed
    incident, not locked), "reopened", "opened" or "recorded" (a new incident of resolutions
    only). Opening an incident appends its timeline line to `announced` (inserted with the
    alerts').
    """
    key_hash = group_hash(notification.groupKey)
    # Again, locked: one that a concurrent delivery opened since the caller looked.
    incident = _locked_group_incident(cluster.pk, key_hash)
    if incident:
        return incident, "joined"
    open_incidents = _open_incidents(cluster)
    correlation_key = _correlation_key(notification)
    if correlation_key:
        # Only correlation puts a group's alerts into another group's incident.
        incident = open_incidents.filter(alerts__group_hash=key_hash).order_by("-opened_at").first()
        if incident:
            return incident, "joined"
        incident = (
            open_incidents.filter(
                correlation_key=correlation_key, opened_at__gte=now - settings.VIGIL_GROUP_WINDOW
            )
            .order_by("-opened_at")
            .first()
        )
        if incident:
            return incident, "joined"

    any_firing = any(a.status == "firing" for a in new)
    latest = (
        Incident.objects.filter(cluster=cluster, group_hash=key_hash).order_by("-opened_at").first()
    )
    if latest and not any_firing:
        # Late resolutions for a group whose incident is already closed: file them there.
        return latest, "filed"
    recently_resolved = (
        latest and latest.resolved_at and now - latest.resolved_at <= settings.VIGIL_REOPEN_WINDOW
    )
    if recently_resolved and _reopen(latest, now):
        return latest, "reopened"
    return _open_incident(cluster, notification, new, correlation_key, now, any_firing, announced)


def _open_incidents(cluster: Cluster):
    """The cluster's open incidents, each row locked as it is read."""
    return (
        Incident.objects.select_for_update(of=("self",))
        .filter(cluster=cluster)
        .exclude(status=Incident.Status.RESOLVED)
    )


def _correlation_key(notification: AlertmanagerNotification) -> str:
    """`VIGIL_GROUP_BY` label values shared by the whole notification, or "" when any is missing."""
    if not settings.VIGIL_GROUP_BY:
        return ""
    values = []
    for label in settings.VIGIL_GROUP_BY:
        value = notification.commonLabels.get(label)
        if not value:
            return ""
        values.append(f"{label}={value}")
    return ",".join(values)[:500]


def _reopen(incident: Incident, now: datetime) -> bool:
    """Conditional update, so two workers cannot both reopen; False if another incident is open."""
    try:
        with transaction.atomic():
            reopened = Incident.objects.filter(
                pk=incident.pk, status=Incident.Status.RESOLVED
            ).update(
                status=Incident.Status.OPEN,
                resolved_at=None,
                updated_at=now,
                collection_requested_at=now,
                collection_started_at=None,
                collection_finished_at=None,
            )
    except IntegrityError:
        return False
    if not reopened:
        return False
    TimelineEvent.objects.create(
        incident=incident,
        at=now,
        kind=TimelineEvent.Kind.INCIDENT_REOPENED,
        actor=ACTOR,
        summary="Reopened: an alert of this group fired again",
    )
    incident.refresh_from_db()
    return True


def _open_incident(
    cluster: Cluster,
    notification: AlertmanagerNotification,
    new: list[AlertmanagerAlert],
    correlation_key: str,
    now: datetime,
    any_firing: bool,
    announced: list[TimelineEvent],
) -> tuple[Incident, str]:
    first = next((a for a in new if a.status == "firing"), new[0])
    labels = notification.commonLabels or first.labels
    worst, severity = severest(new)
    incident = Incident(
        cluster=cluster,
        title=_title(notification, first)[:500],
        severity=severity,
        severity_rank=worst,
        service=next((labels[k] for k in SERVICE_LABELS if labels.get(k)), "")[:200],
        namespace=labels.get("namespace", "")[:200],
        grouping_key=notification.groupKey,
        group_hash=group_hash(notification.groupKey),
        correlation_key=correlation_key,
        labels=dict(labels),
        opened_at=min(a.startsAt for a in new) if not any_firing else now,
        updated_at=now,
        collection_requested_at=now if any_firing else None,
    )
    if not any_firing:
        # Only resolutions of alerts never seen firing: keep the record, but nothing is open.
        incident.status = Incident.Status.RESOLVED
        incident.resolved_at = max((a.endsAt or now) for a in new)
    try:
        with transaction.atomic():
            incident.save()
    except IntegrityError:
        # A concurrent notification of the same group opened it first: join that one.
        return Incident.objects.select_for_update().filter(
            cluster=cluster, group_hash=incident.group_hash
        ).exclude(status=Incident.Status.RESOLVED).get(), "joined"
    announced.append(
        TimelineEvent(
            incident=incident,
            at=now,
            kind=TimelineEvent.Kind.INCIDENT_OPENED,
            actor=ACTOR,
            summary=f"Opened by {first.labels.get('alertname')}"[:SUMMARY_LIMIT],
            payload={"groupKey": notification.groupKey, "receiver": notification.receiver},
        )
    )
    return incident, "opened" if any_firing else "recorded"


def _title(notification: AlertmanagerNotification, first: AlertmanagerAlert) -> str:
    summary = notification.commonAnnotations.get("summary") or first.annotations.get("summary")
    if summary:
        return summary
    where = (
        first.labels.get("namespace") or first.labels.get("node") or first.labels.get("instance")
    )
    name = first.labels["alertname"]
    return f"{name} in {where}" if where else name


def _create_instances(
    cluster: Cluster,
    incident: Incident,
    notification: AlertmanagerNotification,
    new: list[AlertmanagerAlert],
    now: datetime,
    events: list,
) -> dict:
    """Insert the new instances; return the incident's counter and severity changes."""
    key_hash = group_hash(notification.groupKey)
    rows = [
        {
            "cluster_id": cluster.pk,
            "incident_id": incident.pk,
            "fingerprint": a.fingerprint,
            "starts_at": a.startsAt,
            "ends_at": a.endsAt if a.status == "resolved" else None,
            "status": a.status,
            "alertname": alertname(a),
            "labels": a.labels,
            "annotations": a.annotations,
            "generator_url": a.generatorURL,
            "group_hash": key_hash,
            "first_seen_at": now,
            "last_seen_at": now,
            "notification_count": 1,
        }
        for a in new
    ]
    bulk.insert_rows(Alert, rows)
    for alert, row in zip(new, rows, strict=True):
        kind = (
            TimelineEvent.Kind.ALERT_FIRING
            if row["status"] == "firing"
            else TimelineEvent.Kind.ALERT_RESOLVED
        )
        events.append(alert_event(incident.pk, alert, kind, now, ends_at=row["ends_at"]))
    worst, severity = severest(new)
    updates = {"alert_count": F("alert_count") + len(rows)}
    if worst > incident.severity_rank:
        updates.update(severity=severity, severity_rank=worst)
    return updates


def alertname(alert: AlertmanagerAlert) -> str:
    """The alert's name as its row and timeline line store it (Alert.alertname's max_length)."""
    return alert.labels["alertname"][:200]


def severest(alerts: list[AlertmanagerAlert]) -> tuple[int, str]:
    """The highest severity rank among `alerts`, and the first severity label that has it, as
    Incident.severity stores it ("" when none has one)."""
    top = max(alerts, key=lambda a: severity_rank(a.labels.get("severity", "")))
    severity = top.labels.get("severity", "")
    return severity_rank(severity), severity[:30]


def alert_event(
    incident_id: int,
    alert: AlertmanagerAlert,
    kind: str,
    now: datetime,
    *,
    ends_at: datetime | None,
) -> dict:
    """The timeline line of an instance that fired or resolved (`ends_at`: as stored), as
    bulk.insert_rows takes it."""
    verb = "firing" if kind == TimelineEvent.Kind.ALERT_FIRING else "resolved"
    at = alert.startsAt if verb == "firing" else (ends_at or now)
    labels = alert.labels
    where = ", ".join(
        f"{k}={labels[k]}" for k in ("namespace", "pod", "node", "instance") if labels.get(k)
    )
    return {
        "incident_id": incident_id,
        "at": at,
        "kind": kind,
        "actor": ACTOR,
        "summary": (f"{alertname(alert)} {verb}" + (f" ({where})" if where else ""))[
            :SUMMARY_LIMIT
        ],
        "payload": {
            "fingerprint": alert.fingerprint,
            "startsAt": alert.startsAt.isoformat(),
            "labels": labels,
        },
    }


def _roll_up(
    incident_ids: set[int],
    bumps: dict[int, dict],
    now: datetime,
    *,
    joined: set[int],
    locked: dict[int, Incident],
    changed: set[int],
    added_firing: dict[int, int],
) -> list[int]:
    """One update per incident: counters, severity, a re-collection request for the ones new
    alerts `joined`; auto-resolve when no alert is firing. Returns the incidents for which a
    debounced collection round is to be published (collectors.tasks.debounced_request).

    `locked`: incidents this transaction already holds the row lock of (read under it);
    `changed`: incidents with a stored alert resolved here, whose firing alerts are counted again
    (a resolved instance may belong to an incident this delivery locked only afterwards);
    `added_firing`: firing instances inserted here, added to the count read under the lock.
    Only ingest changes an alert's status or an incident's count, always under the incident's
    lock, so the count read under it is exact, and counting a big incident's alerts again on
    every notification that adds one (a storm) would cost a query growing with the incident.
    """
    if not incident_ids:
        return []
    from collectors.tasks import debounced_request

    # Count under the incidents' row locks (taken in pk order): a count read before waiting for
    # a concurrent delivery's lock would miss its alerts and overwrite its correct count. The
    # collection state is read under the same lock, so a request cannot race a round's finish.
    state = {
        pk: (
            incident.firing_count,
            incident.status,
            incident.collection_started_at,
            incident.collection_finished_at,
            incident.collection_requested_at,
        )
        for pk, incident in locked.items()
        if pk in incident_ids
    }
    to_lock = incident_ids - state.keys()
    if to_lock:
        for pk, *rest in (
            Incident.objects.select_for_update()
            .filter(pk__in=to_lock)
            .order_by("pk")
            .values_list(
                "pk",
                "firing_count",
                "status",
                "collection_started_at",
                "collection_finished_at",
                "collection_requested_at",
            )
        ):
            state[pk] = tuple(rest)
    firing = {
        pk: row[0] + added_firing.get(pk, 0) for pk, row in state.items() if pk not in changed
    }
    to_count = incident_ids - firing.keys()
    if to_count:
        firing.update(
            Alert.objects.filter(incident_id__in=to_count, status=Alert.Status.FIRING)
            .values_list("incident_id")
            .annotate(n=Count("id"))
        )
    recollect: list[int] = []
    resolved_ids: list[int] = []
    for incident_id in sorted(incident_ids):
        if incident_id not in state:
            continue
        _, status, *collection = state[incident_id]
        fields = dict(bumps.get(incident_id, {}))
        if incident_id in joined:
            requested, publish_round = debounced_request(*collection, now=now)
            fields.update(requested)
            if publish_round:
                recollect.append(incident_id)
        if (
            settings.VIGIL_AUTO_RESOLVE
            and not firing.get(incident_id)
            and status != Incident.Status.RESOLVED
        ):
            fields.update(status=Incident.Status.RESOLVED, resolved_at=now)
            resolved_ids.append(incident_id)
        Incident.objects.filter(pk=incident_id).update(
            firing_count=firing.get(incident_id, 0), updated_at=now, **fields
        )
    if resolved_ids:
        resolved_events = TimelineEvent.objects.bulk_create(
            TimelineEvent(
                incident_id=i,
                at=now,
                kind=TimelineEvent.Kind.INCIDENT_RESOLVED,
                actor=ACTOR,
                summary="Resolved: all of its alerts have resolved",
            )
            for i in resolved_ids
        )
        # bulk_create sends no post_save: announce the resolutions as a save would.
        for event in resolved_events:
            announce_timeline_event(TimelineEvent, event, created=True)
    return recollect


def _collect_evidence_task():
    """Imported late: collectors depend on incidents, not the other way round."""
    from collectors.tasks import collect_evidence

    return collect_evidence


def _publish_debounced_round(incident_id: int) -> None:
    """New alerts joined: collect again, debounced so a storm triggers one round, not thousands."""
    from collectors.tasks import publish_debounced_round

    publish_debounced_round(incident_id)
