"""Evidence collection for one incident: claimed once, then every registered collector runs."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from incidents.models import Incident, TimelineEvent

from .registry import COLLECTORS

logger = logging.getLogger(__name__)
ACTOR = "vigil"


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def collect_evidence(incident_id: int) -> str:
    """Idempotent under redelivery: only the first run to claim the incident does the work."""
    now = timezone.now()
    claimed = Incident.objects.filter(pk=incident_id, collection_started_at__isnull=True).update(
        collection_started_at=now
    )
    if not claimed:
        return (
            "already claimed"
            if Incident.objects.filter(pk=incident_id).exists()
            else "no such incident"
        )
    incident = Incident.objects.get(pk=incident_id)
    names = [collector.NAME for collector in COLLECTORS]
    TimelineEvent.objects.create(
        incident=incident,
        at=now,
        kind=TimelineEvent.Kind.COLLECTION_STARTED,
        actor=ACTOR,
        summary="Evidence collection started" + (f" ({', '.join(names)})" if names else ""),
        payload={"collectors": names},
    )
    for collector in COLLECTORS:
        collector.collect(incident)
    finished = timezone.now()
    Incident.objects.filter(pk=incident_id).update(collection_finished_at=finished)
    TimelineEvent.objects.create(
        incident=incident,
        at=finished,
        kind=TimelineEvent.Kind.COLLECTION_FINISHED,
        actor=ACTOR,
        summary="Evidence collection finished" if names else "No collectors are configured yet",
        payload={"collectors": names, "seconds": round((finished - now).total_seconds(), 3)},
    )
    return "collected"
