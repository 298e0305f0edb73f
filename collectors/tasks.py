"""Evidence collection for one incident: claim, resolve the scope, fan out, record the result.

`collect_evidence` claims the incident with a conditional update (a redelivered or duplicate task
finds nothing to claim), resolves which entities the incident is about, and fans the collectors
out in parallel as a chord; `finish_collection` runs when all are done — or when one was killed
at its hard limit — and says on the timeline what was collected and what failed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import chord, shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from incidents.models import Incident, TimelineEvent
from vigil.celery import publish, publish_on_commit

from .base import Scope
from .models import Evidence
from .registry import COLLECTORS
from .runner import build_context, run_collector, store_failure
from .signals import collection_finished

logger = logging.getLogger(__name__)
ACTOR = "vigil"


def request_collection(incident_id: int, *, debounce: bool) -> bool:
    """Ask for (re-)collection. Debounced requests publish at most once per debounce window."""
    now = timezone.now()
    incidents = Incident.objects.filter(pk=incident_id)
    if debounce:
        window = timedelta(seconds=settings.VIGIL_COLLECT_DEBOUNCE)
        incidents = incidents.filter(
            Q(collection_requested_at__isnull=True) | Q(collection_requested_at__lt=now - window)
        )
    if not incidents.update(collection_requested_at=now):
        # A round was requested moments ago: note this request too, so the round that is
        # running (or about to) is followed by one more when it finishes.
        Incident.objects.filter(pk=incident_id).update(collection_requested_at=now)
        return False
    countdown = settings.VIGIL_COLLECT_DEBOUNCE if debounce else 0
    publish_on_commit(collect_evidence, incident_id, countdown=countdown)
    return True


def _claim(incident_id: int) -> bool:
    """First collection, or a refresh requested after the last one started and finished."""
    now = timezone.now()
    first = Q(collection_started_at__isnull=True)
    refresh = Q(
        collection_finished_at__isnull=False, collection_requested_at__gt=F("collection_started_at")
    )
    return bool(
        Incident.objects.filter(pk=incident_id)
        .filter(first | refresh)
        .update(collection_started_at=now, collection_finished_at=None)
    )


def start_round(incident_id: int) -> Incident | None:
    """Claim a round, resolve the scope, clear the last round; None when there is nothing to claim."""
    if not _claim(incident_id):
        return None
    incident = Incident.objects.select_related("cluster").get(pk=incident_id)
    scope = _resolve_scope(incident)
    Incident.objects.filter(pk=incident_id).update(scope=scope.to_json())
    incident.scope = scope.to_json()
    # A new round replaces the previous round's evidence: the page shows one coherent snapshot.
    Evidence.objects.filter(incident_id=incident_id).delete()
    TimelineEvent.objects.create(
        incident=incident,
        kind=TimelineEvent.Kind.COLLECTION_STARTED,
        actor=ACTOR,
        summary=f"Evidence collection started ({', '.join(COLLECTORS)}) for {_scope_summary(scope)}",
        payload={"collectors": list(COLLECTORS), "scope": scope.to_json()},
    )
    return incident


def _unclaimed(incident_id: int) -> str:
    return (
        "already claimed"
        if Incident.objects.filter(pk=incident_id).exists()
        else "no such incident"
    )


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def collect_evidence(incident_id: int) -> str:
    """The collectors of a round in parallel (a chord), each under its own time limits."""
    if start_round(incident_id) is None:
        return _unclaimed(incident_id)
    header = [
        run_collector_task.si(incident_id, name).set(
            soft_time_limit=settings.VIGIL_COLLECTOR_SOFT_LIMIT,
            time_limit=settings.VIGIL_COLLECTOR_HARD_LIMIT,
        )
        for name in COLLECTORS
    ]
    finish = finish_collection.si(incident_id)
    chord(header)(finish.on_error(finish_collection.si(incident_id)))
    return "collecting"


def collect_now(incident_id: int) -> str:
    """One round in this process, one collector after the other: for the command line and tests."""
    incident = start_round(incident_id)
    if incident is None:
        return _unclaimed(incident_id)
    for name in COLLECTORS:
        run_collector(incident, name)
    return finish_collection.run(incident_id)


def _resolve_scope(incident: Incident) -> Scope:
    from .scope import resolve_scope

    ctx = build_context(incident)
    try:
        return resolve_scope(list(ctx.alerts), ctx.cluster, ctx.timeout)
    except Exception as exc:  # scope from labels only is still worth collecting for
        logger.exception("scope resolution failed for incident %s", incident.pk)
        return Scope(notes=[f"scope resolution failed: {type(exc).__name__}: {exc}"])


def _scope_summary(scope: Scope) -> str:
    entities = scope.entities()
    if not entities:
        return "the alerts' labels (no Kubernetes entities resolved)"
    shown = ", ".join(str(e) for e in entities[:4])
    return shown + (f" and {len(entities) - 4} more" if len(entities) > 4 else "")


@shared_task(acks_late=True)
def run_collector_task(incident_id: int, name: str) -> int:
    """Thin adapter: the runner stores evidence or the reason there is none."""
    incident = Incident.objects.select_related("cluster").get(pk=incident_id)
    return len(run_collector(incident, name))


@shared_task(acks_late=True)
def finish_collection(incident_id: int) -> str:
    """Record the outcome; collectors killed at the hard limit left no row, so say so for them."""
    incident = Incident.objects.get(pk=incident_id)
    if (
        incident.collection_finished_at
        and incident.collection_finished_at >= incident.collection_started_at
    ):
        return "already finished"
    reported = set(
        Evidence.objects.filter(incident_id=incident_id).values_list("collector", flat=True)
    )
    for name in COLLECTORS:
        if name not in reported:
            limit = settings.VIGIL_COLLECTOR_HARD_LIMIT
            store_failure(
                incident, name, f"killed: did not finish within its hard limit of {limit:g}s", 0.0
            )
    now = timezone.now()
    Incident.objects.filter(pk=incident_id).update(collection_finished_at=now)
    failed = list(
        Evidence.objects.filter(incident_id=incident_id, status=Evidence.Status.FAILED).values_list(
            "collector", "reason"
        )
    )
    ok = (
        Evidence.objects.filter(incident_id=incident_id, status=Evidence.Status.OK)
        .exclude(kind="empty")
        .count()
    )
    seconds = (
        (now - incident.collection_started_at).total_seconds()
        if incident.collection_started_at
        else None
    )
    summary = f"Evidence collected: {ok} item(s)"
    if failed:
        summary += "; failed: " + "; ".join(f"{name} ({reason[:80]})" for name, reason in failed)
    TimelineEvent.objects.create(
        incident=incident,
        at=now,
        kind=TimelineEvent.Kind.COLLECTION_FINISHED,
        actor=ACTOR,
        summary=summary[:500],
        payload={
            "items": ok,
            "failed": [{"collector": n, "reason": r} for n, r in failed],
            "seconds": seconds,
        },
    )
    collection_finished.send(sender=Incident, incident_id=incident_id)
    _collect_again_if_requested(incident_id)
    return "finished"


def _collect_again_if_requested(incident_id: int) -> None:
    """Alerts that joined (or a refresh pressed) during this round get a round of their own."""
    incident = Incident.objects.get(pk=incident_id)
    if (
        incident.collection_requested_at
        and incident.collection_requested_at > incident.collection_started_at
    ):
        publish(collect_evidence, incident_id, countdown=settings.VIGIL_COLLECT_DEBOUNCE)
