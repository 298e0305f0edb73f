"""The latest analysis, shaped for the API (DESIGN.md) and the incident page."""

from __future__ import annotations

from incidents.models import Incident

from .models import ActionProposal, Analysis


def latest_analysis(incident: Incident) -> Analysis | None:
    return Analysis.objects.filter(incident=incident).first()


def action_json(action: ActionProposal) -> dict:
    return {
        "id": action.pk,
        "action": action.action,
        "target": action.target,
        "params": action.params,
        "status": action.status,
        "rationale": action.rationale,
    }


def analysis_json(incident: Incident) -> dict | None:
    analysis = latest_analysis(incident)
    if analysis is None:
        return None
    return {
        "id": analysis.pk,
        "status": analysis.status,
        "source": analysis.source,
        "summary": analysis.summary,
        "hypotheses": analysis.hypotheses,
        "actions": [action_json(a) for a in analysis.actions.all()],
    }


def analysis_expected(incident: Incident, analysis: Analysis | None) -> bool:
    """Whether a newer analysis is on its way: the page keeps polling until it is there."""
    if analysis is not None and analysis.status == Analysis.Status.PENDING:
        return True
    collecting = bool(incident.collection_started_at and not incident.collection_finished_at)
    if collecting:
        return True
    finished = incident.collection_finished_at
    if finished is None:
        return incident.is_open and analysis is None
    return analysis is None or analysis.created_at < finished


def analysis_context(incident: Incident) -> dict:
    from .facts import facts_for
    from .timeline import build_timeline

    analysis = latest_analysis(incident)
    return {
        "analysis": analysis,
        "analysis_expected": analysis_expected(incident, analysis),
        "story": build_timeline(facts_for(incident)) if analysis else [],
        "proposals": list(analysis.actions.all()) if analysis else [],
        "llm_configured": False,  # the LLM issue adds the narrative; until then the page says so
    }
