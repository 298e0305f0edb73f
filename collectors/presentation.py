"""Evidence arranged for the incident page: one panel per kind, sources that failed up front."""

from __future__ import annotations

from collections import defaultdict

from incidents.models import Incident

from .base import Scope
from .models import Evidence
from .registry import COLLECTORS

# Evidence kind -> the page panel it belongs to.
PANELS = {
    "metric": "metrics",
    "metric_error": "metrics",
    "pod_status": "pods",
    "rollout_history": "rollouts",
    "k8s_events": "events",
    "node_status": "nodes",
    "log_signatures": "logs",
    "gpu_health": "gpu",
    "deploys": "deploys",
    "collection_note": "notes",
}


def evidence_context(incident: Incident) -> dict:
    rows = list(Evidence.objects.filter(incident=incident).order_by("collector", "id"))
    panels: dict[str, list[Evidence]] = defaultdict(list)
    for row in rows:
        if row.status == Evidence.Status.OK and row.kind in PANELS:
            panels[PANELS[row.kind]].append(row)
    reported = {row.collector for row in rows}
    sources = [
        {
            "name": name,
            "failed": [
                r for r in rows if r.collector == name and r.status == Evidence.Status.FAILED
            ],
            "truncated": [r for r in rows if r.collector == name and r.kind == "truncation"],
            "items": sum(
                1
                for r in rows
                if r.collector == name and r.status == Evidence.Status.OK and r.kind in PANELS
            ),
            "pending": name not in reported,
        }
        for name in COLLECTORS
    ]
    collecting = bool(incident.collection_started_at and not incident.collection_finished_at)
    return {
        "incident": incident,
        "scope": Scope.from_json(incident.scope),
        "panels": dict(panels),
        "sources": sources,
        "collecting": collecting,
        "collection_pending": incident.collection_started_at is None and incident.is_open,
    }
