"""Facts for the rules, read from the database in a few queries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from collectors.base import Entity, Scope
from collectors.models import Evidence
from collectors.runner import incident_alert_facts
from incidents.models import Incident

from .base import EvidenceItem, Facts


def facts_for(
    incident: Incident,
    *,
    alerts: Sequence | None = None,
    evidence_rows: Iterable[Evidence] | None = None,
) -> Facts:
    """What the rules read of an incident. A caller that has read some of it already passes it:
    `alerts` (what the rules read of each: labels, starts_at, ends_at), `evidence_rows` (the
    incident's Evidence rows, in any order)."""
    if alerts is None:
        alerts = list(incident_alert_facts(incident))
    if evidence_rows is None:
        evidence_rows = Evidence.objects.filter(incident=incident)
    return Facts(
        incident_id=incident.pk,
        opened_at=incident.opened_at,
        alerts=alerts,
        scope=Scope.from_json(incident.scope),
        evidence=evidence_items(sorted(evidence_rows, key=lambda row: row.pk)),
    )


def evidence_items(rows: Iterable[Evidence]) -> list[EvidenceItem]:
    """Stored evidence rows as the rules read them, in the order given."""
    return [
        EvidenceItem(
            id=row.pk,
            collector=row.collector,
            kind=row.kind,
            status=row.status,
            title=row.title,
            entity=Entity(row.entity_kind, row.entity_namespace or None, row.entity_name)
            if row.entity_kind
            else None,
            data=row.data,
        )
        for row in rows
    ]
