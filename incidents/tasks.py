"""Celery tasks of the incidents app: thin adapters around services, and the beat sweep."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from vigil.celery import publish, reset_broker_backoff

from .alertmanager import PayloadError
from .ingest import process_delivery
from .models import Incident, WebhookDelivery

logger = logging.getLogger(__name__)
SWEEP_BATCH = 500


@shared_task(acks_late=True, max_retries=0)
def sweep() -> dict[str, int]:
    """The backstop for failed publishes and crashed workers: nothing stored is left behind."""
    reset_broker_backoff()
    deliveries = process_pending_deliveries()
    release_stuck_collections()
    collections = enqueue_missed_collections()
    if deliveries or collections:
        logger.info(
            "sweep: %s deliveries processed, %s collections enqueued", deliveries, collections
        )
    return {"deliveries": deliveries, "collections": collections}


def process_pending_deliveries(limit: int = SWEEP_BATCH) -> int:
    """Ingest deliveries stored but never processed (database trouble during the request)."""
    cutoff = timezone.now() - settings.VIGIL_SWEEP_GRACE
    pending = (
        WebhookDelivery.objects.select_related("integration__cluster")
        .filter(status=WebhookDelivery.Status.RECEIVED, received_at__lte=cutoff)
        .order_by("received_at")[:limit]
    )
    done = 0
    for delivery in pending:
        try:
            process_delivery(delivery)
        except PayloadError:
            pass  # marked rejected by process_delivery
        done += 1
    return done


def release_stuck_collections() -> int:
    """A round whose worker died mid-way never finishes: let the sweep start it again."""
    stuck_before = timezone.now() - settings.VIGIL_STUCK_COLLECTION_AFTER
    return (
        Incident.objects.exclude(status=Incident.Status.RESOLVED)
        .filter(collection_started_at__lt=stuck_before, collection_finished_at__isnull=True)
        .update(collection_started_at=None)
    )


def enqueue_missed_collections(limit: int = SWEEP_BATCH) -> int:
    """Open incidents whose collection never started, or was requested long ago and never began."""
    from collectors.tasks import collect_evidence

    now = timezone.now()
    stale = now - settings.VIGIL_SWEEP_GRACE
    missed = (
        Incident.objects.exclude(status=Incident.Status.RESOLVED)
        .filter(collection_started_at__isnull=True)
        .filter(Q(collection_requested_at__isnull=True) | Q(collection_requested_at__lte=stale))
        .values_list("pk", flat=True)[:limit]
    )
    count = 0
    for incident_id in list(missed):
        Incident.objects.filter(pk=incident_id).update(collection_requested_at=now)
        if publish(collect_evidence, incident_id):
            count += 1
    return count
