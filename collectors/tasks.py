"""Evidence collection for one incident: claim, resolve the scope, fan out, record the result.

`collect_evidence` claims the incident with a conditional update (a redelivered or duplicate task
finds nothing to claim), resolves which entities the incident is about, and fans the collectors
out in parallel as a chord; `finish_collection` runs when all are done — or when one was killed
at its hard limit — and says on the timeline what was collected and what failed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import chord, shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Max, Q, Value, When
from django.utils import timezone

from incidents.models import Alert, Incident, TimelineEvent
from vigil.celery import RETRY_ON_DATABASE_ERRORS, publish, publish_on_commit

from .base import Scope
from .models import Evidence
from .registry import COLLECTORS
from .runner import build_context, run_collector, store_failure
from .signals import collection_finished

logger = logging.getLogger(__name__)
ACTOR = "vigil"


def request_collection(incident_id: int, *, debounce: bool) -> bool:
    """Ask for (re-)collection: at once (the refresh button), or debounced (alerts joined).

    `collection_requested_at` is the first request that no round has served yet: later requests
    leave it as it is, so it says how long the oldest one has waited. A debounced request
    publishes a round only when it is that first one and no round is running (a running round's
    finish_collection follows up itself); the round then waits until alerts have stopped
    joining for VIGIL_COLLECT_DEBOUNCE seconds, but never longer than VIGIL_COLLECT_MAX_WAIT
    after that first request (`debounce_wait`). A storm thus costs one round when it opens and
    one after it, and no request is left unserved. Ingest does the same under its own row lock
    (incidents.ingest._roll_up) instead of calling this.
    """
    now = timezone.now()
    if not debounce:
        # Keep the first unserved request's time, if any: a refresh must not postpone the deadline.
        pending = Q(collection_requested_at__gt=F("collection_started_at"))
        Incident.objects.filter(pk=incident_id).update(
            collection_requested_at=Case(
                When(pending, then=F("collection_requested_at")), default=Value(now)
            )
        )
        publish_on_commit(collect_evidence, incident_id)
        return True
    with transaction.atomic():
        row = (
            Incident.objects.select_for_update()
            .filter(pk=incident_id)
            .values_list(
                "collection_started_at", "collection_finished_at", "collection_requested_at"
            )
            .first()
        )
        if row is None:
            return False
        fields, publish_round = debounced_request(*row, now=now)
        if fields:
            Incident.objects.filter(pk=incident_id).update(**fields)
        if publish_round:
            publish_debounced_round(incident_id)
    return publish_round


def debounced_request(
    started_at: datetime | None,
    finished_at: datetime | None,
    requested_at: datetime | None,
    *,
    now: datetime,
) -> tuple[dict, bool]:
    """For alerts that joined an incident in this state: (fields to update, publish a round?).

    Nothing to do while the first round is still to come (it reads the alerts when it starts) or
    while an earlier request is pending (its round is scheduled, or the running round follows
    up). Otherwise this is the first unserved request: note it, and schedule a round unless one
    is running.
    """
    if started_at is None or (requested_at is not None and requested_at > started_at):
        return {}, False
    running = finished_at is None or finished_at < started_at
    return {"collection_requested_at": now}, not running


def publish_debounced_round(incident_id: int) -> None:
    """After the surrounding transaction: a round in VIGIL_COLLECT_DEBOUNCE seconds (or later)."""
    publish_on_commit(
        collect_evidence, incident_id, True, countdown=settings.VIGIL_COLLECT_DEBOUNCE
    )


def debounce_wait(incident_id: int) -> float | None:
    """Seconds until a debounced round is due; None when no request is pending.

    Due VIGIL_COLLECT_DEBOUNCE seconds after the last alert joined, and at the latest
    VIGIL_COLLECT_MAX_WAIT seconds after the first unserved request.
    """
    row = (
        Incident.objects.filter(pk=incident_id)
        .values_list("collection_requested_at", "collection_started_at")
        .first()
    )
    if row is None or row[0] is None or (row[1] is not None and row[0] <= row[1]):
        return None
    requested = row[0]
    last_join = Alert.objects.filter(incident_id=incident_id).aggregate(at=Max("first_seen_at"))[
        "at"
    ]
    quiet = max(last_join or requested, requested) + timedelta(
        seconds=settings.VIGIL_COLLECT_DEBOUNCE
    )
    due = min(quiet, requested + timedelta(seconds=settings.VIGIL_COLLECT_MAX_WAIT))
    return max(0.0, (due - timezone.now()).total_seconds())


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


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90, **RETRY_ON_DATABASE_ERRORS)
def collect_evidence(incident_id: int, debounced: bool = False) -> str:
    """The collectors of a round in parallel (a chord), each under its own time limits.

    A debounced round (alerts joined) that is not due yet puts itself off until it is (see
    debounce_wait); should that publish fail, it runs now rather than never.
    """
    if debounced:
        wait = debounce_wait(incident_id)
        if wait and wait > 0.5 and publish(collect_evidence, incident_id, True, countdown=wait):
            return "debounced"
    incident = start_round(incident_id)
    if incident is None:
        return _unclaimed(incident_id)
    # The round's tasks carry its start, so a redelivery that outlived its round (a worker
    # killed mid-round, the round restarted by the sweep) recognises it is stale.
    round_id = incident.collection_started_at.isoformat()
    header = [
        run_collector_task.si(incident_id, name, round_id).set(
            soft_time_limit=settings.VIGIL_COLLECTOR_SOFT_LIMIT,
            time_limit=settings.VIGIL_COLLECTOR_HARD_LIMIT,
        )
        for name in COLLECTORS
    ]
    finish = finish_collection.si(incident_id, round_id)
    chord(header)(finish.on_error(finish_collection.si(incident_id, round_id)))
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


def _in_round(incident: Incident, round_id: str | None) -> bool:
    """Whether `round_id` (None: a task published before rounds had ids) is the running round."""
    if round_id is None:
        return True
    started = incident.collection_started_at
    return bool(
        started and started.isoformat() == round_id and incident.collection_finished_at is None
    )


@shared_task(acks_late=True, **RETRY_ON_DATABASE_ERRORS)
def run_collector_task(incident_id: int, name: str, round_id: str | None = None) -> int:
    """Thin adapter: the runner stores evidence or the reason there is none — once per round.

    The task is delivered again when its worker dies (acks late); the redelivery must neither
    duplicate what the first delivery stored nor write into a round that is over or replaced.
    """
    incident = Incident.objects.select_related("cluster").get(pk=incident_id)
    if not _in_round(incident, round_id):
        return 0
    if Evidence.objects.filter(incident_id=incident_id, collector=name).exists():
        return 0  # stored by an earlier delivery of this task, killed before its ack
    rows = run_collector(incident, name)
    return _keep_first(incident_id, name, round_id, [row.pk for row in rows])


def _keep_first(incident_id: int, name: str, round_id: str | None, mine: list[int]) -> int:
    """Two deliveries that ran at once (or one that outlived its round) keep one set of rows:
    under the incident's row lock, the first to look keeps its rows, a later one drops its own."""
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident_id)
        others = Evidence.objects.filter(incident_id=incident_id, collector=name).exclude(
            pk__in=mine
        )
        if _in_round(incident, round_id) and not others.exists():
            return len(mine)
        Evidence.objects.filter(pk__in=mine).delete()
    logger.warning("dropped a duplicate %s round for incident %s", name, incident_id)
    return 0


@shared_task(acks_late=True, **RETRY_ON_DATABASE_ERRORS)
def finish_collection(incident_id: int, round_id: str | None = None) -> str:
    """Record the outcome; collectors killed at the hard limit left no row, so say so for them.

    One transaction: a worker killed half-way leaves nothing done, and the redelivered task does
    it all (an update already committed would read as "already finished" and skip the analysis).
    """
    with transaction.atomic():
        outcome = _finish_round(incident_id, round_id)
    if outcome == "finished":
        _collect_again_if_requested(incident_id)
    return outcome


def _finish_round(incident_id: int, round_id: str | None) -> str:
    incident = Incident.objects.select_for_update().get(pk=incident_id)
    if round_id is not None and not (
        incident.collection_started_at and incident.collection_started_at.isoformat() == round_id
    ):
        return "stale round"
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
    collection_finished.send(sender=Incident, incident_id=incident_id)  # publishes on commit
    return "finished"


def _collect_again_if_requested(incident_id: int) -> None:
    """Alerts that joined (or a refresh pressed) during this round get a round of their own."""
    wait = debounce_wait(incident_id)
    if wait is not None:
        publish(collect_evidence, incident_id, True, countdown=wait)
