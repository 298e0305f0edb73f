"""The rule contract: what a correlation rule reads and what it returns.

A rule is a module of `assistant/rules/` with `CATEGORY` (from TAXONOMY.md) and
`evaluate(facts: Facts) -> list[Candidate]`. It only reads: the Facts hold the incident's alerts,
scope and Evidence rows (with their ids, so every claim can cite them). Ranking across rules,
the `unknown` fallback and storing the Analysis are the engine's job (assistant/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.base import AlertFacts, Entity, Scope, symptom_start


@dataclass(frozen=True)
class EvidenceItem:
    """One stored Evidence row, as the rules see it."""

    id: int
    collector: str
    kind: str
    status: str
    title: str
    entity: Entity | None
    data: dict[str, Any]


def parse_time(value: object) -> datetime | None:
    """A time as the evidence holds it (RFC 3339, Unix seconds or a datetime), aware; None if absent."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def hhmm(moment: datetime | None) -> str:
    """A time the way an explanation names it: `15:57 UTC`."""
    return moment.astimezone(UTC).strftime("%H:%M UTC") if moment else "an unknown time"


# The rules see alerts exactly as the collectors do.
AlertItem = AlertFacts


@dataclass
class Facts:
    """Everything a rule may know about one incident, and helpers to query it."""

    incident_id: int
    opened_at: datetime
    alerts: list[AlertItem]
    scope: Scope
    evidence: list[EvidenceItem]

    def of_kind(self, kind: str) -> list[EvidenceItem]:
        return [e for e in self.evidence if e.kind == kind and e.status == "ok"]

    @property
    def first_alert_at(self) -> datetime:
        """When the symptom began (collectors.base.symptom_start over the firing alerts)."""
        firing = [a.starts_at for a in self.alerts if a.status == "firing"]
        return symptom_start(firing or [a.starts_at for a in self.alerts]) or self.opened_at

    def alert_namespaces(self) -> set[str]:
        return {a.labels["namespace"] for a in self.alerts if a.labels.get("namespace")}


@dataclass(frozen=True)
class Proposal:
    """A remediation from the catalogue (TAXONOMY.md actions) with a concrete target."""

    action: str
    target: Entity | None
    params: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""


@dataclass
class Candidate:
    """A root-cause hypothesis a rule supports, with the evidence it rests on."""

    category: str
    entity: Entity
    confidence: float  # 0..1, before ranking; rules calibrate against each other
    evidence_ids: list[int]
    explanation: str  # one paragraph, plain words, naming the entity and the times
    proposals: list[Proposal] = field(default_factory=list)
