"""State changes an engineer makes to an incident; each writes its timeline event in the same transaction."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Incident, TimelineEvent


class TransitionError(ValueError):
    """The incident is not in a state that allows this change (shown to the user as is)."""


# Which states each action may start from.
_ALLOWED_FROM = {
    "acknowledge": {Incident.Status.OPEN},
    "mitigate": {Incident.Status.OPEN, Incident.Status.ACKNOWLEDGED},
    "resolve": {Incident.Status.OPEN, Incident.Status.ACKNOWLEDGED, Incident.Status.MITIGATED},
    "reopen": {Incident.Status.RESOLVED, Incident.Status.MITIGATED},
}
_TARGET = {
    "acknowledge": (
        Incident.Status.ACKNOWLEDGED,
        "acknowledged_at",
        TimelineEvent.Kind.INCIDENT_ACKNOWLEDGED,
    ),
    "mitigate": (Incident.Status.MITIGATED, "mitigated_at", TimelineEvent.Kind.INCIDENT_MITIGATED),
    "resolve": (Incident.Status.RESOLVED, "resolved_at", TimelineEvent.Kind.INCIDENT_RESOLVED),
    "reopen": (Incident.Status.OPEN, None, TimelineEvent.Kind.INCIDENT_REOPENED),
}
ACTIONS = tuple(_TARGET)


def allowed_actions(incident: Incident) -> list[str]:
    return [name for name in ACTIONS if incident.status in _ALLOWED_FROM[name]]


def incident_transition(
    *, incident: Incident, action: str, by: str, note: str = ""
) -> TimelineEvent:
    """Move the incident if it is still in an allowed state (a conditional update: no lost race)."""
    if action not in _TARGET:
        raise TransitionError(f"Unknown action {action!r}.")
    status, stamp_field, kind = _TARGET[action]
    now = timezone.now()
    changes: dict = {"status": status, "updated_at": now}
    if stamp_field:
        changes[stamp_field] = now
    if action == "reopen":
        changes["resolved_at"] = None
    try:
        with transaction.atomic():
            moved = Incident.objects.filter(
                pk=incident.pk, status__in=_ALLOWED_FROM[action]
            ).update(**changes)
            if not moved:
                incident.refresh_from_db(fields=["status"])
                raise TransitionError(f"Cannot {action} an incident that is {incident.status}.")
            event = TimelineEvent.objects.create(
                incident=incident,
                at=now,
                kind=kind,
                actor=by,
                summary=f"{status.capitalize()} by {by}" + (f": {note}" if note else ""),
                payload={"note": note} if note else {},
            )
    except IntegrityError as exc:
        raise TransitionError(
            "Another incident of the same alert group is open; work on that one instead."
        ) from exc
    incident.refresh_from_db()
    return event


def incident_acknowledge(*, incident: Incident, by: str) -> TimelineEvent:
    return incident_transition(incident=incident, action="acknowledge", by=by)


def incident_resolve(*, incident: Incident, by: str, note: str = "") -> TimelineEvent:
    return incident_transition(incident=incident, action="resolve", by=by, note=note)


def incident_reopen(*, incident: Incident, by: str) -> TimelineEvent:
    return incident_transition(incident=incident, action="reopen", by=by)
