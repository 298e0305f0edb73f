"""Alertmanager notifications become alerts and incidents.

One notification is one transaction with a handful of queries whatever its size: existing
instances are read in one query, new ones bulk-inserted, changed ones bulk-updated, timeline
events bulk-inserted. Ingestion is idempotent per alert instance `(fingerprint, startsAt)`, so
Alertmanager's repeats, retries and reorderings (resolved before firing) change nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from vigil.celery import publish_on_commit

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


@dataclass
class IngestResult:
    incident_ids: set[int] = field(default_factory=set)
    opened: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)  # open incidents that new alerts joined
    alerts_created: int = 0
    alerts_updated: int = 0


def process_delivery(delivery: WebhookDelivery) -> IngestResult:
    """Ingest a stored delivery and record the outcome on it; the hook, sweep and replay all call this.

    A malformed body marks the delivery rejected and re-raises PayloadError. A database error
    propagates and leaves the delivery as it was, for the sweep to retry.
    """
    delivery.attempts += 1
    try:
        notification = parse_notification(bytes(delivery.body))
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
    *, cluster: Cluster, notification: AlertmanagerNotification
) -> IngestResult:
    """Upsert the notification's alert instances into incidents; call inside a transaction."""
    now = timezone.now()
    result = IngestResult()
    incoming = _dedupe(notification.alerts)
    if not incoming:
        return result
    existing = _existing_instances(cluster, incoming)
    new = [a for a in incoming if a.key not in existing]
    events: list[TimelineEvent] = []

    to_update = _apply_to_existing(incoming, existing, now, events)
    if to_update:
        Alert.objects.bulk_update(
            to_update,
            [
                "status",
                "ends_at",
                "annotations",
                "generator_url",
                "last_seen_at",
                "notification_count",
            ],
        )
        result.alerts_updated = len(to_update)
        result.incident_ids.update(a.incident_id for a in to_update)

    bumps: dict[int, dict] = {}
    if new:
        incident, how = _incident_for(cluster, notification, new, now)
        if how == "joined":
            # A concurrent delivery may have stored some of these while we waited for the lock.
            stored = _existing_instances(cluster, new)
            new = [a for a in new if a.key not in stored]
        if how in ("opened", "reopened"):
            result.opened.append(incident.pk)
        elif new and incident.status != Incident.Status.RESOLVED:
            result.joined.append(incident.pk)
        if new:
            bumps[incident.pk] = _create_instances(
                cluster, incident, notification, new, now, events
            )
            result.alerts_created = len(new)
        result.incident_ids.add(incident.pk)

    TimelineEvent.objects.bulk_create(events)
    _roll_up(result.incident_ids, bumps, now)
    for incident_id in result.opened:
        publish_on_commit(_collect_evidence_task(), incident_id)
    for incident_id in result.joined:
        _request_recollection(incident_id)
    return result


def _dedupe(alerts: list[AlertmanagerAlert]) -> list[AlertmanagerAlert]:
    """The last occurrence of an instance within one notification wins."""
    return list({a.key: a for a in alerts}.values())


def _existing_instances(cluster: Cluster, incoming: list[AlertmanagerAlert]) -> dict[tuple, Alert]:
    wanted = {a.key for a in incoming}
    rows = Alert.objects.filter(cluster=cluster, fingerprint__in={a.fingerprint for a in incoming})
    return {(r.fingerprint, r.starts_at): r for r in rows if (r.fingerprint, r.starts_at) in wanted}


def _apply_to_existing(
    incoming: list[AlertmanagerAlert], existing: dict[tuple, Alert], now: datetime, events: list
) -> list[Alert]:
    """Resolution is final for an instance: a late or repeated "firing" never un-resolves it."""
    changed = []
    for alert in incoming:
        row = existing.get(alert.key)
        if row is None:
            continue
        if row.status == Alert.Status.FIRING and alert.status == Alert.Status.RESOLVED:
            row.status = Alert.Status.RESOLVED
            row.ends_at = alert.endsAt or now
            events.append(
                _alert_event(row.incident_id, row, TimelineEvent.Kind.ALERT_RESOLVED, now)
            )
        if row.status == alert.status:
            row.annotations = alert.annotations
            row.generator_url = alert.generatorURL
        row.last_seen_at = now
        row.notification_count += 1
        changed.append(row)
    return changed


def _incident_for(
    cluster: Cluster,
    notification: AlertmanagerNotification,
    new: list[AlertmanagerAlert],
    now: datetime,
) -> tuple[Incident, str]:
    """The incident new instances join: the group's open one, a correlated one, or a new one."""
    key_hash = group_hash(notification.groupKey)
    # Locked: deliveries for one incident are ingested one after the other.
    open_incidents = (
        Incident.objects.select_for_update(of=("self",))
        .filter(cluster=cluster)
        .exclude(status=Incident.Status.RESOLVED)
    )
    incident = open_incidents.filter(group_hash=key_hash).first()
    if incident:
        return incident, "joined"
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
        return latest, "joined"
    recently_resolved = (
        latest and latest.resolved_at and now - latest.resolved_at <= settings.VIGIL_REOPEN_WINDOW
    )
    if recently_resolved and _reopen(latest, now):
        return latest, "reopened"
    return _open_incident(cluster, notification, new, correlation_key, now, any_firing)


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
) -> tuple[Incident, str]:
    first = next((a for a in new if a.status == "firing"), new[0])
    labels = notification.commonLabels or first.labels
    severest = max(new, key=lambda a: severity_rank(a.labels.get("severity", "")))
    incident = Incident(
        cluster=cluster,
        title=_title(notification, first)[:500],
        severity=severest.labels.get("severity", "")[:30],
        severity_rank=severity_rank(severest.labels.get("severity", "")),
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
    TimelineEvent.objects.create(
        incident=incident,
        at=now,
        kind=TimelineEvent.Kind.INCIDENT_OPENED,
        actor=ACTOR,
        summary=f"Opened by {first.labels.get('alertname')}",
        payload={"groupKey": notification.groupKey, "receiver": notification.receiver},
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
        Alert(
            cluster=cluster,
            incident=incident,
            fingerprint=a.fingerprint,
            starts_at=a.startsAt,
            ends_at=a.endsAt if a.status == "resolved" else None,
            status=a.status,
            alertname=a.labels["alertname"][:200],
            labels=a.labels,
            annotations=a.annotations,
            generator_url=a.generatorURL,
            group_hash=key_hash,
            first_seen_at=now,
            last_seen_at=now,
        )
        for a in new
    ]
    Alert.objects.bulk_create(rows)
    for row in rows:
        kind = (
            TimelineEvent.Kind.ALERT_FIRING
            if row.status == "firing"
            else TimelineEvent.Kind.ALERT_RESOLVED
        )
        events.append(_alert_event(incident.pk, row, kind, now))
    worst = max(severity_rank(a.labels.get("severity", "")) for a in new)
    updates = {"alert_count": F("alert_count") + len(rows)}
    if worst > incident.severity_rank:
        severest = max(new, key=lambda a: severity_rank(a.labels.get("severity", "")))
        updates.update(severity=severest.labels["severity"][:30], severity_rank=worst)
    return updates


def _alert_event(incident_id: int, alert: Alert, kind: str, now: datetime) -> TimelineEvent:
    verb = "firing" if kind == TimelineEvent.Kind.ALERT_FIRING else "resolved"
    at = alert.starts_at if verb == "firing" else (alert.ends_at or now)
    where = ", ".join(
        f"{k}={alert.labels[k]}"
        for k in ("namespace", "pod", "node", "instance")
        if alert.labels.get(k)
    )
    return TimelineEvent(
        incident_id=incident_id,
        at=at,
        kind=kind,
        actor=ACTOR,
        summary=f"{alert.alertname} {verb}" + (f" ({where})" if where else ""),
        payload={
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at.isoformat(),
            "labels": alert.labels,
        },
    )


def _roll_up(incident_ids: set[int], bumps: dict[int, dict], now: datetime) -> None:
    """One update per incident: counters, severity; auto-resolve when no alert is firing."""
    if not incident_ids:
        return
    # Count under the incidents' row locks (taken in pk order): a count read before waiting for
    # a concurrent delivery's lock would miss its alerts and overwrite its correct count.
    list(
        Incident.objects.select_for_update()
        .filter(pk__in=incident_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    firing = dict(
        Alert.objects.filter(incident_id__in=incident_ids, status=Alert.Status.FIRING)
        .values_list("incident_id")
        .annotate(n=Count("id"))
    )
    for incident_id in incident_ids:
        Incident.objects.filter(pk=incident_id).update(
            firing_count=firing.get(incident_id, 0), updated_at=now, **bumps.get(incident_id, {})
        )
    if not settings.VIGIL_AUTO_RESOLVE:
        return
    quiet = [i for i in incident_ids if not firing.get(i)]
    resolved_ids = list(
        Incident.objects.filter(pk__in=quiet)
        .exclude(status=Incident.Status.RESOLVED)
        .values_list("pk", flat=True)
    )
    if resolved_ids:
        Incident.objects.filter(pk__in=resolved_ids).update(
            status=Incident.Status.RESOLVED, resolved_at=now
        )
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


def _collect_evidence_task():
    """Imported late: collectors depend on incidents, not the other way round."""
    from collectors.tasks import collect_evidence

    return collect_evidence


def _request_recollection(incident_id: int) -> None:
    """New alerts joined: collect again, debounced so a storm triggers one round, not thousands."""
    from collectors.tasks import request_collection

    request_collection(incident_id, debounce=True)
