"""Evidence arranged for the incident page: one panel per kind, sources that failed up front."""

from __future__ import annotations

from collections import defaultdict

from django.template.loader import get_template

from incidents.fragments import FragmentCache, digest_key
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


# The panels' HTML by every value of the rows they show (incidents/fragments.py): the same
# evidence is shown by every view of the page until the next collection round replaces it.
_PANELS = FragmentCache(128)


def _row_key(row: Evidence) -> tuple:
    return (
        row.pk,
        row.incident_id,
        row.collector,
        row.kind,
        row.status,
        row.title,
        row.entity_kind,
        row.entity_namespace,
        row.entity_name,
        row.collected_at,
        digest_key(row.data),
    )


def panels_html(panels: dict[str, list[Evidence]]) -> str:
    key = tuple((name, tuple(_row_key(row) for row in rows)) for name, rows in panels.items())
    return _PANELS.get(
        key,
        lambda: get_template("partials/evidence_panels.html").render({"panels": dict(panels)}),
    )


def in_panel(row: Evidence) -> bool:
    return row.status == Evidence.Status.OK and row.kind in PANELS


def has_anchor(row: Evidence) -> bool:
    """Whether the page shows this row under `#evidence-<id>`: in a panel, or on its source's
    line (a failure, a truncation, "nothing relevant found"). The analysis links a citation
    only when this holds, and an LLM may cite any row, so every row a source stored has one."""
    return in_panel(row) or row.collector in COLLECTORS


def evidence_context(incident: Incident) -> dict:
    rows = list(Evidence.objects.filter(incident=incident).order_by("collector", "id"))
    panels: dict[str, list[Evidence]] = defaultdict(list)
    for row in rows:
        if in_panel(row):
            panels[PANELS[row.kind]].append(row)
    reported = {row.collector for row in rows}
    sources = [
        {
            "name": name,
            "failed": [
                r for r in rows if r.collector == name and r.status == Evidence.Status.FAILED
            ],
            # Shown on the source's line: truncations, "nothing relevant found".
            "notes": [
                r
                for r in rows
                if r.collector == name and r.status == Evidence.Status.OK and not in_panel(r)
            ],
            "items": sum(1 for r in rows if r.collector == name and in_panel(r)),
            "pending": name not in reported,
        }
        for name in COLLECTORS
    ]
    collecting = bool(incident.collection_started_at and not incident.collection_finished_at)
    return {
        "incident": incident,
        "scope": Scope.from_json(incident.scope),
        "panels": dict(panels),
        "panels_html": panels_html(panels),
        "sources": sources,
        "collecting": collecting,
        "collection_pending": incident.collection_started_at is None and incident.is_open,
        # For assistant.presentation.analysis_context, so the page reads the evidence once.
        "evidence_rows": rows,
    }
