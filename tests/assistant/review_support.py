"""An incident with evidence and a ready analysis, made without the engine (for review tests)."""

from __future__ import annotations

from django.utils import timezone

from assistant.models import Analysis
from assistant.review import record_revision
from collectors.models import Evidence
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post


def make_incident(client, token: str) -> Incident:
    post(client, group(firing("KVCacheHigh", pod="p-1")), token)
    client.logout()
    incident = Incident.objects.get()
    Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="pod_status",
        title="pod p-1",
        entity_kind="Pod",
        entity_namespace="llm",
        entity_name="p-1",
        data={"phase": "Running"},
    )
    return incident


def make_analysis(incident: Incident, summary: str = "", **fields) -> Analysis:
    """A ready, rule-based analysis with its first summary version, as the engine stores one."""
    evidence = incident.evidence.order_by("id").first()
    summary = summary or (
        f"Most likely oom-killed of Deployment llm/chat-api (90%). See [#{evidence.pk}]."
    )
    hypotheses = [
        {
            "category": "oom-killed",
            "entity": {"kind": "Deployment", "namespace": "llm", "name": "chat-api"},
            "confidence": 0.9,
            "evidence": [evidence.pk],
            "explanation": "p-1 was OOMKilled (exit 137).",
        }
    ]
    analysis = Analysis.objects.create(
        incident=incident,
        status=Analysis.Status.READY,
        hypotheses=hypotheses,
        rules_hypotheses=hypotheses,
        rules_summary=summary,
        finished_at=timezone.now(),
        **fields,
    )
    record_revision(analysis, summary, "rules")
    return analysis
