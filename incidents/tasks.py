"""Celery tasks of the incidents app: thin adapters around services, and the beat sweeps."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from vigil.celery import publish, reset_broker_backoff

from . import slack, slack_events
from .alertmanager import PayloadError
from .ingest import process_delivery
from .models import Incident, WebhookDelivery

logger = logging.getLogger(__name__)
SWEEP_BATCH = 500


# The sweeps are sent by beat, whose results nobody reads: ignore_result spares beat the result
# subscription that would make each send wait ~20s on a dead Redis (see vigil.celery.publish).
@shared_task(acks_late=True, max_retries=0, ignore_result=True)
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
    """Open incidents whose collection never started, or was requested long ago and never began:
    a first round, or a re-collection (alerts joined, refresh pressed) requested after the last
    round started whose debounced publish was lost (the broker was down)."""
    from collectors.tasks import collect_evidence

    now = timezone.now()
    stale = now - settings.VIGIL_SWEEP_GRACE
    never_started = Q(collection_started_at__isnull=True) & (
        Q(collection_requested_at__isnull=True) | Q(collection_requested_at__lte=stale)
    )
    # `collection_requested_at` is the first unserved request, and its debounced round is due
    # VIGIL_COLLECT_MAX_WAIT after it at the latest (collectors.tasks.debounce_wait): only one
    # older than that (and the grace) is missed rather than on its way.
    refresh_stale = stale - timedelta(seconds=settings.VIGIL_COLLECT_MAX_WAIT)
    refresh_missed = Q(
        collection_finished_at__isnull=False,
        collection_requested_at__gt=F("collection_started_at"),
        collection_requested_at__lte=refresh_stale,
    )
    missed = (
        Incident.objects.exclude(status=Incident.Status.RESOLVED)
        .filter(never_started | refresh_missed)
        .values_list("pk", flat=True)[:limit]
    )
    count = 0
    for incident_id in list(missed):
        Incident.objects.filter(pk=incident_id).update(collection_requested_at=now)
        if publish(collect_evidence, incident_id):
            count += 1
    return count


# --- Slack (incidents/slack.py, incidents/slack_events.py) ---------------------------------------
# The services say when to run again (SlackRetry: a rate limit's Retry-After, a backoff, or another
# task holding the incident's lease) and bound their own attempts, so a retry storm cannot start
# here; this cap only stops a task that keeps meeting a busy lease (the sweep takes over then).
SLACK_TASK_RETRIES = 50


@shared_task(
    bind=True, acks_late=True, max_retries=SLACK_TASK_RETRIES, soft_time_limit=150, time_limit=180
)
def slack_announce(self, event_id: int) -> str:
    """Announce a timeline event in Slack (and any earlier pending ones of its incident)."""
    try:
        return slack.announce(event_id, attempt=self.request.retries)
    except slack.SlackRetry as exc:
        if self.request.retries >= SLACK_TASK_RETRIES:
            logger.warning("slack_announce(%s) gives up for now: %s", event_id, exc.reason)
            return "later"
        raise self.retry(countdown=exc.countdown) from None


@shared_task(
    bind=True, acks_late=True, max_retries=SLACK_TASK_RETRIES, soft_time_limit=60, time_limit=90
)
def slack_unfurl(self, receipt_id: int) -> str:
    """Unfurl the Vigil links of one link_shared event."""
    try:
        return slack_events.unfurl(receipt_id, attempt=self.request.retries)
    except slack.SlackRetry as exc:
        if self.request.retries >= SLACK_TASK_RETRIES:
            return "later"
        raise self.retry(countdown=exc.countdown) from None


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def slack_sweep() -> dict[str, int]:
    """Announcements no signal enqueued (bulk-created events) or whose task was lost; unfurls
    too; and parents that no longer show their incident's counts or status."""
    reset_broker_backoff()
    announced = sum(publish(slack_announce, pk) for pk in slack.events_to_sweep())
    unfurled = sum(publish(slack_unfurl, pk) for pk in slack_events.receipts_to_sweep())
    refreshed = sum(publish(slack_refresh_parent, pk) for pk in slack.parents_to_refresh())
    return {"announcements": announced, "unfurls": unfurled, "parents": refreshed}


@shared_task(acks_late=True, max_retries=0, ignore_result=True, soft_time_limit=60, time_limit=90)
def slack_refresh_parent(thread_id: int) -> str:
    """Update one incident's Slack message to its current counts and status (the sweep's)."""
    return slack.refresh_parent(thread_id)
